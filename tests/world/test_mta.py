"""ReceivingMta against real standard clients (smtplib in a thread, aiosmtplib) over loopback."""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
import warnings
from collections.abc import Sequence

import aiosmtplib
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from harness.world.mta import server as mta_module
from harness.world.mta.log import SessionConfig, SessionLog
from harness.world.mta.server import (
    HELO_ONLY,
    Disconnect,
    MxStartTls,
    ReceivingMta,
    Script,
    ScriptedReply,
    ServerCert,
    SessionEnd,
    parse_action,
)

MX = "mx1.example.com"
ADDR = "127.0.0.25"
TIMEOUT = 5.0  # client timeout: a bound on failure, never waited out on success
MESSAGE = b"From: a@sender.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"
TLS_FAILURES = (aiosmtplib.SMTPException, ssl.SSLError, ConnectionError, OSError)


def issue(ca: trustme.CA, *names: str, label: str | None = None) -> ServerCert:
    leaf = ca.issue_cert(*names)
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    return ServerCert(chain, leaf.private_key_pem.bytes(), label)


def der(cert: ServerCert) -> bytes:
    return x509.load_pem_x509_certificate(cert.chain_pem).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def mx_cert(ca: trustme.CA) -> ServerCert:
    return issue(ca, MX, label="mx1-trusted")


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


def unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def legacy_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = unverified()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    return ctx


def deliver(
    address: tuple[str, int],
    rcpts: Sequence[str] = ("rcpt@example.com",),
    *,
    transactions: int = 1,
) -> list[dict[str, tuple[int, bytes]]]:
    """smtplib, blocking: one plain session with `transactions` messages, then QUIT."""
    with smtplib.SMTP(timeout=TIMEOUT, local_hostname="client.test") as client:
        client.connect(*address)
        return [client.sendmail("a@sender.test", list(rcpts), MESSAGE) for _ in range(transactions)]


async def esmtp(mx: ReceivingMta, **kwargs: object) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname=mx.address[0],
        port=mx.address[1],
        timeout=TIMEOUT,
        start_tls=False,
        local_hostname="client.test",
        **kwargs,  # type: ignore[arg-type]
    )
    await client.connect()
    return client


async def tls_session(
    mx: ReceivingMta, ctx: ssl.SSLContext, sni: str | None = MX
) -> tuple[aiosmtplib.SMTP, ssl.SSLObject]:
    client = await esmtp(mx)
    await client.ehlo()
    await client.starttls(server_hostname=sni, tls_context=ctx)
    assert client.transport is not None
    return client, client.transport.get_extra_info("ssl_object")


def only_session(mx: ReceivingMta) -> mta_module.MtaSession:
    (session,) = mx.sessions
    return session


# -- plain delivery, in_clear ---------------------------------------------------------


async def test_plain_delivery_records_session_and_mailbox() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT) as mx:
        refused = await asyncio.to_thread(deliver, mx.address, ["x@example.com", "y@example.com"])
        await mx.settle()
    assert refused == [{}]
    session = only_session(mx)
    assert session.client[0] == "127.0.0.1" and session.mx_host == MX
    assert (session.helo_verb, session.helo_name) == ("EHLO", "client.test")
    assert session.commands == ("EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT")
    assert session.in_clear and not session.starttls_offered and not session.tls_completed
    assert session.ended is SessionEnd.QUIT and session.protocol_errors == ()
    (txn,) = session.transactions
    assert txn.mail_from == "a@sender.test" and txn.delivered and not txn.over_tls
    assert [(r.address, r.accepted) for r in txn.rcpts] == [
        ("x@example.com", True),
        ("y@example.com", True),
    ]
    (message,) = mx.messages
    assert message.rcpt_to == ("x@example.com", "y@example.com")
    assert message.data == MESSAGE  # smtplib dot-stuffed ".leading"; the MTA unstuffed it
    assert message.in_clear
    mx.check()


async def test_connection_reuse_records_each_transaction() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT) as mx:
        await asyncio.to_thread(deliver, mx.address, transactions=2)
        await mx.settle()
    assert len(only_session(mx).transactions) == 2
    assert [m.session_id for m in mx.messages] == [1, 1]


async def test_in_clear_set_by_mail_before_starttls(ca: trustme.CA, mx_cert: ServerCert) -> None:
    async with ReceivingMta(ADDR, MX, cert=mx_cert) as mx:
        client = await esmtp(mx)
        await client.ehlo()
        await client.mail("a@sender.test")
        await client.rset()
        await client.starttls(server_hostname=MX, tls_context=trusting(ca))
        await client.sendmail("a@sender.test", ["r@example.com"], MESSAGE)
        await client.quit()
        await mx.settle()
    session = only_session(mx)
    assert session.in_clear and session.tls_completed
    assert [t.over_tls for t in session.transactions] == [False, True]
    assert not mx.messages[0].in_clear


# -- STARTTLS offered -----------------------------------------------------------------


async def test_starttls_records_sni_version_cipher_and_cert(
    ca: trustme.CA, mx_cert: ServerCert
) -> None:
    async with ReceivingMta(ADDR, MX, cert=mx_cert) as mx:
        client, sslobj = await tls_session(mx, trusting(ca))
        version, cipher = sslobj.version(), sslobj.cipher()
        await client.sendmail("a@sender.test", ["r@example.com"], MESSAGE)
        await client.quit()
        await mx.settle()
    session = only_session(mx)
    assert session.starttls_offered and session.starttls_attempted and session.tls_completed
    assert cipher is not None and session.cipher == cipher[0]
    assert session.tls_version == version and version in {"TLSv1.2", "TLSv1.3"}
    assert (session.sni, session.cert_served) == (MX, "mx1-trusted")
    assert session.commands == ("EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "DATA", "QUIT")
    assert not session.in_clear and session.ended is SessionEnd.QUIT
    assert mx.messages[0].tls_version == session.tls_version
    mx.check()


async def test_cert_label_defaults_to_san(ca: trustme.CA) -> None:
    async with ReceivingMta(ADDR, MX, cert=issue(ca, MX, "mx2.example.com")) as mx:
        client, _ = await tls_session(mx, trusting(ca))
        await client.quit()
        await mx.settle()
    assert only_session(mx).cert_served == "SAN:mx1.example.com,mx2.example.com"


# -- SNI selection (CERT-10, DANE-33) ---------------------------------------------------


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def sni_mx(mx_cert: ServerCert, other_ca: trustme.CA) -> ReceivingMta:
    default = issue(other_ca, "default.invalid", label="untrusted-default")
    return ReceivingMta(ADDR, MX, cert=default, sni_certs={MX: mx_cert})


async def test_sni_selects_certificate_that_verifies(sni_mx: ReceivingMta, ca: trustme.CA) -> None:
    async with sni_mx as mx:
        client, _ = await tls_session(mx, trusting(ca), sni=MX)
        await client.quit()
        await mx.settle()
    assert (only_session(mx).sni, only_session(mx).cert_served) == (MX, "mx1-trusted")


async def test_no_sni_gets_default_certificate(sni_mx: ReceivingMta, other_ca: trustme.CA) -> None:
    async with sni_mx as mx:
        client, sslobj = await tls_session(mx, unverified(), sni=None)  # an IP: no SNI sent
        peer = sslobj.getpeercert(binary_form=True)
        await client.quit()
        await mx.settle()
    assert peer is not None
    session = only_session(mx)
    assert (session.sni, session.cert_served) == (None, "untrusted-default")
    assert (
        x509.load_der_x509_certificate(peer).issuer
        == x509.load_pem_x509_certificate(other_ca.cert_pem.bytes()).subject
    )


@pytest.mark.parametrize(
    ("sni", "trust", "served"),
    [
        (MX, "other", "mx1-trusted"),  # right cert, client trusts another CA
        ("mx2.example.com", "ca", "untrusted-default"),  # unknown name: the default
    ],
)
async def test_sni_negative_controls_fail_verification(
    sni_mx: ReceivingMta,
    ca: trustme.CA,
    sni: str,
    trust: str,
    served: str,
) -> None:
    ctx = trusting(ca if trust == "ca" else trustme.CA())
    async with sni_mx as mx:
        client = await esmtp(mx)
        await client.ehlo()
        with pytest.raises(TLS_FAILURES):
            await client.starttls(server_hostname=sni, tls_context=ctx)
        client.close()
        await mx.settle()
    session = only_session(mx)
    assert session.ended is SessionEnd.TLS_FAILED and not session.tls_completed
    assert (session.sni, session.cert_served) == (sni, served)
    assert session.tls_error is not None and not mx.messages


async def test_rotate_cert_applies_to_next_session(ca: trustme.CA) -> None:
    old, new = issue(ca, MX, label="old"), issue(ca, MX, label="new")
    async with ReceivingMta(ADDR, MX, cert=old) as mx:
        served = []
        for cert in (old, new):
            mx.rotate_cert(cert)
            client, sslobj = await tls_session(mx, trusting(ca))
            served.append(sslobj.getpeercert(binary_form=True))
            await client.quit()
        await mx.settle()
    assert served == [der(old), der(new)]
    assert [s.cert_served for s in mx.sessions] == ["old", "new"]


# -- STARTTLS misbehaviour ----------------------------------------------------------------


async def test_starttls_absent_is_not_advertised_and_refused_if_sent() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT) as mx:
        client = await esmtp(mx)
        await client.ehlo()
        assert not client.supports_extension("starttls")
        reply = await client.execute_command(b"STARTTLS")
        await client.quit()
        await mx.settle()
    assert reply.code == 500
    session = only_session(mx)
    assert session.starttls_attempted and not session.starttls_offered
    assert session.protocol_errors == ("client sent STARTTLS although it was not advertised",)
    with pytest.raises(AssertionError, match="not advertised"):
        mx.check()


async def test_starttls_refused_454_then_clear_fallback_is_recorded() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.REFUSED) as mx:

        def refused_then_clear() -> int:
            with smtplib.SMTP(*mx.address, timeout=TIMEOUT, local_hostname="c.test") as client:
                with pytest.raises(smtplib.SMTPResponseException) as refused:
                    client.starttls(context=unverified())
                client.sendmail("a@sender.test", ["r@example.com"], MESSAGE)
                return refused.value.smtp_code

        assert await asyncio.to_thread(refused_then_clear) == 454
        await mx.settle()
    session = only_session(mx)
    assert session.starttls_offered and session.starttls_attempted
    assert not session.tls_completed and session.in_clear and mx.messages[0].in_clear
    mx.check()


@pytest.mark.parametrize("mode", [MxStartTls.BROKEN_CLOSE, MxStartTls.BROKEN_GARBAGE])
async def test_broken_starttls_fails_the_handshake(mode: MxStartTls) -> None:
    async with ReceivingMta(ADDR, MX, starttls=mode) as mx:
        client = await esmtp(mx)
        await client.ehlo()
        assert client.supports_extension("starttls")
        with pytest.raises(TLS_FAILURES):
            await client.starttls(tls_context=unverified())
        client.close()
        await mx.settle()
    session = only_session(mx)
    assert session.commands == ("EHLO", "STARTTLS")  # the 220 came, then nothing usable
    assert session.ended is SessionEnd.TLS_FAILED and not session.tls_completed
    assert mode in (session.tls_error or "")


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """The last line of one (possibly multi-line) SMTP reply."""
    while (line := await reader.readline())[3:4] == b"-":
        pass
    return line


async def test_cleartext_after_broken_handshake_is_a_protocol_error() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.BROKEN_GARBAGE) as mx:
        reader, writer = await asyncio.open_connection(*mx.address)
        await read_reply(reader)
        writer.write(b"EHLO c.test\r\nSTARTTLS\r\n")
        assert b"250 " in await read_reply(reader)
        assert (await read_reply(reader)).startswith(b"220 2.0.0")
        writer.write(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")  # a tiny handshake record
        assert (await reader.readline()).startswith(b"220 this is not")
        writer.write(b"MAIL FROM:<a@sender.test>\r\n")  # a client ignoring the failure
        writer.write_eof()
        await reader.read()
        writer.close()
        await writer.wait_closed()
        await mx.settle()
    session = only_session(mx)
    assert session.in_clear and session.ended is SessionEnd.TLS_FAILED
    assert "cleartext after the failed STARTTLS" in session.protocol_errors[0]


# -- TLS version limits --------------------------------------------------------------------


def _tls11_works(ca: trustme.CA) -> bool:
    """Probe: can this OpenSSL complete a TLS 1.1 handshake in memory at all?"""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("probe.test").configure_cert(server)
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = server.maximum_version = ssl.TLSVersion.TLSv1_1
    bios = [ssl.MemoryBIO() for _ in range(4)]
    srv = server.wrap_bio(bios[0], bios[1], server_side=True)
    cli = legacy_client(ssl.TLSVersion.TLSv1_1).wrap_bio(bios[2], bios[3])
    for _ in range(6):
        for end in (cli, srv):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
    return cli.version() == "TLSv1.1"


@pytest.fixture
def tls11_mx(ca: trustme.CA, mx_cert: ServerCert) -> ReceivingMta:
    if not _tls11_works(ca):
        pytest.skip("this OpenSSL cannot negotiate TLS 1.1 even at @SECLEVEL=0")
    return ReceivingMta(ADDR, MX, cert=mx_cert, tls_max=ssl.TLSVersion.TLSv1_1)


async def test_tls11_capped_server_speaks_tls11_to_legacy_client(tls11_mx: ReceivingMta) -> None:
    async with tls11_mx as mx:
        client, _ = await tls_session(mx, legacy_client(ssl.TLSVersion.TLSv1_1))
        await client.quit()
        await mx.settle()
    assert only_session(mx).tls_version == "TLSv1.1"


async def test_client_requiring_tls12_fails_against_tls11_server(
    tls11_mx: ReceivingMta, ca: trustme.CA
) -> None:
    async with tls11_mx as mx:
        client = await esmtp(mx)
        with pytest.raises(TLS_FAILURES):
            await client.starttls(server_hostname=MX, tls_context=trusting(ca))
        client.close()
        await mx.settle()
    assert only_session(mx).ended is SessionEnd.TLS_FAILED


async def test_tls13_only_server_against_tls12_client(ca: trustme.CA, mx_cert: ServerCert) -> None:
    capped = trusting(ca)
    capped.maximum_version = ssl.TLSVersion.TLSv1_2
    async with ReceivingMta(ADDR, MX, cert=mx_cert, tls_min=ssl.TLSVersion.TLSv1_3) as mx:
        client = await esmtp(mx)
        with pytest.raises(TLS_FAILURES):
            await client.starttls(server_hostname=MX, tls_context=capped)
        client.close()
        client, _ = await tls_session(mx, trusting(ca))  # positive control
        await client.quit()
        await mx.settle()
    assert [s.tls_version for s in mx.sessions] == [None, "TLSv1.3"]


# -- scripted replies -------------------------------------------------------------------


async def test_rcpt_replies_by_address_and_index() -> None:
    script = Script(
        rcpt={"Bad@Example.com": ScriptedReply(550, "5.1.1 no such user")},
        rcpt_by_index={2: ScriptedReply(452, "4.5.3 too many recipients")},
    )
    rcpts = ["good@example.com", "bad@example.com", "third@example.com"]
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, script=script) as mx:
        (refused,) = await asyncio.to_thread(deliver, mx.address, rcpts)
        await mx.settle()
    assert {k: v[0] for k, v in refused.items()} == {
        "bad@example.com": 550,
        "third@example.com": 452,
    }
    (txn,) = only_session(mx).transactions
    assert [r.reply for r in txn.rcpts] == [
        "250 2.1.5 OK",
        "550 5.1.1 no such user",
        "452 4.5.3 too many recipients",
    ]
    assert mx.messages[0].rcpt_to == ("good@example.com",)
    mx.check()  # scripted 5yz replies are not protocol errors


@pytest.mark.parametrize("code", [451, 550])
async def test_mail_reply_refuses_sender(code: int) -> None:
    script = Script(mail=ScriptedReply(code, "x.7.1 go away"))
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, script=script) as mx:
        with pytest.raises(smtplib.SMTPSenderRefused) as raised:
            await asyncio.to_thread(deliver, mx.address)
        await mx.settle()
    assert raised.value.smtp_code == code
    assert only_session(mx).transactions[0].mail_reply == f"{code} x.7.1 go away"
    assert not mx.messages


@pytest.mark.parametrize(("stage", "code"), [("data", 451), ("data", 554), ("data_start", 554)])
async def test_data_replies_refuse_message(stage: str, code: int) -> None:
    script = Script(**{stage: ScriptedReply(code, "x.6.0 refused")})  # type: ignore[arg-type]
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, script=script) as mx:
        with pytest.raises(smtplib.SMTPDataError) as raised:
            await asyncio.to_thread(deliver, mx.address)
        await mx.settle()
    assert raised.value.smtp_code == code
    (txn,) = only_session(mx).transactions
    assert not txn.delivered and not mx.messages
    assert (txn.message is not None) == (stage == "data")


@pytest.mark.parametrize("stage", ["banner", "ehlo", "mail", "rcpt", "data_start", "data"])
async def test_disconnect_at_stage(stage: str) -> None:
    if stage == "rcpt":
        script = Script(rcpt_by_index={0: Disconnect()})
    else:
        script = Script(**{stage: Disconnect()})  # type: ignore[arg-type]
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, script=script) as mx:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            await asyncio.to_thread(deliver, mx.address)
        await mx.settle()
    session = only_session(mx)
    assert session.ended is SessionEnd.SERVER_DISCONNECT and not mx.messages
    expected = {"banner": 0, "ehlo": 1, "mail": 2, "rcpt": 3, "data_start": 4, "data": 4}
    assert len(session.commands) == expected[stage]
    mx.check()


async def test_refused_banner_answers_503_until_quit() -> None:
    script = Script(banner=ScriptedReply(554, "5.3.2 not accepting mail"))
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, script=script) as mx:
        reader, writer = await asyncio.open_connection(*mx.address)
        replies = [await reader.readline()]
        for line in (b"EHLO c.test\r\n", b"QUIT\r\n"):
            writer.write(line)
            replies.append(await reader.readline())
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await mx.settle()
    assert [r[:3] for r in replies] == [b"554", b"503", b"221"]
    assert only_session(mx).ended is SessionEnd.QUIT
    mx.check()


async def test_421_reply_closes_the_connection() -> None:
    script = Script(mail=ScriptedReply(421, "4.3.2 shutting down"))
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, script=script) as mx:
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPServerDisconnected)):
            await asyncio.to_thread(deliver, mx.address)
        await mx.settle()
    assert only_session(mx).ended is SessionEnd.SERVER_DISCONNECT


async def test_helo_fallback_when_ehlo_is_502() -> None:
    script = Script(ehlo=HELO_ONLY)
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.REFUSED, script=script) as mx:
        await asyncio.to_thread(deliver, mx.address)
        await mx.settle()
    session = only_session(mx)
    assert session.commands[:2] == ("EHLO", "HELO")
    assert (session.helo_verb, session.helo_name) == ("HELO", "client.test")
    assert not session.starttls_offered and len(mx.messages) == 1
    mx.check()


async def test_unknown_command_is_a_protocol_error() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT) as mx:
        client = await esmtp(mx)
        reply = await client.execute_command(b"XYZZY")
        await client.quit()
        await mx.settle()
    assert reply.code == 500
    assert only_session(mx).commands == ("XYZZY", "QUIT")
    with pytest.raises(AssertionError, match="XYZZY"):
        mx.check()


async def test_idle_client_times_out() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT, idle_timeout=0.05) as mx:
        reader, writer = await asyncio.open_connection(*mx.address)
        await reader.readline()
        assert await reader.read() == b""  # the server hangs up on us
        writer.close()
        await writer.wait_closed()
        await mx.settle()
    assert only_session(mx).ended is SessionEnd.TIMEOUT


# -- life cycle ----------------------------------------------------------------------------


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_shutdown_leaves_no_tasks_or_fds(ca: trustme.CA, mx_cert: ServerCert) -> None:
    tasks, fds = asyncio.all_tasks(), _fds()
    async with ReceivingMta(ADDR, MX, cert=mx_cert) as mx:
        client, _ = await tls_session(mx, trusting(ca))
        await client.sendmail("a@sender.test", ["r@example.com"], MESSAGE)
        await client.quit()
        await asyncio.to_thread(deliver, mx.address)
        idle, _ = await tls_session(mx, trusting(ca))  # still connected at shutdown
        reader, writer = await asyncio.open_connection(*mx.address)
        await reader.readline()  # and one in clear
    assert [s.ended for s in mx.sessions] == [SessionEnd.QUIT] * 2 + [SessionEnd.SHUTDOWN] * 2
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    idle.close()
    await asyncio.sleep(0)  # let the client transports' own close callbacks run
    assert asyncio.all_tasks() == tasks
    assert _fds() == fds


async def test_address_reports_bound_port_and_is_ready() -> None:
    mx = ReceivingMta("127.0.0.3", MX, starttls=MxStartTls.ABSENT)
    with pytest.raises(RuntimeError, match="not running"):
        _ = mx.address
    async with mx:
        host, port = mx.address
        assert host == "127.0.0.3" and port > 0
        _, writer = await asyncio.open_connection(host, port)  # no retry: bound already
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "192.0.2.1", "::1", "localhost", ""])
def test_refuses_non_loopback_addresses(host: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        ReceivingMta(host, MX, starttls=MxStartTls.ABSENT)


def test_offered_starttls_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="needs a certificate"):
        ReceivingMta(ADDR, MX)
    mx = ReceivingMta(ADDR, MX, starttls=MxStartTls.REFUSED)
    with pytest.raises(ValueError, match="needs a certificate"):
        mx.starttls = MxStartTls.OFFERED


# -- script values --------------------------------------------------------------------------


def test_parse_action() -> None:
    assert parse_action(" Disconnect ") == Disconnect()
    assert parse_action("450 4.2.0 try later") == ScriptedReply(450, "4.2.0 try later")
    for bad in ["", "45 x", "abc def", "700 x"]:
        with pytest.raises(ValueError):
            parse_action(bad)


def test_script_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="positive banner"):
        Script(banner=ScriptedReply(250, "hello"))
    with pytest.raises(TypeError, match="ScriptedReply, Disconnect or Fault"):
        Script(mail="550 no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one line"):
        ScriptedReply(550, "a\r\nb")
    assert HELO_ONLY.code == 502


def _log(script: Script | None = None, starttls: MxStartTls = MxStartTls.OFFERED) -> SessionLog:
    return SessionLog(SessionConfig(7, MX, starttls, script or Script(), None, 1.0))


def test_log_ehlo_drops_auth_and_places_starttls() -> None:
    keywords = [MX, "SIZE 100", "8BITMIME", "AUTH LOGIN", "STARTTLS", "HELP"]
    answer = _log().ehlo("c.test", keywords, tls_possible=True)
    assert answer.lines == (f"250-{MX}", "250-STARTTLS", "250-SIZE 100", "250-8BITMIME", "250 HELP")
    absent = _log(starttls=MxStartTls.ABSENT).ehlo("c.test", keywords, tls_possible=True)
    assert not any("STARTTLS" in line or "AUTH" in line for line in absent.lines)
    after_tls = _log().ehlo("c.test", keywords, tls_possible=False)
    assert "250-STARTTLS" not in after_tls.lines


def test_log_data_start_applies_only_after_an_accepted_recipient() -> None:
    log = _log(
        Script(
            data_start=ScriptedReply(451, "4.3.0 later"),
            rcpt_by_index={0: ScriptedReply(550, "no")},
        )
    )
    assert log.command("MAIL", "FROM:<a@b.test>", tls_active=True) is None
    log.mail("a@b.test", tls_active=True)
    log.rcpt("x@example.com")  # refused: DATA is aiosmtpd's to refuse (503)
    assert log.command("DATA", None, tls_active=True) is None
    log.rcpt("y@example.com")
    answer = log.command("DATA", None, tls_active=True)
    assert answer is not None and answer.lines == ("451 4.3.0 later",) and answer.scripted


def test_log_counts_only_unscripted_5yz_and_ends_once() -> None:
    log = _log()
    log.reply_sent("550 5.1.1 scripted", scripted=True)
    log.reply_sent("250 OK", scripted=False)
    log.command("RCPT", "TO:<x@example.com>", tls_active=False)
    log.reply_sent("503 Error: need MAIL command", scripted=False)
    assert log.errors == [
        "server replied '503 Error: need MAIL command' (last command: RCPT TO:<x@example.com>)"
    ]
    log.end(SessionEnd.QUIT)
    log.end(SessionEnd.CLIENT_DROP)
    record = log.freeze()
    assert record.ended is SessionEnd.QUIT and record.in_clear and record.session_id == 7


async def test_settle_times_out_while_a_client_stays() -> None:
    async with ReceivingMta(ADDR, MX, starttls=MxStartTls.ABSENT) as mx:
        reader, writer = await asyncio.open_connection(*mx.address)
        await reader.readline()
        assert mx.live_sessions == 1
        with pytest.raises(TimeoutError):
            await mx.settle(timeout=0.01)
        writer.close()
        await writer.wait_closed()
        await mx.settle()
    assert only_session(mx).ended is SessionEnd.CLIENT_DROP
    mx.clear()
    assert mx.sessions == () and mx.messages == ()


def test_rotate_cert_validates(mx_cert: ServerCert) -> None:
    mx = ReceivingMta(ADDR, MX, cert=mx_cert)
    with pytest.raises(ValueError, match="needs a certificate"):
        mx.rotate_cert(None)
    mx.starttls = MxStartTls.ABSENT
    with pytest.raises(ValueError, match="default cert"):
        mx.rotate_cert(None, sni_certs={MX: mx_cert})
    with pytest.raises(ValueError, match="cannot load"):
        mx.rotate_cert(ServerCert(mx_cert.chain_pem, mx_cert.chain_pem, label="no key"))
    mx.rotate_cert(None)


def test_public_api_is_pinned() -> None:
    assert sorted(mta_module.__all__) == sorted(
        [
            "HELO_ONLY",
            "Disconnect",
            "ReceivedMessage",
            "MtaSession",
            "RcptResult",
            "ReceivingMta",
            "ScriptedReply",
            "Script",
            "ServerCert",
            "SessionEnd",
            "MxStartTls",
            "Transaction",
            "describe_cert",
            "parse_action",
        ]
    )
    assert all(hasattr(mta_module, name) for name in mta_module.__all__)
