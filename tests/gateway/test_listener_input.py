"""Strict SMTP input at the listener (issue 13.3), through a real socket.

Each probe of the issue: what is sent, and the reply at the command that carries the
fault (RFC 5321 §4.2, RFC 3463 codes, RFC 6531 §3.5); nothing bad reaches the queue.
"""

from __future__ import annotations

import pytest

from engine.gateway.queue import Queue
from tests.gateway.listener_kit import codes, running_listener, session

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n.\r\n"


def _queued(tmp_path) -> int:
    with Queue(tmp_path / "queue.sqlite") as q:
        return sum(q.counts().values())


async def test_nul_in_a_recipient_domain_is_refused_at_rcpt(tmp_path):
    # Before: 250, and the NUL reached the log and the next MX.
    async with running_listener(tmp_path) as (listener, _sink):
        c = await session(listener)
        assert (await c.cmd("MAIL FROM:<a@sender.example>")).startswith("250")
        reply = await c.cmd(b"RCPT TO:<c@exam\x00ple.com>")
        assert reply.startswith("553 5.1.3 ") and "U+0000" in reply
        assert (await c.cmd("DATA")).startswith("503")  # no recipient was taken
        await c.close()
    assert _queued(tmp_path) == 0


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:<a\x00b@sender.example>", "553 5.1.7 "),
        (b"MAIL FROM:<a@sender.example>\rRCPT TO:<x@y.example>", "501 5.5.2 "),
        (b"MAIL FROM:<a@sender.example> SIZE=1\x1b[2J", "501 5.5.2 "),
        (b"NOOP \x00", "501 5.5.2 "),
        (b"VRFY a\x07b", "501 5.5.2 "),
        (b"HELP \x7f", "501 5.5.2 "),
        (b"EHLO cl\x00ient", "501 5.5.2 "),
    ],
)
async def test_control_characters_are_refused_at_their_command(tmp_path, line, reply):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        got = await c.cmd(line)
        assert got.startswith(reply), got
        assert (await c.cmd("NOOP")).startswith("250")  # the session goes on
        await c.close()


async def test_an_unknown_verb_with_a_nul_is_not_echoed(tmp_path):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        got = await c.cmd(b"MA\x00IL FROM:<a@b.example>")
        assert got.startswith("500") and "\x00" not in got
        await c.close()


@pytest.mark.parametrize(
    "address",
    [
        "c@-bad-.example",
        "c@" + "a" * 64 + ".example",  # a label over 63 octets (RFC 1035 §2.3.4)
        "c@" + ".".join(["a" * 50] * 5) + ".example",  # a 260-character name
        "c@[not-an-ip]",
        "c@[IPv6:not:an:ip]",
        "c@bad_label.example",
        "c@exam..ple.com",
        "a..b@example.com",
        "x" * 65 + "@example.com",  # local part over 64 octets (RFC 5321 §4.5.3.1.1)
        "c@",
        "no-domain",
    ],
)
async def test_invalid_recipient_syntax_is_553_5_1_3_at_rcpt(tmp_path, address):
    # Before: 250, then the recipient sat in the queue as a DNS soft error.
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        got = await c.cmd(f"RCPT TO:<{address}>")
        assert got.startswith("553 5.1.3 "), got
        await c.close()


@pytest.mark.parametrize(
    "address",
    [
        "c@[127.0.0.1]",
        "c@[IPv6:::1]",
        "c@" + "a" * 63 + ".example",
        '"quoted local"@example.com',
        "first.last+tag@sub.example.com",
        "c@example.com",
    ],
)
async def test_valid_recipients_are_taken(tmp_path, address):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        got = await c.cmd(f"RCPT TO:<{address}>")
        assert got.startswith("250 2.1.5"), got
        await c.close()


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:<\xc3(@sender.example>", "553 5.1.7 "),  # invalid UTF-8, at MAIL
        (b"MAIL FROM:<a@sender.example> SMTPUTF8", "250"),
    ],
)
async def test_invalid_utf8_in_mail_is_refused_at_mail_not_after_the_body(tmp_path, line, reply):
    # Before: taken, then refused after the whole body with a 500 showing a Python exception.
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        got = await c.cmd(line)
        assert got.startswith(reply), got
        assert "Error" not in got and "Exception" not in got
        await c.close()


async def test_invalid_utf8_in_rcpt_is_refused_at_rcpt(tmp_path):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example> SMTPUTF8")
        got = await c.cmd(b"RCPT TO:<b\xff@example.com>")
        assert got.startswith("553 5.1.3 ") and "UTF-8" in got
        await c.close()


async def test_non_ascii_addresses_need_smtputf8(tmp_path):
    # Before: a non-ASCII MAIL FROM without the SMTPUTF8 parameter was taken.
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        assert (await c.cmd("MAIL FROM:<jösé@sender.example>")).startswith("553 5.6.7 ")
        assert (await c.cmd("MAIL FROM:<a@sender.example>")).startswith("250")
        assert (await c.cmd("RCPT TO:<bob@bücher.example>")).startswith("553 5.6.7 ")
        assert (await c.cmd("RSET")).startswith("250")
        assert (await c.cmd("MAIL FROM:<jösé@sender.example> SMTPUTF8")).startswith("250")
        assert (await c.cmd("RCPT TO:<bob@bücher.example>")).startswith("250")
        await c.close()


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("MAIL FROM:<a@sender.example> FOO=1", "555 5.5.4 "),
        ("MAIL FROM:<a@sender.example> SIZE=99999999999", "552 5.3.4 "),
        ("MAIL FROM:a@sender.example", "501 5.5.2 "),
        ("MAIL FROM:<a@sender.example>junk", "501 5.5.2 "),
        ("MAIL FROM:<>", "250"),
        ("MAIL FROM:<a@sender.example> BODY=8BITMIME SIZE=100", "250"),
    ],
)
async def test_mail_parameters_and_path_grammar(tmp_path, line, reply):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        got = await c.cmd(line)
        assert got.startswith(reply), got
        await c.close()


async def test_rcpt_parameters_are_555(tmp_path):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        assert (await c.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER")).startswith("555 5.5.4 ")
        await c.close()


async def test_recipients_past_the_limit_get_452_4_5_3(tmp_path):
    # Before: 5,000 recipients in one transaction were all accepted.
    async with running_listener(tmp_path, max_recipients=100) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        for i in range(100):
            assert (await c.cmd(f"RCPT TO:<r{i}@example.com>")).startswith("250")
        assert (await c.cmd("RCPT TO:<r100@example.com>")).startswith("452 4.5.3 ")
        assert (await c.send(b"DATA\r\n")).startswith("354")
        assert (await c.send(MESSAGE)).startswith("250")  # the first 100 go
        await c.close()
    assert _queued(tmp_path) == 100


async def test_a_bare_cr_in_the_body_refuses_the_message(tmp_path):
    # Before: the bare CR was passed byte for byte to the next MX.
    async with running_listener(tmp_path) as (listener, sink):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        await c.cmd("RCPT TO:<b@example.com>")
        assert (await c.cmd("DATA")).startswith("354")
        got = await c.send(b"Subject: x\r\n\r\nline\r.\rMAIL FROM:<evil@x.example>\r\n.\r\n")
        assert got.startswith("554 5.6.0 ") and "bare CR" in got
        assert (await c.cmd("NOOP")).startswith("250")
        await c.close()
    assert _queued(tmp_path) == 0
    assert "listener.data.refused" in codes(sink)


async def test_a_bare_lf_is_normalised_and_never_ends_the_data(tmp_path):
    # The December 2023 smuggling shape: <LF>.<CR><LF> followed by a second transaction.
    smuggled = (
        b"Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x.example>\r\n"
        b"RCPT TO:<victim@example.com>\r\nDATA\r\n\r\nforged\r\n.\r\n"
    )
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        await c.cmd("RCPT TO:<b@example.com>")
        await c.cmd("DATA")
        got = await c.send(smuggled)
        assert got.startswith("250 2.0.0 Ok: queued as MID 1")
        assert (await c.cmd("NOOP")).startswith("250")  # one reply: one message
        await c.close()
    with Queue(tmp_path / "queue.sqlite") as q:
        msg = q.message(1)
        assert msg is not None and q.message(2) is None
        assert b"\n" not in msg.data.replace(b"\r\n", b"")  # every LF is part of a CRLF
        assert msg.data.startswith(b"Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil")


async def test_a_long_line_refuses_the_message_and_its_tail_never_ends_the_data(tmp_path):
    async with running_listener(tmp_path) as (listener, _):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        await c.cmd("RCPT TO:<b@example.com>")
        await c.cmd("DATA")
        c.writer.write(b"x" * 2000 + b".\r\n")  # the tail after the limit is "."
        got = await c.send(b"more\r\n.\r\n")
        assert got.startswith("554 5.6.0 ") and "1000 octets" in got
        await c.close()
    assert _queued(tmp_path) == 0


class _BrokenQueue(Queue):
    def enqueue(self, *args, **kwargs):  # a bug below the listener
        raise RuntimeError("boom in the queue")


async def test_an_internal_error_is_451_without_the_exception_and_one_log_line(tmp_path):
    # Before: "500 Error: (UnicodeEncodeError) ..." showed the exception to the client.
    queue = _BrokenQueue(tmp_path / "queue.sqlite")
    async with running_listener(tmp_path, queue) as (listener, sink):
        c = await session(listener)
        await c.cmd("MAIL FROM:<a@sender.example>")
        await c.cmd("RCPT TO:<b@example.com>")
        await c.cmd("DATA")
        got = await c.send(MESSAGE)
        assert got == "451 4.3.0 Internal error; try again later"
        await c.close()
    errors = [e for e in sink.events if e.code == "listener.error"]
    assert len(errors) == 1 and "boom in the queue" in str(errors[0].fields["detail"])
