"""Transport faults of the fake MX: per SMTP stage, and per TLS handshake behaviour.

Each fault is met by a raw client over loopback that checks what arrives on the wire,
and the session record is checked for the fault it played. Handshake behaviours meet
the stdlib TLS client; each rejection is paired with a control that succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest
import trustme

from harness.world.mta.handshake import ALERTS, server_hello_flight
from harness.world.mta.script import POSITIVE_CODES, Fault, FaultKind
from harness.world.mta.server import (
    Disconnect,
    MxStartTls,
    ReceivingMta,
    Script,
    ScriptedReply,
    ServerCert,
    SessionEnd,
    parse_action,
)
from harness.world.mta.session import MALFORMED_LINE

MX = "mx1.example.com"
ADDR = "127.0.0.26"
QUIET = 0.2  # how long "no reply" is watched for: a bound, the stall never ends by itself
# The stages a raw client walks through, in order, with the line it sends at each.
WALK = (
    ("banner", None),
    ("ehlo", b"EHLO c.test"),
    ("starttls", b"STARTTLS"),
    ("mail", b"MAIL FROM:<a@sender.test>"),
    ("rcpt", b"RCPT TO:<r@example.com>"),
    ("data_start", b"DATA"),
    ("data", b"Subject: x\r\n\r\nbody\r\n."),
)


@pytest.fixture(scope="module")
def cert() -> ServerCert:
    leaf = trustme.CA().issue_cert(MX)
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    return ServerCert(chain, leaf.private_key_pem.bytes(), "mx1")


def unverified(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


async def reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (the last line), or b'' at EOF."""
    while (line := await reader.readline())[3:4] == b"-":
        pass
    return line


async def walk_to(
    stage: str, mx: ReceivingMta
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and go through every stage before ``stage``, then send its command."""
    reader, writer = await asyncio.open_connection(*mx.address)
    for name, line in WALK:
        if name == "starttls" and stage != "starttls":
            continue  # the session stays in clear text: the raw client speaks no TLS
        if line is not None:
            writer.write(line + b"\r\n")
        if name == stage:
            return reader, writer
        assert (await reply(reader))[:1] in (b"2", b"3"), f"stage {name} refused"
    raise AssertionError(f"no stage {stage!r}")


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):  # the server reset it first
        await writer.wait_closed()


def script_for(stage: str, action: Fault | ScriptedReply | Disconnect) -> Script:
    if stage == "rcpt":
        return Script(rcpt_by_index={0: action})
    return Script(**{stage: action})


STAGES = [name for name, _ in WALK]


# -- the vocabulary ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FaultKind))
def test_parse_action_reads_every_fault(kind: FaultKind) -> None:
    assert parse_action(f" {kind.value.upper()} ") == Fault(kind)


def test_parse_action_names_the_words_it_knows() -> None:
    with pytest.raises(ValueError, match="'multiline-broken' or '<code> <text>'"):
        parse_action("explode")


def test_a_scripted_starttls_reply_must_refuse() -> None:
    with pytest.raises(ValueError, match="must refuse"):
        Script(starttls=ScriptedReply(220, "go ahead"))
    assert Script(starttls=ScriptedReply(454, "4.7.0 later")).starttls == ScriptedReply(
        454, "4.7.0 later"
    )


# -- per SMTP stage ------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
async def test_reset_aborts_the_connection_at_each_stage(stage: str, cert: ServerCert) -> None:
    mx = ReceivingMta(ADDR, MX, cert=cert, script=script_for(stage, Fault(FaultKind.RESET)))
    async with mx:
        reader, writer = await walk_to(stage, mx)
        with pytest.raises(ConnectionResetError):
            await reader.read()
        await close(writer)
        await mx.settle()
    (session,) = mx.sessions
    assert session.ended is SessionEnd.SERVER_RESET
    assert session.faults == (f"{stage}: reset",)


@pytest.mark.parametrize("stage", STAGES)
async def test_stall_answers_nothing_until_the_client_leaves(stage: str, cert: ServerCert) -> None:
    mx = ReceivingMta(ADDR, MX, cert=cert, script=script_for(stage, Fault(FaultKind.STALL)))
    async with mx:
        reader, writer = await walk_to(stage, mx)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), QUIET)
        assert mx.live_sessions == 1  # held open, not closed
        await close(writer)
        await mx.settle()
    (session,) = mx.sessions
    assert session.ended is SessionEnd.CLIENT_DROP
    assert session.faults == (f"{stage}: stall",)


@pytest.mark.parametrize("stage", STAGES)
async def test_malformed_sends_a_line_without_a_code(stage: str, cert: ServerCert) -> None:
    mx = ReceivingMta(ADDR, MX, cert=cert, script=script_for(stage, Fault(FaultKind.MALFORMED)))
    async with mx:
        reader, writer = await walk_to(stage, mx)
        assert await reader.readline() == MALFORMED_LINE + b"\r\n"
        writer.write(b"QUIT\r\n")
        assert (await reply(reader)).startswith(b"221")  # the session goes on
        await close(writer)
        await mx.settle()
    (session,) = mx.sessions
    assert session.faults == (f"{stage}: malformed",)
    assert not mx.messages  # no stage is accepted by a malformed reply
    mx.check()


@pytest.mark.parametrize("stage", STAGES)
async def test_multiline_broken_changes_code_and_never_ends(stage: str, cert: ServerCert) -> None:
    action = Fault(FaultKind.MULTILINE_BROKEN)
    mx = ReceivingMta(ADDR, MX, cert=cert, script=script_for(stage, action))
    async with mx:
        reader, writer = await walk_to(stage, mx)
        first, second, rest = await reader.readline(), await reader.readline(), await reader.read()
        await close(writer)
        await mx.settle()
    code = str(POSITIVE_CODES[stage]).encode()
    assert first.startswith(code + b"-") and second[3:4] == b"-"
    assert second[:3] != code and rest == b""  # another code, then EOF: no last line
    (session,) = mx.sessions
    assert session.ended is SessionEnd.SERVER_DISCONNECT
    assert session.faults == (f"{stage}: multiline-broken",)


@pytest.mark.parametrize("code", [454, 554])
async def test_scripted_starttls_refusal_keeps_the_session_in_clear(
    code: int, cert: ServerCert
) -> None:
    script = Script(
        starttls=ScriptedReply(code, "5.7.0 no TLS today" if code > 499 else "4.7.0 later")
    )
    async with ReceivingMta(ADDR, MX, cert=cert, script=script) as mx:
        reader, writer = await walk_to("starttls", mx)
        assert (await reply(reader)).startswith(str(code).encode())
        for line in (b"MAIL FROM:<a@sender.test>", b"RCPT TO:<r@example.com>", b"DATA"):
            writer.write(line + b"\r\n")
            assert (await reply(reader))[:1] in (b"2", b"3")
        writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert (await reply(reader)).startswith(b"250")
        await close(writer)
        await mx.settle()
    (session,) = mx.sessions
    assert session.faults == (f"starttls: {code} {script.starttls.text}",)  # type: ignore[union-attr]
    assert session.in_clear and mx.messages[0].in_clear


async def test_a_well_mannered_session_records_no_fault(cert: ServerCert) -> None:
    async with ReceivingMta(ADDR, MX, cert=cert) as mx:
        reader, writer = await walk_to("data", mx)
        assert (await reply(reader)).startswith(b"250")
        await close(writer)
        await mx.settle()
    assert mx.sessions[0].faults == () and len(mx.messages) == 1


# -- per TLS handshake behaviour -----------------------------------------------------------


async def starttls(
    mx: ReceivingMta, ctx: ssl.SSLContext, timeout: float = 5.0
) -> asyncio.StreamWriter:
    reader, writer = await walk_to("starttls", mx)
    assert (await reply(reader)).startswith(b"220")
    await writer.start_tls(ctx, server_hostname=MX, ssl_handshake_timeout=timeout)
    return writer


BROKEN = [m for m in MxStartTls if m.breaks_handshake and m is not MxStartTls.BROKEN_STALL]


@pytest.mark.parametrize("mode", BROKEN, ids=str)
async def test_every_broken_mode_fails_a_real_client(mode: MxStartTls, cert: ServerCert) -> None:
    async with ReceivingMta(ADDR, MX, cert=cert, starttls=mode) as mx:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as failure:
            await starttls(mx, unverified())
        await mx.settle()
    (session,) = mx.sessions
    assert session.ended is SessionEnd.TLS_FAILED and not session.tls_completed
    assert session.faults == (f"handshake: {mode}",)
    if mode in ALERTS:  # the client read the alert we meant
        reason = {70: "PROTOCOL_VERSION", 40: "HANDSHAKE_FAILURE", 80: "INTERNAL_ERROR"}
        assert reason[ALERTS[mode]] in str(failure.value)


async def test_broken_reset_aborts_with_an_rst(cert: ServerCert) -> None:
    async with ReceivingMta(ADDR, MX, cert=cert, starttls=MxStartTls.BROKEN_RESET) as mx:
        with pytest.raises(ConnectionResetError):
            await starttls(mx, unverified())
        await mx.settle()
    assert mx.sessions[0].faults == ("handshake: broken-reset",)


async def test_broken_stall_is_ended_by_the_clients_handshake_timeout(cert: ServerCert) -> None:
    async with ReceivingMta(ADDR, MX, cert=cert, starttls=MxStartTls.BROKEN_STALL) as mx:
        with pytest.raises(ConnectionAbortedError, match="taking longer than"):
            await starttls(mx, unverified(), timeout=QUIET)
        await mx.settle()
    (session,) = mx.sessions
    assert session.faults == ("handshake: broken-stall",) and not session.tls_completed


@pytest.mark.parametrize("mode", list(ALERTS), ids=str)
async def test_alert_modes_send_one_real_alert_record(mode: MxStartTls, cert: ServerCert) -> None:
    async with ReceivingMta(ADDR, MX, cert=cert, starttls=mode) as mx:
        reader, writer = await walk_to("starttls", mx)
        assert (await reply(reader)).startswith(b"220")
        writer.write(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")  # a (tiny) handshake record
        record = await reader.read()
        await close(writer)
        await mx.settle()
    # RFC 8446 §5.1 / §6: content type 21, version, length 2, fatal (2), the description.
    assert record == bytes([21, 3, 3, 0, 2, 2, ALERTS[mode]])


async def test_no_shared_cipher_fails_and_a_null_cipher_client_gets_through(
    cert: ServerCert,
) -> None:
    async with ReceivingMta(ADDR, MX, cert=cert, starttls=MxStartTls.NO_SHARED_CIPHER) as mx:
        # asyncio's server side aborts the transport on a failed handshake, so the client
        # sees the handshake_failure alert or the reset that cuts it off.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await starttls(mx, unverified())
        # Control: a client that does offer NULL-encryption suites completes the handshake.
        control = unverified(maximum=ssl.TLSVersion.TLSv1_2)
        control.set_ciphers("eNULL:@SECLEVEL=0")
        writer = await starttls(mx, control)
        await close(writer)
        await mx.settle()
    failed, passed = mx.sessions
    assert failed.faults[0] == "handshake: no-shared-cipher"
    assert failed.faults[1].startswith("handshake: failed: ") and not failed.tls_completed
    assert passed.tls_completed and passed.tls_version == "TLSv1.2"


def client_hello() -> bytes:
    """A real ClientHello record from the stdlib client (memory BIOs, no socket)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = unverified().wrap_bio(incoming, outgoing, server_hostname=MX)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_server_hello_flight_answers_a_real_client_hello() -> None:
    hello = client_hello()
    flight = server_hello_flight(hello, b"not a cert")
    assert flight[0] == 22 and int.from_bytes(flight[3:5], "big") == len(flight) - 5
    body = flight[5:]
    assert body[0] == 2 and body[4:6] == b"\x03\x03"  # ServerHello, TLS 1.2
    sid_len = hello[43]
    assert body[38 : 39 + sid_len] == hello[43 : 44 + sid_len]  # the session id, echoed
    suite = int.from_bytes(body[39 + sid_len : 41 + sid_len], "big")
    assert suite >> 8 != 0x13  # a TLS 1.2 suite, not a TLS 1.3 one
    assert b"not a cert" in body and body.endswith(b"\x0e\x00\x00\x00")  # ServerHelloDone


def test_server_hello_flight_refuses_what_is_no_client_hello() -> None:
    with pytest.raises(ValueError, match="not a ClientHello"):
        server_hello_flight(b"\x15\x03\x03\x00\x02\x02\x28")
