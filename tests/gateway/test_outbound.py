"""Outbound SMTP as other software reads it: 8BITMIME, SMTPUTF8 and the DSNs they cause.

Every test injects over SMTP into a real gateway and delivers to :class:`ExtMx`, an
MX at ``slow.example`` whose EHLO keywords and RCPT replies the test chooses.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib

from engine.gateway.gateway import Gateway
from tests.gateway.conftest import make_gateway, texts, write_config
from tests.gateway.extmx import ExtMx
from tests.gateway.sim import Sim, SimWorld

EIGHT_BIT = (
    "From: alice@sender.example\r\nTo: a@slow.example\r\nSubject: hi\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
).encode()
SEVEN_BIT = b"From: alice@sender.example\r\nTo: a@slow.example\r\nSubject: hi\r\n\r\nhello\r\n"
UTF8_HEADER = (
    "From: alice@sender.example\r\nTo: a@slow.example\r\nSubject: Grüße\r\n\r\nhello\r\n"
).encode()


@asynccontextmanager
async def ext_world(
    tmp_path: Path,
    keywords: tuple[str, ...] = ("8BITMIME",),
    replies: dict[str, str] | None = None,
    extra: str = "",
) -> AsyncIterator[tuple[Sim, ExtMx, Gateway, object]]:
    async with SimWorld(tmp_path, slow=True) as sim:
        assert sim.slow is not None
        async with ExtMx(sim.slow.address, keywords, dict(replies or {})) as mx:
            # slow.example's MX now reaches this MX instead of the hanging one.
            sim.endpoints[(sim.slow.address, 25)] = (sim.slow.address, mx.port)
            gw, sink = make_gateway(sim, write_config(sim, tmp_path, extra))
            async with gw:
                yield sim, mx, gw, sink


async def send(
    gw: Gateway, mail_from: str, rcpts: list[str], data: bytes, *, utf8: bool = False
) -> None:
    assert gw.listener is not None
    host, port = gw.listener.address
    options = ["SMTPUTF8"] if utf8 else []
    if not data.isascii():
        options.append("BODY=8BITMIME")
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=5.0) as client:
        errors, _reply = await client.sendmail(mail_from, rcpts, data, mail_options=options)
        assert not errors


async def dsns(sim: Sim) -> list[email.message.Message]:
    await sim.sender_mx.settle()
    return [
        email.message_from_bytes(m.data, policy=email.policy.compat32)
        for m in sim.sender_mx.messages
        if b"report-type=delivery-status" in m.data
    ]


def status_blocks(dsn: email.message.Message) -> list[email.message.Message]:
    part = dsn.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    return part.get_payload()


# -- RFC 6152: 8BITMIME ---------------------------------------------------------------


async def test_8bit_message_goes_out_with_body_8bitmime_when_offered(tmp_path):
    async with ext_world(tmp_path) as (_sim, mx, gw, _sink):
        await send(gw, "alice@sender.example", ["a@slow.example"], EIGHT_BIT)
        await gw.run_due()
    [mail] = mx.mail_lines
    assert mail == "MAIL FROM:<alice@sender.example> BODY=8BITMIME"  # RFC 6152 §2
    assert mx.messages == [EIGHT_BIT]  # byte for byte, nothing converted


async def test_7bit_message_goes_out_without_a_body_parameter(tmp_path):
    async with ext_world(tmp_path, keywords=("8BITMIME", "SMTPUTF8")) as (_sim, mx, gw, _s):
        await send(gw, "alice@sender.example", ["a@slow.example"], SEVEN_BIT)
        await gw.run_due()
    assert mx.mail_lines == ["MAIL FROM:<alice@sender.example>"]


async def test_8bit_message_is_bounced_5_6_3_by_a_server_without_8bitmime(tmp_path):
    # RFC 6152 §3: never 8-bit data to a server that did not offer 8BITMIME; we do not
    # convert (it would break DKIM), so the message comes back with 5.6.3.
    async with ext_world(tmp_path, keywords=()) as (sim, mx, gw, sink):
        await send(gw, "alice@sender.example", ["a@slow.example"], EIGHT_BIT)
        await gw.run_due()
        [dsn] = await dsns(sim)
    assert mx.mail_lines == [] and mx.messages == []
    bounced = [t for t in texts(sink) if t.startswith("Bounced:")]
    assert len(bounced) == 1 and "RID 0 - 5.6.3 - 8-bit message" in bounced[0]
    [block] = status_blocks(dsn)[1:]
    assert block["Status"] == "5.6.3"
    assert block["Diagnostic-Code"].startswith("X-Engine; 5.6.3 8-bit message")
    assert any("not sent on DCID" in t and "8BITMIME" in t for t in texts(sink))


# -- RFC 6531: SMTPUTF8 ---------------------------------------------------------------


async def test_utf8_address_goes_out_with_smtputf8_when_offered(tmp_path):
    keywords = ("8BITMIME", "SMTPUTF8")
    async with ext_world(tmp_path, keywords=keywords) as (_sim, mx, gw, _sink):
        await send(gw, "alice@sender.example", ["jörg@slow.example"], SEVEN_BIT, utf8=True)
        await gw.run_due()
    assert mx.mail_lines == ["MAIL FROM:<alice@sender.example> SMTPUTF8"]
    assert mx.rcpt_lines == ["RCPT TO:<jörg@slow.example>"]
    assert len(mx.messages) == 1


async def test_utf8_header_goes_out_with_smtputf8_and_8bitmime(tmp_path):
    keywords = ("8BITMIME", "SMTPUTF8")
    async with ext_world(tmp_path, keywords=keywords) as (_sim, mx, gw, _sink):
        await send(gw, "alice@sender.example", ["a@slow.example"], UTF8_HEADER, utf8=True)
        await gw.run_due()
    assert mx.mail_lines == ["MAIL FROM:<alice@sender.example> BODY=8BITMIME SMTPUTF8"]


async def test_utf8_address_is_bounced_5_6_7_by_a_server_without_smtputf8(tmp_path):
    # RFC 6531 §3.2: an internationalised message never goes to a server without
    # SMTPUTF8; a relay returns it (X.6.7: non-ASCII addresses not permitted).
    async with ext_world(tmp_path) as (sim, mx, gw, _sink):
        await send(gw, "alice@sender.example", ["jörg@slow.example"], SEVEN_BIT, utf8=True)
        await gw.run_due()
        [dsn] = await dsns(sim)
    assert mx.mail_lines == []
    [block] = status_blocks(dsn)[1:]
    assert block["Status"] == "5.6.7"
    # RFC 6533 §3: the UTF-8 address in ASCII form inside message/delivery-status.
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}rg@slow.example"


async def test_utf8_header_is_bounced_5_6_9_by_a_server_without_smtputf8(tmp_path):
    async with ext_world(tmp_path) as (sim, mx, gw, _sink):
        await send(gw, "alice@sender.example", ["a@slow.example"], UTF8_HEADER, utf8=True)
        await gw.run_due()
        [dsn] = await dsns(sim)
    assert mx.mail_lines == []
    assert status_blocks(dsn)[1]["Status"] == "5.6.9"


# -- DSNs: one per message and round; Last-Attempt-Date -------------------------------


async def test_recipients_of_one_message_bouncing_in_two_domains_get_one_dsn(tmp_path):
    # a@slow.example is refused at RCPT (550); x@nx.example does not exist (NXDOMAIN).
    # Both bounce in the same round: one DSN with two recipient blocks, not two DSNs.
    replies = {"a@slow.example": "550 5.1.1 no such user"}
    async with ext_world(tmp_path, replies=replies) as (sim, _mx, gw, sink):
        await send(gw, "alice@sender.example", ["a@slow.example", "x@nx.example"], SEVEN_BIT)
        stats = await gw.run_once()
        await gw.run_due()
        found = await dsns(sim)
    assert stats.bounced == 2
    assert len(found) == 1
    _per_message, *blocks = status_blocks(found[0])
    by_rcpt = {b["Final-Recipient"]: b for b in blocks}
    assert set(by_rcpt) == {"rfc822; a@slow.example", "rfc822; x@nx.example"}
    assert by_rcpt["rfc822; a@slow.example"]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert by_rcpt["rfc822; x@nx.example"]["Diagnostic-Code"].startswith("X-Engine; ")
    assert [t for t in texts(sink) if "DSN (failed) generated for MID 1" in t] != []
    assert sum("DSN (failed) generated" in t for t in texts(sink)) == 1
    assert "Message finished MID 1 done" in texts(sink)


async def test_expiry_without_a_new_attempt_leaves_last_attempt_date_out(tmp_path):
    # RFC 3464 §2.3.7: the date of the last attempt made. Two attempts, then the gateway
    # is down past the time in queue: the bounce at expiry is no attempt, so the field
    # (whose value is not stored) is left out rather than showing the expiry time.
    extra = (
        '[destination_controls."slow.example"]\nbounce_profile = "short"\n'
        "[bounce_profiles.short]\nmax_queue_seconds = 300\n"
    )
    replies = {"a@slow.example": "451 4.3.2 try again later"}
    async with ext_world(tmp_path, replies=replies, extra=extra) as (sim, _mx, gw, _sink):
        await send(gw, "alice@sender.example", ["a@slow.example"], SEVEN_BIT)
        assert (await gw.run_once()).deferred == 1
        sim.clock.advance(60)
        assert (await gw.run_once()).deferred == 1
        sim.clock.advance(3600)
        assert (await gw.run_once()).bounced == 1
        await gw.run_due()
        [dsn] = await dsns(sim)
    [block] = status_blocks(dsn)[1:]
    assert block["Status"] == "5.4.7"
    assert "Last-Attempt-Date" not in block
    assert dsn["Date"].endswith("+0000") and dsn["Message-ID"]
