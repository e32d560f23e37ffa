"""The injection listener: SMTP in, durable queue, ``250`` only after the commit.

Theory of operation
-------------------
aiosmtpd's ``SMTP`` protocol runs the session (command loop, EHLO, STARTTLS, the
AUTH exchanges); we serve it with ``loop.create_server`` in the gateway's own event
loop, so the listener, the scheduler and the queue share one loop and one thread.
What aiosmtpd leaves lenient we take over, each at the command that carries it
(docs/hardening.md lists the probes):

* admission: a global cap and a per-client cap on sessions, and an ICID from the
  queue's counter; a client over a cap gets ``421 4.7.0``, and a queue that cannot
  be written ``421 4.3.0``, instead of a silent close (RFC 5321 §3.8);
* time: ``idle_timeout`` without a command or a line of DATA, and ``session_timeout``
  for the whole session, each end with ``421 4.4.2`` before the close (RFC 5321
  §4.5.3.2.7 gives 5 minutes as the idle default); a NOOP resets only the first;
* input: every command's argument, MAIL and RCPT by :mod:`engine.gateway.inbound`
  (control characters, invalid UTF-8, address syntax, SMTPUTF8, parameters);
  at most ``max_recipients`` per transaction (``452 4.5.3``, RFC 5321 §4.5.3.1.8);
* DATA: read here, not by aiosmtpd: only ``CRLF . CRLF`` ends it; a bare LF inside a
  line is normalised to CRLF, a bare CR refuses the message (``554 5.6.0``), so
  neither is ever forwarded (the SMTP smuggling disclosures of December 2023; see
  docs/hardening.md for why these two choices);
* relaying: clients inside ``relay_networks`` or authenticated ones; others get
  ``550 5.7.1`` (RFC 5321 §3.6.2: a relay must not be open);
* AUTH PLAIN and LOGIN, only after STARTTLS and only with a users file
  (:mod:`engine.gateway.auth`; the password hash runs off the loop);
* DATA's end: :meth:`engine.gateway.queue.Queue.enqueue` commits the bytes durably
  *before* the reply, so ``250 2.0.0 Ok: queued as MID n`` survives a crash; a
  queue that cannot take it answers ``452 4.3.1`` (disk full) or ``421 4.3.0``.

After a commit the listener calls ``on_queued(mid)`` so the scheduler wakes at once.
Every failure is one event (one log line): a failed TLS handshake, a timeout, an
internal error (whose reply never shows the exception).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import logging
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException, syntax

from engine.config import ListenerConfig
from engine.core.clock import Clock
from engine.core.errors import StsError
from engine.core.events import EventSink, LogEvent
from engine.gateway.auth import AuthMechanisms, Users, UsersFileError, load_users
from engine.gateway.inbound import Refusal, check_argument, parse_mail, parse_rcpt
from engine.gateway.queue import Queue, QueueError

__all__ = ["DEFAULT_RELAY_NETWORKS", "Listener", "ListenerError"]

DEFAULT_RELAY_NETWORKS = ListenerConfig().relay_networks
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_RESTART_KEYS = ("host", "port")  # a reload cannot move a bound socket
# aiosmtpd's own log lines (a traceback per failed handshake among them) are replaced by
# our events; without a handler of its own its logger would fall back to stderr.
logging.getLogger("mail.log").addHandler(logging.NullHandler())


# The queue's storage failing: its typed errors (QueueUnavailable, QueueCorrupt: StsError
# but no QueueError) or, from a queue without them, what SQLite and the OS raise.
_STORAGE_ERRORS = (StsError, sqlite3.Error, OSError)
_SQLITE_FULL = 13


def _disk_full(exc: BaseException) -> bool:
    """A full disk (RFC 3463 X.3.1 "mail system full"): 452, the client retries."""
    if str(getattr(exc, "reason", "")) == "disk-full":  # QueueUnavailable.reason
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return (isinstance(code, int) and code & 0xFF == _SQLITE_FULL) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    )


class ListenerError(Exception):
    """The listener cannot start: its certificate, users file or address (one line)."""


def _printable(text: str) -> str:
    """A reply never carries a control character (aiosmtpd echoes unknown verbs)."""
    return "".join(c if " " <= c != "\x7f" else "?" for c in text)


class _Protocol(SMTP):  # aiosmtpd ships no type information (Any base)
    """aiosmtpd's SMTP session with our admission, timers, commands and DATA reader."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        # aiosmtpd keeps these limits in a class-level dict that EHLO mutates.
        limit = SMTP.command_size_limit
        self.command_size_limits = collections.defaultdict(lambda: limit)
        self.icid = 0
        self.client = ""
        self._listener = listener
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- admission and time ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:  # the TLS transport after STARTTLS
            super().connection_made(transport)
            return
        refusal = self._listener.admit(self, transport)
        if refusal is not None:
            # RFC 5321 §3.8: a server that cannot serve says 421 before it closes.
            # uvloop's transports are not registered as asyncio.WriteTransport: a cast.
            cast(asyncio.WriteTransport, transport).write(f"421 {refusal}\r\n".encode())
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        cfg = self._listener.config
        self._deadline = self.loop.call_later(cfg.session_timeout, self._expire, "session")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return  # refused before the session began: nothing to tear down
        self._admitted = False
        if self._deadline is not None:
            self._deadline.cancel()
        self._listener.disconnected(self)
        super().connection_lost(exc)

    def _timeout_cb(self) -> None:  # aiosmtpd's idle timer (closes without a word)
        self._expire("idle")

    def _expire(self, which: str) -> None:
        if self.transport is None:
            return
        self._listener.timed_out(self, which)
        what = "Idle timeout" if which == "idle" else "Session time limit"
        # RFC 5321 §4.5.3.2.7 timeouts; RFC 3463 X.4.2 "bad connection".
        self._writer.write(f"421 4.4.2 {self.hostname} {what} exceeded, closing\r\n".encode())
        self.transport.close()

    async def handle_exception(self, error: Exception) -> str:
        return self._listener.failed(self, error)

    async def push(self, status: Any) -> None:
        await super().push(_printable(status) if isinstance(status, str) else status)

    async def _refused(self, verb: str, arg: str | None) -> bool:
        try:
            check_argument(verb, arg)
        except Refusal as r:
            await self.push(r.reply)
            return True
        return False

    # -- commands ----------------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refused("HELO", hostname):
            await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refused("EHLO", hostname):
            await super().smtp_EHLO(hostname)

    @syntax("NOOP [ignored]")
    async def smtp_NOOP(self, arg: str) -> None:
        if not await self._refused("NOOP", arg):
            await super().smtp_NOOP(arg)

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:
        if not await self._refused("VRFY", arg):
            await super().smtp_VRFY(arg)

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str) -> None:
        if not await self._refused("HELP", arg):
            await super().smtp_HELP(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self._listener.users is None:
            await self.push("502 5.5.1 AUTH not available")  # not advertised either
        elif not await self._refused("AUTH", arg):
            await super().smtp_AUTH(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.session is not None and self.envelope is not None
        try:
            mail = parse_mail(arg, max_size=self._listener.config.max_message_size)
        except Refusal as r:
            await self.push(r.reply)
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
        elif mail.options and not self.session.extended_smtp:
            await self.push("501 5.5.4 MAIL parameters need EHLO")  # RFC 5321 §4.1.1.11
        else:
            # aiosmtpd's convention: "<>" is the null reverse-path.
            self.envelope.mail_from = mail.address or "<>"
            self.envelope.smtp_utf8 = mail.smtputf8
            self.envelope.mail_options.extend(mail.options)
            await self.push("250 2.1.0 Ok")

    @syntax("RCPT TO: <address>")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        try:
            address = parse_rcpt(arg, smtputf8=bool(self.envelope.smtp_utf8))
        except Refusal as r:
            await self.push(r.reply)
            return
        status = await self._call_handler_hook("RCPT", address, [])
        await self.push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data, fault = await self._read_body()
        if fault is None:
            self.envelope.content = self.envelope.original_content = data
            status = await self._call_handler_hook("DATA")
        else:
            self._listener.refused_data(self, fault)
            status = fault
        self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
        if status is not MISSING:
            await self.push(status)
        if status.startswith("421") and self.transport is not None:
            self.transport.close()

    async def _read_body(self) -> tuple[bytes, str | None]:
        """The message up to ``CRLF . CRLF``; (content, None) or (b"", the reply)."""
        limit = self._listener.config.max_message_size
        lines: list[bytes] = []
        size, fault, tail = 0, None, False
        while True:
            try:
                # RFC 5321 §4.1.1.4: only CRLF . CRLF ends the data, never LF . LF.
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as over:
                await self._reader.readexactly(over.consumed)
                # RFC 5321 §4.5.3.1.6: a line is at most 1000 octets with its CRLF.
                fault = fault or "554 5.6.0 Message has a line longer than 1000 octets"
                tail = True  # what follows is the rest of that line, not a new one
                continue
            self._reset_timeout()  # a line of DATA is activity
            if line == b".\r\n" and not tail:
                break
            tail = False
            if fault is not None:
                continue  # read on to the end, keep nothing (RFC 5321 §4.2.5)
            text = line[:-2]
            if text.startswith(b"."):
                text = text[1:]  # RFC 5321 §4.5.2: transparency
            if b"\r" in text:
                # RFC 5321 §2.3.8: CR only as part of CRLF. A bare CR is refused, never
                # forwarded: a receiver that ends lines on CR would read it as one.
                fault, lines = "554 5.6.0 Message contains a bare CR; lines end in CRLF", []
                continue
            # A bare LF becomes CRLF (Postfix's smtpd_forbid_bare_newline = normalize).
            text = text.replace(b"\n", b"\r\n")
            size += len(text) + 2
            if size > limit:
                # RFC 1870 §6.3 / RFC 3463 X.3.4.
                fault, lines = "552 5.3.4 Message size exceeds fixed maximum message size", []
                continue
            lines.append(text)
        if fault is not None:
            return b"", fault
        return b"".join(t + b"\r\n" for t in lines), None


class Listener:
    """The gateway's SMTP injection listener (async context manager).

    Args:
        queue: where accepted messages go.
        clock: the engine clock (queue times, log stamps).
        sink: where ``listener.*`` and ``message.*`` events go.
        config: the ``[listener]`` settings (bind address, relay networks, limits,
            certificate, users file).
        hostname: the name in the banner.
        on_queued: called with each new MID after its commit.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        clock: Clock,
        sink: EventSink,
        config: ListenerConfig,
        hostname: str = "sts-engine.localdomain",
        on_queued: Callable[[int], None] | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.sink = sink
        self.hostname = hostname
        self.on_queued = on_queued
        self.config = config
        self.networks: tuple[Network, ...] = ()
        self.tls_context: ssl.SSLContext | None = None
        self.users: Users | None = None
        self._auth = AuthMechanisms(self)
        self._server: asyncio.Server | None = None
        self._live: set[_Protocol] = set()
        self._per_client: collections.Counter[str] = collections.Counter()
        self.address: tuple[str, int] = (config.host, config.port)
        self._load(config)

    def _load(self, config: ListenerConfig) -> None:
        """Take ``config``'s certificate, users and networks (raises ListenerError)."""
        context = None
        if config.tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(config.tls_cert, config.tls_key)
            except (OSError, ssl.SSLError) as exc:
                detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                raise ListenerError(
                    f"[listener] tls_cert {str(config.tls_cert)!r} / tls_key "
                    f"{str(config.tls_key)!r}: cannot load ({detail})"
                ) from None
        try:
            users = load_users(config.users_file) if config.users_file else None
        except UsersFileError as exc:
            raise ListenerError(f"[listener] users_file: {exc}") from None
        self.config, self.tls_context, self.users = config, context, users
        self.networks = tuple(ipaddress.ip_network(n) for n in config.relay_networks)

    async def __aenter__(self) -> Listener:
        loop = asyncio.get_running_loop()
        host, port = self.config.host, self.config.port
        try:
            self._server = await loop.create_server(self._protocol, host, port)
        except OSError as exc:
            raise ListenerError(
                f"[listener] cannot listen on {host} port {port}: {exc.strerror or exc}"
            ) from None
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def reconfigure(self, config: ListenerConfig) -> list[str]:
        """Apply a reloaded ``[listener]`` to new sessions; returns the keys it could not.

        Everything but the bound address applies at once (sessions in progress keep
        their limits); ``host`` and ``port`` need a restart, so they are kept and named.

        Raises:
            ListenerError: the new certificate or users file cannot be loaded (the
                running settings are kept).
        """
        kept = [k for k in _RESTART_KEYS if getattr(config, k) != getattr(self.config, k)]
        self._load(replace(config, host=self.config.host, port=self.config.port))
        return kept

    def stop_accepting(self) -> None:
        """Close the listening socket; sessions in progress go on."""
        if self._server is not None:
            self._server.close()

    async def aclose(self) -> None:
        """Stop accepting, drop live sessions and wait for the server to close.

        A session dropped before its ``250`` has nothing in the queue that was
        promised to anyone; the client will retry (RFC 5321 §4.5.4).
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for proto in list(self._live):
            transport = proto.transport
            if transport is not None:  # any loop's transport (uvloop's are no asyncio.Transport)
                cast(asyncio.Transport, transport).abort()
        await server.wait_closed()

    def _protocol(self) -> _Protocol:
        with_auth = self.users is not None
        return _Protocol(
            self,
            hostname=self.hostname,
            ident="ESMTP sts-engine",
            data_size_limit=self.config.max_message_size,
            tls_context=self.tls_context,
            # RFC 6531: accept internationalised addresses; delivery sends the domain
            # in A-labels to servers without SMTPUTF8.
            enable_SMTPUTF8=True,
            timeout=self.config.idle_timeout,
            # RFC 4954 §4: PLAIN and LOGIN only inside TLS (aiosmtpd's 538 before it).
            auth_require_tls=True,
            auth_exclude_mechanism=() if with_auth else ("PLAIN", "LOGIN"),
            loop=asyncio.get_running_loop(),
        )

    def _emit(self, code: str, level: str = "info", **fields: object) -> None:
        self.sink.emit(LogEvent(code, fields, level, self.clock.now()))

    # -- sessions -------------------------------------------------------------------------

    def admit(self, proto: _Protocol, transport: asyncio.BaseTransport) -> str | None:
        """A client connected: the reply that refuses it, or None (then it has an ICID)."""
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        client = str(peer[0])
        cfg = self.config
        if len(self._live) >= cfg.max_connections:
            why = f"too many connections ({cfg.max_connections})"
        elif self._per_client[client] >= cfg.max_connections_per_client:
            why = f"too many connections from {client} ({cfg.max_connections_per_client})"
        else:
            try:
                proto.icid = self.queue.next_icid()
            except _STORAGE_ERRORS as exc:
                self._emit("listener.refused", "warning", address=client, reason=str(exc))
                return f"4.3.0 {self.hostname} Mail queue unavailable, try again later"
            proto.client = client
            self._live.add(proto)
            self._per_client[client] += 1
            self._emit("listener.connect", icid=proto.icid, interface=sock[0], address=client)
            return None
        self._emit("listener.refused", "warning", address=client, reason=why)
        # RFC 3463 X.7.0: a policy refusal (the client may come back later).
        return f"4.7.0 {self.hostname} Too many connections, try again later"

    def disconnected(self, proto: _Protocol) -> None:
        """A client went away."""
        if proto in self._live:
            self._live.discard(proto)
            self._per_client[proto.client] -= 1
            if self._per_client[proto.client] <= 0:
                del self._per_client[proto.client]
            self._emit("listener.close", icid=proto.icid)

    def timed_out(self, proto: _Protocol, which: str) -> None:
        """A session hit its idle or session time limit (``421 4.4.2`` follows)."""
        self._emit("listener.timeout", "warning", icid=proto.icid, limit=which)

    def refused_data(self, proto: _Protocol, reply: str) -> None:
        """A message was refused at the end of DATA for its content."""
        self._emit("listener.data.refused", "warning", icid=proto.icid, reply=reply)

    def _may_relay(self, session: Session) -> bool:
        if session.authenticated:
            return True  # an authenticated client may relay
        peer = session.peer
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        try:
            address = ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    # -- aiosmtpd handler hooks ------------------------------------------------------

    async def handle_EHLO(
        self, server: _Protocol, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        """Our keywords: no AUTH line unless a users file is configured (and TLS is up)."""
        session.host_name = hostname
        return [r for r in responses if not (r[4:].startswith("AUTH") and self.users is None)]

    def failed(self, proto: _Protocol, error: Exception) -> str:
        """An exception in a session: one line in the log, a reply that never shows it."""
        if isinstance(error, TLSSetupException):
            cause = error.__cause__
            detail = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
            self._emit("listener.tls.failed", "warning", icid=proto.icid, detail=detail)
            return ""  # aiosmtpd closes the connection without a reply
        detail = f"{type(error).__name__}: {error}"
        self._emit("listener.error", "warning", icid=proto.icid, detail=detail)
        return "451 4.3.0 Internal error; try again later"

    async def auth_PLAIN(self, server: _Protocol, args: list[str]) -> Any:
        """RFC 4616 PLAIN against the users file."""
        return await self._auth.plain(server, args)

    async def auth_LOGIN(self, server: _Protocol, args: list[str]) -> Any:
        """LOGIN (draft-murchison-sasl-login) against the users file."""
        return await self._auth.login(server, args)

    async def handle_RCPT(
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept a recipient from a relay network or an authenticated client, up to the limit."""
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            # RFC 5321 §4.5.3.1.8: past an implementation limit the reply is 452.
            return "452 4.5.3 Too many recipients"
        if not self._may_relay(session):
            # RFC 5321 §3.6.2 / docs/gateway-behaviour.md: no open relay.
            self._emit("listener.rejected", icid=server.icid, rcpt=address, reason="relay denied")
            return "550 5.7.1 Relaying denied"
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            return "553 5.1.3 Recipient address needs a domain"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: _Protocol, session: Session, envelope: Envelope) -> str:
        """Commit the message durably, then promise it with 250."""
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        # aiosmtpd keeps the null reverse-path as "<>"; the queue stores it as "".
        mail_from = (envelope.mail_from or "").strip()
        mail_from = "" if mail_from == "<>" else mail_from
        try:
            # Durability before acknowledgement: enqueue fsyncs (synchronous=FULL).
            mid, rids = self.queue.enqueue(
                mail_from, list(envelope.rcpt_tos), data, self.clock.now(), icid=server.icid
            )
        except QueueError as exc:
            return f"554 5.6.0 {exc}"
        except _STORAGE_ERRORS as exc:
            self._emit("listener.queue.error", "warning", icid=server.icid, detail=str(exc))
            if _disk_full(exc):
                return "452 4.3.1 Insufficient system storage, try again later"
            return "421 4.3.0 Mail queue unavailable, try again later"
        self._emit(
            "message.received",
            icid=server.icid,
            mid=mid,
            mail_from=mail_from,
            rcpts=list(envelope.rcpt_tos),
            rids=rids,
            size=len(data),
        )
        self._emit("message.queued", mid=mid)
        if self.on_queued is not None:
            self.on_queued(mid)
        return f"250 2.0.0 Ok: queued as MID {mid}"
