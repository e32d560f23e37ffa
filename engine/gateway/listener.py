"""The injection listener: SMTP in, durable queue, ``250`` only after the commit.

Theory of operation
-------------------
aiosmtpd's ``SMTP`` protocol runs the session (command loop, EHLO, STARTTLS, the
AUTH exchanges) as :class:`~engine.gateway.smtpd.SmtpSession`; we serve it with
``loop.create_server`` in the gateway's own event loop, so the listener, the scheduler
and the queue share one loop and one thread. What aiosmtpd leaves lenient we take
over, each at the command that carries it (docs/hardening.md lists the probes):

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
  (:mod:`engine.gateway.auth`; the password hash runs off the loop, a few at a time);
  guessing is limited per session (``421 4.7.0``) and per client address (``454 4.7.0``);
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

from aiosmtpd.smtp import Envelope, Session, TLSSetupException

from engine.config import ListenerConfig
from engine.core.clock import Clock
from engine.core.errors import StsError
from engine.core.events import EventSink, LogEvent
from engine.gateway.auth import AuthMechanisms, Users, UsersFileError, load_users
from engine.gateway.queue import Queue, QueueError
from engine.gateway.smtpd import SmtpSession

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
        self._live: set[SmtpSession] = set()
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
        self._auth.configure(config)

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

    def _protocol(self) -> SmtpSession:
        with_auth = self.users is not None
        return SmtpSession(
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

    def admit(self, proto: SmtpSession, transport: asyncio.BaseTransport) -> str | None:
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

    def disconnected(self, proto: SmtpSession) -> None:
        """A client went away."""
        if proto in self._live:
            self._live.discard(proto)
            self._per_client[proto.client] -= 1
            if self._per_client[proto.client] <= 0:
                del self._per_client[proto.client]
            self._emit("listener.close", icid=proto.icid)

    def timed_out(self, proto: SmtpSession, which: str) -> None:
        """A session hit its idle or session time limit (``421 4.4.2`` follows)."""
        self._emit("listener.timeout", "warning", icid=proto.icid, limit=which)

    def refused_data(self, proto: SmtpSession, reply: str) -> None:
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
        self, server: SmtpSession, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        """Our keywords: no AUTH line unless a users file is configured (and TLS is up)."""
        session.host_name = hostname
        return [r for r in responses if not (r[4:].startswith("AUTH") and self.users is None)]

    def failed(self, proto: SmtpSession, error: Exception) -> str:
        """An exception in a session: one line in the log, a reply that never shows it."""
        if isinstance(error, TLSSetupException):
            cause = error.__cause__
            detail = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
            self._emit("listener.tls.failed", "warning", icid=proto.icid, detail=detail)
            return ""  # aiosmtpd closes the connection without a reply
        detail = f"{type(error).__name__}: {error}"
        self._emit("listener.error", "warning", icid=proto.icid, detail=detail)
        return "451 4.3.0 Internal error; try again later"

    async def auth_PLAIN(self, server: SmtpSession, args: list[str]) -> Any:
        """RFC 4616 PLAIN against the users file."""
        return await self._auth.plain(server, args)

    async def auth_LOGIN(self, server: SmtpSession, args: list[str]) -> Any:
        """LOGIN (draft-murchison-sasl-login) against the users file."""
        return await self._auth.login(server, args)

    async def handle_RCPT(
        self,
        server: SmtpSession,
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

    async def handle_DATA(self, server: SmtpSession, session: Session, envelope: Envelope) -> str:
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
