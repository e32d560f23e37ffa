"""SMTP client adapter on asyncio streams.

Why not aiosmtplib: the seed's *Preferred* TLS setting falls back to clear text
only when STARTTLS fails **before** the server's 220 reply; any failure after
it kills the session (docs/gateway-behaviour.md §1.1). aiosmtplib reports a lost
connection the same way on both sides of that boundary and hides the raw
handshake, so this client drives the few commands a sender needs itself,
with Python's ``StreamWriter.start_tls`` for the upgrade, and reports
:class:`StartTlsOutcome` with the boundary explicit and the peer chain
captured for verification at the engine's clock.

Every stage is bounded by its own timeout (RFC 5321 §4.5.3.2 gives the
production defaults); every failure this adapter knows of (socket, ssl, timeout,
an over-long or malformed reply, a command on a connection already closed)
becomes :class:`SmtpError` with the stage named. Anything else is not caught
here: ``engine.delivery.attempt.Trial`` contains every fault of one MX in one place.

A command is never written to a transport that is closing: after a failed
handshake ``start_tls`` has closed the socket, and uvloop (unlike the standard
loop) raises ``RuntimeError`` for a write to a closed transport, which once
aborted whole deliveries from ``quit()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.io.dialer import Dialer
from engine.io.tlschain import peer_chain_der

__all__ = [
    "Reply",
    "SmtpClient",
    "SmtpError",
    "SmtpTimeouts",
    "StartTlsOutcome",
    "no_verify_context",
]

_MAX_LINE = 4096


@dataclass(frozen=True, slots=True)
class SmtpTimeouts:
    """Seconds allowed per stage; defaults are RFC 5321 §4.5.3.2's."""

    connect: float = 30.0
    banner: float = 300.0
    command: float = 300.0
    starttls: float = 60.0
    data_init: float = 120.0
    data_end: float = 600.0

    @classmethod
    def uniform(cls, seconds: float) -> SmtpTimeouts:
        """Every stage bounded by the same (short) value, for tests and the harness."""
        return cls(seconds, seconds, seconds, seconds, seconds, seconds)


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: the code and its text lines."""

    code: int
    lines: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The reply text, lines joined by spaces."""
        return " ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()

    @property
    def ok(self) -> bool:
        """A 2xx reply."""
        return 200 <= self.code < 300

    @property
    def transient(self) -> bool:
        """A 4xx reply."""
        return 400 <= self.code < 500


class SmtpError(Exception):
    """The session broke: network error, timeout or a malformed reply.

    Attributes:
        stage: where it broke (``connect``, ``banner``, ``ehlo``, ``helo``, ``starttls``,
            ``mail``, ``rcpt``, ``data``, ``end of data``, ``rset``, ``quit``).
        detail: what happened.
        timeout: whether it was a timeout.
    """

    def __init__(self, stage: str, detail: str, *, timeout: bool = False) -> None:
        self.stage = stage
        self.detail = detail
        self.timeout = timeout
        super().__init__(f"{stage}: {detail}")


@dataclass(frozen=True, slots=True)
class StartTlsOutcome:
    """What STARTTLS did.

    Attributes:
        reply: the server's reply to STARTTLS (None if it never answered).
        reached_220: the server said 220; after this the session cannot go back to clear.
        ok: the TLS handshake completed.
        protocol: negotiated version (``"TLSv1.3"``), if ok.
        cipher: negotiated cipher name, if ok.
        chain: the peer's certificates as sent, DER, leaf first.
        error: handshake error text when not ok.
    """

    reply: Reply | None
    reached_220: bool
    ok: bool
    protocol: str | None = None
    cipher: str | None = None
    chain: tuple[bytes, ...] = ()
    error: str = ""


def no_verify_context(*, minimum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that completes any handshake and captures the chain.

    Certificates are judged afterwards by the core at the engine's clock (docs/architecture.md),
    so the library's own verification (which uses the wall clock) is off here.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        ctx.minimum_version = minimum
    return ctx


@dataclass(slots=True)
class SmtpClient:
    """One SMTP session. Use :meth:`open` (or :meth:`connect`, then :meth:`read_banner`);
    always :meth:`quit` or :meth:`close`."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    timeouts: SmtpTimeouts
    local_hostname: str
    banner: Reply = field(default_factory=lambda: Reply(0))
    extensions: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    peer: tuple[str, int] = ("", 0)
    local: tuple[str, int] = ("", 0)

    @classmethod
    async def open(
        cls,
        dialer: Dialer,
        address: str,
        port: int,
        *,
        timeouts: SmtpTimeouts,
        local_hostname: str,
    ) -> SmtpClient:
        """Connect and read the banner.

        Raises:
            SmtpError: connection refused, timed out, or no banner this reader could parse.
        """
        client = await cls.connect(
            dialer, address, port, timeouts=timeouts, local_hostname=local_hostname
        )
        try:
            await client.read_banner()
        except BaseException:
            client.abort()  # a server that cannot greet gets no QUIT
            raise
        return client

    @classmethod
    async def connect(
        cls,
        dialer: Dialer,
        address: str,
        port: int,
        *,
        timeouts: SmtpTimeouts,
        local_hostname: str,
    ) -> SmtpClient:
        """Open the TCP connection only (the banner is :meth:`read_banner`'s).

        Raises:
            SmtpError: connection refused or timed out.
        """
        try:
            reader, writer = await dialer.open_connection(address, port, timeout=timeouts.connect)
        except TimeoutError as exc:
            raise SmtpError("connect", "connection timed out", timeout=True) from exc
        except OSError as exc:
            raise SmtpError("connect", exc.strerror or str(exc)) from exc
        client = cls(reader, writer, timeouts, local_hostname)
        sock = writer.get_extra_info("sockname")
        client.local = (sock[0], sock[1]) if sock else ("", 0)
        client.peer = (address, port)
        return client

    async def read_banner(self) -> Reply:
        """Read the server's greeting (RFC 5321 §4.3.1) into :attr:`banner`."""
        self.banner = await self._read("banner", self.timeouts.banner)
        return self.banner

    async def _read(self, stage: str, timeout: float) -> Reply:
        lines: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        raw = await self.reader.readline()
                    except ValueError as exc:  # StreamReader: a line past its buffer limit
                        raise SmtpError(stage, f"reply line too long ({exc})") from exc
                    if not raw:
                        raise SmtpError(stage, "connection closed by server")
                    if len(raw) > _MAX_LINE:
                        raise SmtpError(stage, "reply line too long")
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if len(line) < 3 or not line[:3].isdigit():
                        raise SmtpError(stage, f"malformed reply {line!r}")
                    lines.append(line[4:])
                    if len(line) == 3 or line[3] == " ":
                        return Reply(int(line[:3]), tuple(lines))
        except TimeoutError as exc:
            raise SmtpError(stage, "timed out waiting for the reply", timeout=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise SmtpError(stage, str(exc) or type(exc).__name__) from exc

    async def command(self, line: str, stage: str, timeout: float | None = None) -> Reply:
        """Send one command line and read its reply."""
        if self.writer.is_closing():
            # Never write to a closed transport (see the module docstring).
            raise SmtpError(stage, "connection already closed")
        try:
            self.writer.write(line.encode("utf-8") + b"\r\n")
            await self.writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise SmtpError(stage, str(exc) or type(exc).__name__) from exc
        return await self._read(stage, self.timeouts.command if timeout is None else timeout)

    async def ehlo(self) -> Reply:
        """EHLO, falling back to HELO when EHLO is refused (RFC 5321 §3.2)."""
        reply = await self.command(f"EHLO {self.local_hostname}", "ehlo")
        self.extensions = {}
        if reply.ok:
            for text in reply.lines[1:]:
                keyword, _, params = text.partition(" ")
                self.extensions[keyword.upper()] = params
            return reply
        if 500 <= reply.code < 600:
            reply = await self.command(f"HELO {self.local_hostname}", "helo")
        return reply

    @property
    def offers_starttls(self) -> bool:
        """STARTTLS appeared in the EHLO reply (RFC 3207 §4)."""
        return "STARTTLS" in self.extensions

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> StartTlsOutcome:
        """Send STARTTLS and, on 220, upgrade with SNI = ``server_hostname``.

        Never raises for a TLS failure: the outcome says on which side of the 220 it happened.
        After a successful handshake EHLO is sent again (RFC 3207 §4.2).
        """
        try:
            reply = await self.command("STARTTLS", "starttls")
        except SmtpError as exc:
            return StartTlsOutcome(None, False, False, error=exc.detail)
        if reply.code != 220:
            return StartTlsOutcome(reply, False, False, error=str(reply))
        try:
            await self.writer.start_tls(
                context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=self.timeouts.starttls,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            return StartTlsOutcome(reply, True, False, error=_tls_error_text(exc))
        sslobj = self.writer.get_extra_info("ssl_object")
        self.tls = True
        chain = tuple(peer_chain_der(sslobj)) if sslobj is not None else ()
        cipher = sslobj.cipher() if sslobj is not None else None
        return StartTlsOutcome(
            reply,
            True,
            True,
            protocol=sslobj.version() if sslobj is not None else None,
            cipher=cipher[0] if cipher else None,
            chain=chain,
        )

    async def mail(self, sender: str, parameters: Sequence[str] = ()) -> Reply:
        """MAIL FROM, with ESMTP parameters (``BODY=8BITMIME``, ``SMTPUTF8``) if any.

        RFC 5321 §4.1.1.2: ``MAIL FROM:<reverse-path> [SP Mail-parameters]``; the
        caller sends only parameters of extensions the server offered (RFC 5321 §2.2.2).
        """
        tail = "".join(f" {p}" for p in parameters)
        return await self.command(f"MAIL FROM:<{sender}>{tail}", "mail")

    async def rcpt(self, recipient: str) -> Reply:
        """RCPT TO."""
        return await self.command(f"RCPT TO:<{recipient}>", "rcpt")

    async def data(self) -> Reply:
        """The DATA command; its reply (354 lets :meth:`send_message` follow)."""
        return await self.command("DATA", "data", self.timeouts.data_init)

    async def send_message(self, message: bytes) -> Reply:
        """The dot-stuffed message and the final dot (RFC 5321 §4.5.2), after a 354."""
        stage = "end of data"
        if self.writer.is_closing():
            raise SmtpError(stage, "connection already closed")
        try:
            self.writer.write(_dot_stuff(message))
            await self.writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise SmtpError(stage, str(exc) or type(exc).__name__) from exc
        return await self._read(stage, self.timeouts.data_end)

    async def rset(self) -> Reply:
        """RSET, to reuse the connection for the next message."""
        return await self.command("RSET", "rset")

    async def quit(self) -> None:
        """QUIT politely (unless the connection is already closed), then close.

        Raises nothing this adapter knows of; ``engine.delivery.attempt.Trial`` swallows the rest.
        """
        if not self.writer.is_closing():
            with contextlib.suppress(SmtpError):
                await self.command("QUIT", "quit", min(self.timeouts.command, 5.0))
        await self.close()

    async def close(self) -> None:
        """Close the connection without QUIT (after a fault the session state is unknown).

        Raises nothing this adapter knows of; ``engine.delivery.attempt.Trial`` swallows the rest.
        """
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection at once, without waiting (the task is being cancelled)."""
        self.writer.transport.abort()


def _dot_stuff(message: bytes) -> bytes:
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."  # RFC 5321 §4.5.2: transparency
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


def _tls_error_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return str(exc) or type(exc).__name__


def recipients_text(rids: Sequence[int]) -> str:
    """``[0, 1]`` as the appliance prints RID lists."""
    return "[" + ", ".join(str(r) for r in rids) + "]"
