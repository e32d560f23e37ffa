"""One SMTP session of the fake MX: aiosmtpd's ``SMTP`` protocol, scripted and recorded.

Theory of operation
-------------------
aiosmtpd's ``SMTP`` does the SMTP grammar (command parsing, dot-unstuffing,
the STARTTLS transport swap). We steer it at four narrow points and keep its
command loop untouched:

* the command table (``_smtp_methods``) is wrapped, so every command verb is
  recorded in order, ``in_clear`` is noted, and a refused banner answers 503;
* handler hooks (``handle_EHLO``/``HELO``/``MAIL``/``RCPT``/``DATA`` and the
  post-handshake ``handle_STARTTLS``) apply the ``Script`` and fill the record;
* ``smtp_STARTTLS`` is overridden for the absent / refused / broken modes;
* ``push`` replaces the banner, drops the connection after a 421, and counts
  any 5yz reply that was *not* scripted as a protocol error: aiosmtpd only
  says 5yz on its own when the client broke the protocol (bad syntax, bad
  sequence) -- which a conformance harness must hear about (fail loudly).

Ending: a session is finished when aiosmtpd's handler task is done (it is
cancelled by QUIT, EOF, connection loss, or our ``hangup``/``abort``). The
raw socket is then closed if it is not already, and the frozen ``MtaSession``
goes to the owner. ``abort`` is the owner's shutdown path.

aiosmtpd keeps ``command_size_limits`` in a class-level dict that EHLO mutates;
each instance gets its own so parallel MTAs cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from harness.world.mta_records import Message, MtaSession, RcptResult, SessionEnd, Transaction
from harness.world.mta_script import Disconnect, Reply, Script, StartTls
from harness.world.mta_tls import TlsSetup

__all__ = ["MtaProtocol", "SessionConfig", "SessionOwner"]

_ENVELOPE_VERBS = frozenset({"MAIL", "RCPT", "DATA"})
_RESET_VERBS = frozenset({"EHLO", "HELO", "RSET", "STARTTLS"})
# Not a TLS record: a TLS client reading this expects a handshake record
# (content type 22) and fails with "wrong version number" or similar.
_GARBAGE = b"220 this is not a ServerHello\r\n" * 4


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The MTA's configuration, snapshotted when a client connects."""

    session_id: int
    identity: str
    starttls: StartTls
    script: Script
    tls: TlsSetup | None
    idle_timeout: float


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

    def message_delivered(self, message: Message) -> None:
        """A message was accepted."""


@dataclass
class _Txn:
    mail_from: str
    over_tls: bool
    mail_reply: str | None = None
    rcpts: list[RcptResult] = field(default_factory=list)
    data_reply: str | None = None
    message: bytes | None = None

    def freeze(self) -> Transaction:
        return Transaction(
            self.mail_from,
            self.mail_reply,
            tuple(self.rcpts),
            self.data_reply,
            self.message,
            self.over_tls,
        )


@dataclass
class _Record:
    client: tuple[str, int] = ("", 0)
    helo_verb: str | None = None
    helo_name: str | None = None
    starttls_offered: bool = False
    starttls_attempted: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    sni: str | None = None
    cert_served: str | None = None
    tls_error: str | None = None
    txns: list[_Txn] = field(default_factory=list)
    in_clear: bool = False
    commands: list[str] = field(default_factory=list)
    ended: SessionEnd | None = None
    errors: list[str] = field(default_factory=list)

    def end(self, how: SessionEnd) -> None:
        if self.ended is None:
            self.ended = how


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
    """One connection to the fake MX (created by ``ReceivingMta`` per client).

    Args:
        owner: where the finished record and delivered messages go.
        config: the MTA's configuration when the client connected.
    """

    def __init__(self, owner: SessionOwner, config: SessionConfig) -> None:
        loop = asyncio.get_running_loop()
        # Our state first: aiosmtpd's __init__ already inspects the instance.
        self._owner = owner
        self._cfg = config
        self._rec = _Record()
        self._txn: _Txn | None = None
        self._greeted = False
        self._refusing = False  # a non-220 banner was sent (RFC 5321 §3.1)
        self._hung_up = False
        self._tls_active = False
        self._scripted = False  # the next push is a reply we chose
        self._current = "(banner)"
        self._raw: asyncio.BaseTransport | None = None
        self.finished: asyncio.Future[None] = loop.create_future()
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            _HOOKS,
            hostname=config.identity,
            ident="ESMTP mta-sts-harness",
            timeout=config.idle_timeout,
            loop=loop,
        )
        wrapped = {verb: self._wrap(verb, m) for verb, m in self._smtp_methods.items()}
        self._smtp_methods = _CommandTable(wrapped, self._unknown)

    # -- connection life cycle -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None
        super().connection_made(transport)
        if not first:
            return  # the TLS layer re-entering after STARTTLS
        self._raw = transport
        peer = transport.get_extra_info("peername")
        self._rec.client = (str(peer[0]), int(peer[1]))
        assert self._handler_coroutine is not None
        self._handler_coroutine.add_done_callback(self._on_handler_done)
        self._owner.session_started(self)
        if self._owner.closing:
            self.abort()

    def _timeout_cb(self) -> None:
        self._rec.end(SessionEnd.TIMEOUT)
        super()._timeout_cb()

    def abort(self) -> None:
        """End the session now (MTA shutdown): cancel it and reset the socket."""
        self._rec.end(SessionEnd.SHUTDOWN)
        self._hung_up = True
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self._raw is not None:
            self._raw.abort()

    def hangup(self, how: SessionEnd) -> None:
        """Drop the connection (after flushing what was already written)."""
        self._rec.end(how)
        self._hung_up = True
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self._raw is not None:
            self._raw.close()

    def _on_handler_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            if isinstance(error, ConnectionError):
                self._rec.end(SessionEnd.CLIENT_DROP)
            else:
                self._rec.errors.append(f"session task crashed: {error!r}")
        self._rec.end(SessionEnd.CLIENT_DROP)
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if self._raw is not None and not self._raw.is_closing():
            self._raw.close()
        self._owner.session_finished(self, self._freeze())
        self.finished.set_result(None)

    def _freeze(self) -> MtaSession:
        r = self._rec
        assert r.ended is not None
        return MtaSession(
            session_id=self._cfg.session_id,
            mx_host=self._cfg.identity,
            client=r.client,
            helo_verb=r.helo_verb,
            helo_name=r.helo_name,
            starttls_offered=r.starttls_offered,
            starttls_attempted=r.starttls_attempted,
            tls_completed=r.tls_version is not None,
            tls_version=r.tls_version,
            cipher=r.cipher,
            sni=r.sni,
            cert_served=r.cert_served,
            tls_error=r.tls_error,
            transactions=tuple(t.freeze() for t in r.txns),
            in_clear=r.in_clear,
            commands=tuple(r.commands),
            ended=r.ended,
            protocol_errors=tuple(r.errors),
        )

    @property
    def session_id(self) -> int:
        """This session's number at its MTA."""
        return self._cfg.session_id

    @property
    def protocol_errors(self) -> tuple[str, ...]:
        """Protocol errors so far in this (possibly live) session."""
        return tuple(self._rec.errors)

    # -- replies -----------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        if self._hung_up:
            return
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        if not self._greeted:
            self._greeted = True
            banner = self._cfg.script.banner
            if isinstance(banner, Disconnect):
                self.hangup(SessionEnd.SERVER_DISCONNECT)
                return
            if banner is not None:
                text, self._scripted = banner.line, True
                self._refusing = banner.code != 220
        if text.startswith("5") and not self._scripted:
            self._rec.errors.append(f"{self._current}: server replied {text!r}")
        self._scripted = False
        await super().push(text)
        if text.startswith("421"):
            self.hangup(SessionEnd.SERVER_DISCONNECT)  # RFC 5321 §3.8

    def _say(self, action: Reply) -> str:
        self._scripted = True
        return action.line

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            self._rec.end(SessionEnd.TLS_FAILED)
            self._rec.tls_error = repr(error.__cause__ or error)
            sslobj = getattr(self._tls_protocol, "_sslobj", None)  # the handshake's SSLObject
            if sslobj is not None and self._cfg.tls is not None:
                self._rec.sni, self._rec.cert_served = self._cfg.tls.handshake_facts(sslobj)
            return "454 4.7.0 TLS handshake failed"  # not sent: aiosmtpd closes the connection
        self._rec.errors.append(f"{self._current}: MTA internal error {error!r}")
        self._scripted = True
        return "451 4.3.0 Internal error in the fake MTA"

    # -- commands ----------------------------------------------------------------

    def _wrap(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        return functools.partial(self._dispatch, verb, method)

    async def _unknown(self, verb: str, arg: str | None) -> None:
        await self._dispatch(verb, None, arg)

    async def _dispatch(
        self,
        verb: str,
        method: Callable[[str | None], Awaitable[None]] | None,
        arg: str | None,
    ) -> None:
        self._current = f"{verb} {arg}" if arg else verb
        self._rec.commands.append(verb)
        if verb in _ENVELOPE_VERBS and not self._tls_active:
            self._rec.in_clear = True
        if verb in _RESET_VERBS:
            self._txn = None
        if verb == "QUIT" and not arg:
            self._rec.end(SessionEnd.QUIT)
        elif self._refusing:
            return await self.push(self._say(Reply(503, "5.5.1 Error: bad sequence of commands")))
        if method is None:
            return await self.push(f'500 5.5.2 Error: command "{verb}" not recognized')
        start = self._cfg.script.data_start
        if verb == "DATA" and start is not None and not arg and self._txn is not None:
            assert self.envelope is not None
            if self.envelope.rcpt_tos:
                self._txn.data_reply = None if isinstance(start, Disconnect) else start.line
                return await self._act(start)
        await method(arg)

    async def _act(self, action: Reply | Disconnect) -> None:
        if isinstance(action, Disconnect):
            self.hangup(SessionEnd.SERVER_DISCONNECT)
        else:
            await self.push(self._say(action))

    def _outcome(self, action: Reply | Disconnect | None, default: str) -> tuple[bool, str | None]:
        """(accepted, reply line or None when disconnecting) for one stage."""
        if action is None:
            return True, default
        if isinstance(action, Disconnect):
            self.hangup(SessionEnd.SERVER_DISCONNECT)
            return False, None
        return action.positive, self._say(action)

    def on_ehlo(self, name: str, lines: list[str]) -> list[str]:
        """Apply the EHLO script; advertise STARTTLS per the mode."""
        ok, reply = self._outcome(self._cfg.script.ehlo, "")
        if reply is None:
            return []
        assert self.session is not None
        if reply:  # scripted, one line
            self.session.extended_smtp = ok
            if ok:
                self.session.host_name = name
                self._rec.helo_verb, self._rec.helo_name = "EHLO", name
            return [reply]
        self.session.host_name = name
        self._rec.helo_verb, self._rec.helo_name = "EHLO", name
        # aiosmtpd's list is ["250-host", "250-SIZE n", ..., "250 HELP"]. An MX
        # offers no AUTH; STARTTLS is ours to decide.
        keywords = [
            line[4:] for line in lines if not line[4:].upper().startswith(("STARTTLS", "AUTH"))
        ]
        if self._cfg.starttls is not StartTls.ABSENT and self._tls_protocol is None:
            keywords.insert(1, "STARTTLS")
            self._rec.starttls_offered = True
        return [f"250-{k}" for k in keywords[:-1]] + [f"250 {keywords[-1]}"]

    def on_helo(self, name: str) -> str:
        """Apply the HELO script."""
        ok, reply = self._outcome(self._cfg.script.helo, f"250 {self.hostname}")
        if ok:
            assert self.session is not None
            self.session.host_name = name
            self._rec.helo_verb, self._rec.helo_name = "HELO", name
        return reply or ""

    def on_mail(self, address: str, options: list[str]) -> str:
        """Apply the MAIL script; start a transaction record."""
        self._txn = _Txn(address, over_tls=self._tls_active)
        self._rec.txns.append(self._txn)
        ok, reply = self._outcome(self._cfg.script.mail, "250 2.1.0 OK")
        if ok:
            assert self.envelope is not None
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(options)
        self._txn.mail_reply = reply
        return reply or ""

    def on_rcpt(self, address: str, options: list[str]) -> str:
        """Apply the RCPT script for this recipient."""
        assert self._txn is not None and self.envelope is not None
        action = self._cfg.script.rcpt_action(address, len(self._txn.rcpts))
        ok, reply = self._outcome(action, "250 2.1.5 OK")
        if ok:
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(options)
        self._txn.rcpts.append(RcptResult(address, reply))
        return reply or ""

    def on_data(self) -> str:
        """Apply the DATA script to the received message; deliver it if accepted."""
        assert self._txn is not None and self.envelope is not None
        txn, self._txn = self._txn, None
        raw = self.envelope.original_content
        txn.message = bytes(raw) if raw is not None else b""
        ok, reply = self._outcome(self._cfg.script.data, "250 2.0.0 OK: queued")
        txn.data_reply = reply
        if ok:
            message = Message(
                session_id=self._cfg.session_id,
                mx_host=self._cfg.identity,
                mail_from=txn.mail_from,
                rcpt_to=tuple(self.envelope.rcpt_tos),
                data=txn.message,
                tls_version=self._rec.tls_version,
            )
            self._owner.message_delivered(message)
        return reply or ""

    # -- STARTTLS (RFC 3207) -----------------------------------------------------

    async def smtp_STARTTLS(self, arg: str) -> None:
        self._rec.starttls_attempted = True
        mode = self._cfg.starttls
        if arg or self._tls_protocol is not None:
            # RFC 3207 §4: no parameters; STARTTLS once per session.
            return await self.push("501 5.5.4 Syntax: STARTTLS (once per session)")
        if mode is StartTls.ABSENT:
            self._rec.errors.append("client sent STARTTLS although it was not advertised")
            return await self.push(self._say(Reply(500, '5.5.1 Error: command "STARTTLS" unknown')))
        if mode is StartTls.REFUSED:
            return await self.push(self._say(Reply(454, "4.7.0 TLS not available")))
        if mode is not StartTls.OFFERED:
            await self.push("220 2.0.0 Ready to start TLS")
            return await self._break_handshake(mode)
        assert self._cfg.tls is not None, "offered STARTTLS without a certificate"
        self.tls_context = self._cfg.tls.front
        await super().smtp_STARTTLS(arg)

    async def _break_handshake(self, mode: StartTls) -> None:
        self._rec.end(SessionEnd.TLS_FAILED)
        self._rec.tls_error = f"server broke the handshake on purpose ({mode})"
        try:
            # Read the whole ClientHello record (5-byte header, then its body)
            # so that closing sends FIN, not RST over unread data.
            header = await self._reader.readexactly(5)
            await self._reader.readexactly(int.from_bytes(header[3:5], "big"))
            if mode is StartTls.BROKEN_GARBAGE:
                self._writer.write(_GARBAGE)
                while await self._reader.read(4096):
                    pass  # until the client gives up and closes
        except asyncio.IncompleteReadError:
            pass
        self.hangup(SessionEnd.TLS_FAILED)

    def on_tls_established(self) -> bool:
        """Record the completed handshake (aiosmtpd's post-handshake hook)."""
        assert self.session is not None and self.session.ssl is not None
        sslobj = self.session.ssl["ssl_object"]
        self._tls_active = True
        self._rec.tls_version = sslobj.version()
        cipher = sslobj.cipher()
        self._rec.cipher = cipher[0] if cipher else None
        if self._cfg.tls is not None:
            self._rec.sni, self._rec.cert_served = self._cfg.tls.handshake_facts(sslobj)
        return True


class _CommandTable(dict[str, Any]):
    """aiosmtpd's verb -> method table; unknown verbs are recorded too."""

    def __init__(
        self, methods: dict[str, Any], unknown: Callable[[str, str | None], Awaitable[None]]
    ) -> None:
        super().__init__(methods)
        self._unknown = unknown

    def get(self, verb: str, default: Any = None) -> Any:  # type: ignore[override]
        found = super().get(verb)
        return found if found is not None else functools.partial(self._unknown, verb)
