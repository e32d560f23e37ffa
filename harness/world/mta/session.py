"""One SMTP session of the fake MX: aiosmtpd's ``SMTP`` protocol driving a ``SessionLog``.

Theory of operation
-------------------
aiosmtpd's ``SMTP`` does the SMTP grammar (command parsing, dot-unstuffing,
the STARTTLS transport swap). This adapter steers it at four narrow points,
leaving its command loop untouched, and lets the sans-IO ``SessionLog``
decide every reply:

* the command table (``_smtp_methods``) is wrapped, so every verb reaches
  ``SessionLog.command`` first (recording, ``in_clear``, 503 after a refused
  banner, a scripted reply to DATA);
* handler hooks (``handle_EHLO``/``HELO``/``MAIL``/``RCPT``/``DATA`` and the
  post-handshake ``handle_STARTTLS``) ask the log and apply its ``SessionAnswer`` to
  aiosmtpd's session and envelope;
* ``smtp_STARTTLS`` is overridden for the absent / refused / broken modes;
* ``push`` swaps in the banner, hangs up after a 421 (RFC 5321 §3.8), and
  reports each reply to the log, which counts unscripted 5yz replies as
  protocol errors. Every reply of every stage passes through ``push``, so a
  scripted ``Fault`` (reset, stall, malformed, multiline-broken) is played
  there, whatever the stage: the hook hands back a placeholder and ``push``
  plays the fault instead of sending it.

Ending: a session is finished when aiosmtpd's handler task is done (QUIT,
EOF, connection loss, our ``hangup`` and ``abort`` all cancel it). The raw
socket is then closed if it is not already, and the frozen ``MtaSession``
goes to the owner.

aiosmtpd keeps ``command_size_limits`` in a class-level dict that EHLO
mutates; each instance gets its own so parallel MTAs cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr, Protocol, cast

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from harness.world.mta.handshake import break_handshake, is_tls_record
from harness.world.mta.log import SessionAnswer, SessionConfig, SessionLog
from harness.world.mta.records import MtaSession, ReceivedMessage, SessionEnd
from harness.world.mta.script import FaultKind, MxStartTls

__all__ = ["MALFORMED_LINE", "MtaProtocol", "SessionOwner"]

_Command = Callable[[str | None], Awaitable[None]]
_PLACEHOLDER = "(a scripted fault is played instead of this reply)"
#: What a ``malformed`` fault sends: no three-digit code (RFC 5321 §4.2).
MALFORMED_LINE = b"Hello, this line has no SMTP reply code"


class SessionOwner(Protocol):
    """What a session reports to (``ReceivingMta``)."""

    @property
    def closing(self) -> bool:
        """True once shutdown began; new connections are dropped at once."""
        ...

    def session_started(self, protocol: MtaProtocol) -> None:
        """A client connected."""

    def session_finished(self, protocol: MtaProtocol, record: MtaSession) -> None:
        """The session is over; ``record`` is final."""

    def message_delivered(self, message: ReceivedMessage) -> None:
        """A message was accepted."""


class _Hooks:
    """aiosmtpd handler: every hook forwards to the session it was called for."""

    async def handle_EHLO(
        self, server: MtaProtocol, session: Session, envelope: Envelope, name: str, lines: list[str]
    ) -> list[str]:
        return server.on_ehlo(name, lines)

    async def handle_HELO(
        self, server: MtaProtocol, session: Session, envelope: Envelope, name: str
    ) -> str:
        return server.on_helo(name)

    async def handle_MAIL(
        self, server: MtaProtocol, session: Session, envelope: Envelope, addr: str, opts: list[str]
    ) -> str:
        return server.on_mail(addr, opts)

    async def handle_RCPT(
        self, server: MtaProtocol, session: Session, envelope: Envelope, addr: str, opts: list[str]
    ) -> str:
        return server.on_rcpt(addr, opts)

    async def handle_DATA(self, server: MtaProtocol, session: Session, envelope: Envelope) -> str:
        return server.on_data()

    def handle_STARTTLS(self, server: MtaProtocol, session: Session, envelope: Envelope) -> bool:
        return server.on_tls_established()


_HOOKS = _Hooks()


class MtaProtocol(SMTP):
    """One connection to the fake MX (``ReceivingMta`` makes one per client).

    Args:
        owner: where the finished record and delivered messages go.
        config: the MTA's configuration when the client connected.
    """

    def __init__(self, owner: SessionOwner, config: SessionConfig) -> None:
        loop = asyncio.get_running_loop()
        # Our state first: aiosmtpd's __init__ already inspects the instance.
        self._owner = owner
        self._tls = config.tls
        self.log = SessionLog(config)
        self._greeted = False
        self._hung_up = False
        self._scripted = False  # the next push is a reply the script chose
        self._fault: tuple[FaultKind, int] | None = None  # the next push plays it
        self._raw: asyncio.Transport | None = None
        self.finished: asyncio.Future[None] = loop.create_future()
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            _HOOKS,
            hostname=config.identity,
            ident="ESMTP mta-sts-harness",
            timeout=config.idle_timeout,
            loop=loop,
        )
        wrapped = {
            verb: functools.partial(self._dispatch, verb, m)
            for verb, m in self._smtp_methods.items()
        }
        self._smtp_methods = _CommandTable(wrapped, self._dispatch)

    @property
    def _tls_active(self) -> bool:
        return self.log.tls_version is not None

    # -- connection life cycle -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None
        super().connection_made(transport)
        if not first:
            return  # the TLS layer re-entering after STARTTLS
        # uvloop's transports are not asyncio.Transport subclasses (they only quack like
        # one), so only the handler is checked here: the world runs on either loop.
        assert self._handler_coroutine is not None
        self._raw = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.log.client = (str(host), int(port))
        self._handler_coroutine.add_done_callback(self._on_handler_done)
        self._owner.session_started(self)
        if self._owner.closing:
            self.abort()

    def _timeout_cb(self) -> None:
        self.log.end(SessionEnd.TIMEOUT)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def abort(self) -> None:
        """End the session now (MTA shutdown): cancel it and reset the socket."""
        self._stop(SessionEnd.SHUTDOWN)
        if self._raw is not None:
            self._raw.abort()

    def hangup(self, how: SessionEnd) -> None:
        """Drop the connection after flushing what was already written."""
        self._stop(how)
        if self._raw is not None:
            self._raw.close()

    def reset(self, how: SessionEnd = SessionEnd.SERVER_RESET) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), nothing flushed."""
        self._stop(how)
        if self._raw is not None:
            sock = self._raw.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self._raw.abort()

    def _stop(self, how: SessionEnd) -> None:
        self.log.end(how)
        self._hung_up = True
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    def _on_handler_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, ConnectionError):
            self.log.internal_error(error)
        self.log.end(SessionEnd.CLIENT_DROP)
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if self._raw is not None and not self._raw.is_closing():
            self._raw.close()
        self._owner.session_finished(self, self.log.freeze())
        self.finished.set_result(None)

    # -- replies ---------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        if self._hung_up:
            return
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        if not self._greeted:
            self._greeted = True
            text = self._apply(self.log.greet(text))
            if self._hung_up:
                return
        if self._fault is not None:
            (kind, code), self._fault = self._fault, None
            return await self._play(kind, code)
        self.log.reply_sent(text, scripted=self._scripted)
        self._scripted = False
        await super().push(text)
        if text.startswith("421"):
            self.hangup(SessionEnd.SERVER_DISCONNECT)  # RFC 5321 §3.8

    def _apply(self, answer: SessionAnswer) -> str:
        """The first reply line to push (aiosmtpd pushes it); hang up if told to."""
        if answer.hangup:
            self.hangup(SessionEnd.SERVER_DISCONNECT)
            return ""
        if answer.fault is not None:
            self._fault = (answer.fault, answer.code)
            return _PLACEHOLDER
        self._scripted = answer.scripted
        return answer.lines[0]

    async def _play(self, kind: FaultKind, code: int) -> None:
        """Break the transport instead of sending a reply (script.py's docstring)."""
        if kind is FaultKind.RESET:
            return self.reset()
        if kind is FaultKind.STALL:
            # Held until the client leaves (connection_lost / EOF cancel this task),
            # the idle timeout ends the session, or the MTA shuts down.
            await asyncio.get_running_loop().create_future()
        if kind is FaultKind.MALFORMED:
            await super().push(MALFORMED_LINE)
            return
        # MULTILINE_BROKEN: RFC 5321 §4.2.1 says every line carries the same code and
        # the last one has a space after it; this reply breaks both, then hangs up.
        other = 451 if code != 451 else 452
        lines = f"{code}-{self.log.identity} this reply goes on\r\n{other}-with another code"
        await super().push(lines)
        self.hangup(SessionEnd.SERVER_DISCONNECT)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            self.log.end(SessionEnd.TLS_FAILED)
            self.log.tls_error = repr(error.__cause__ or error)
            self.log.fault("handshake", f"failed: {self.log.tls_error}")
            sslobj = getattr(self._tls_protocol, "_sslobj", None)  # the handshake's SSLObject
            if sslobj is not None and self._tls is not None:
                self.log.sni, self.log.cert_served = self._tls.handshake_facts(sslobj)
            return "454 4.7.0 TLS handshake failed"  # never sent: aiosmtpd closes the connection
        self.log.internal_error(error)
        self._scripted = True
        return "451 4.3.0 Internal error in the fake MTA"

    # -- commands and stages ---------------------------------------------------------

    async def _dispatch(self, verb: str, method: _Command | None, arg: str | None) -> None:
        answer = self.log.command(verb, arg, tls_active=self._tls_active)
        if answer is not None:
            return await self.push(self._apply(answer))
        if method is None:  # unscripted 500: a protocol error
            return await self.push(f'500 5.5.2 Error: command "{verb}" not recognized')
        await method(arg)

    def on_ehlo(self, name: str, lines: list[str]) -> list[str]:
        """EHLO hook: aiosmtpd offers ``["250-host", "250-SIZE n", ..., "250 HELP"]``."""
        keywords = [line[4:] for line in lines]
        answer = self.log.ehlo(name, keywords, tls_possible=self._tls_protocol is None)
        first = self._apply(answer)
        if answer.hangup:
            return []
        if answer.fault is not None:
            return [first]
        assert self.session is not None
        self.session.extended_smtp = answer.accepted
        if answer.accepted:
            self.session.host_name = name
        return [first, *answer.lines[1:]]

    def on_helo(self, name: str) -> str:
        """HELO hook."""
        answer = self.log.helo(name)
        if answer.accepted:
            assert self.session is not None
            self.session.host_name = name
        return self._apply(answer)

    def on_mail(self, address: str, options: list[str]) -> str:
        """MAIL hook: set aiosmtpd's envelope only when the sender is accepted."""
        answer = self.log.mail(address, tls_active=self._tls_active)
        if answer.accepted:
            assert self.envelope is not None
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(options)
        return self._apply(answer)

    def on_rcpt(self, address: str, options: list[str]) -> str:
        """RCPT hook: add to aiosmtpd's envelope only when the recipient is accepted."""
        answer = self.log.rcpt(address)
        if answer.accepted:
            assert self.envelope is not None
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(options)
        return self._apply(answer)

    def on_data(self) -> str:
        """DATA hook (after the final dot): deliver the message if accepted."""
        assert self.envelope is not None
        answer, delivered = self.log.data(bytes(self.envelope.original_content or b""))
        if delivered is not None:
            self._owner.message_delivered(delivered)
        return self._apply(answer)

    # -- STARTTLS (RFC 3207) ---------------------------------------------------------

    async def smtp_STARTTLS(self, arg: str) -> None:
        answer = self.log.starttls(arg, tls_started=self._tls_protocol is not None)
        if answer is not None:
            return await self.push(self._apply(answer))
        mode = self.log.starttls_mode
        if mode.breaks_handshake:
            await self.push("220 2.0.0 Ready to start TLS")
            self.log.end(SessionEnd.TLS_FAILED)
            self.log.tls_error = f"server broke the handshake on purpose ({mode})"
            self.log.fault("handshake", mode.value)
            after = bytearray()
            try:
                await break_handshake(self._reader, self._writer, mode, after=after)
            finally:  # also when the client's EOF cancels us
                if after and not is_tls_record(after):
                    # docs/gateway-behaviour.md §1.1, the "220 boundary": past the 220, a failed
                    # handshake must not turn into cleartext on this connection.
                    self.log.cleartext_after_tls_failure(bytes(after))
            if mode is MxStartTls.BROKEN_RESET:
                return self.reset(SessionEnd.TLS_FAILED)
            return self.hangup(SessionEnd.TLS_FAILED)
        assert self._tls is not None, f"starttls={mode.value!r} without a certificate"
        if mode is MxStartTls.NO_SHARED_CIPHER:
            self.log.fault("handshake", mode.value)
            self.tls_context = self._tls.null_cipher_context()
        else:
            self.tls_context = self._tls.front
        await super().smtp_STARTTLS(arg)

    def on_tls_established(self) -> bool:
        """aiosmtpd's post-handshake hook: record the TLS facts."""
        assert self.session is not None and self.session.ssl is not None
        sslobj = self.session.ssl["ssl_object"]
        cipher = sslobj.cipher()
        self.log.tls_established(sslobj.version(), cipher[0] if cipher else None)
        if self._tls is not None:
            self.log.sni, self.log.cert_served = self._tls.handshake_facts(sslobj)
        return True


class _CommandTable(dict[str, Any]):
    """aiosmtpd's verb -> method table; unknown verbs reach the dispatcher too."""

    def __init__(
        self,
        methods: dict[str, Any],
        dispatch: Callable[[str, _Command | None, str | None], Awaitable[None]],
    ) -> None:
        super().__init__(methods)
        self._dispatch = dispatch

    def get(self, verb: str, default: Any = None) -> Any:
        found = super().get(verb)
        return found if found is not None else functools.partial(self._dispatch, verb, None)
