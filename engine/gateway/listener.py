"""The injection listener: SMTP in, durable queue, ``250`` only after the commit.

Theory of operation
-------------------
aiosmtpd's ``SMTP`` protocol does the grammar; we serve it with
``loop.create_server`` in the gateway's own event loop (not aiosmtpd's threaded
``Controller``), so the listener, the scheduler and the queue share one loop
and one thread. Our handler steers four points:

* connection: a persistent ICID from the queue's counter, and the appliance's
  ``New SMTP ICID`` line (docs/gateway-behaviour.md §5 IDs);
* RCPT: relaying is allowed only for clients inside the configured networks
  (loopback by default); others get ``550 5.7.1`` (RFC 5321 §3.6.2: a relay
  must not be open);
* DATA: :meth:`engine.gateway.queue.Queue.enqueue` commits the bytes with
  ``synchronous=FULL`` *before* the reply, so ``250 2.0.0 Ok: queued as MID n``
  is a promise that survives a crash;
* the size limit is aiosmtpd's ``data_size_limit`` (``552 5.3.4``) and the
  ``SIZE`` EHLO keyword (RFC 1870).

After a commit the listener calls ``on_queued(mid)`` so the scheduler wakes at
once instead of polling.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import sqlite3
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.core.clock import Clock
from engine.core.events import EventSink, LogEvent
from engine.gateway.queue import Queue, QueueError

__all__ = ["DEFAULT_RELAY_NETWORKS", "Listener"]

DEFAULT_RELAY_NETWORKS = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Protocol(SMTP):  # aiosmtpd ships no type information (Any base)
    """aiosmtpd's SMTP with an ICID and connection lines."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        # aiosmtpd keeps these limits in a class-level dict that EHLO mutates.
        limit = SMTP.command_size_limit
        self.command_size_limits = collections.defaultdict(lambda: limit)
        self.icid = 0
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.icid = self._listener.connected(self, transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.disconnected(self)
        super().connection_lost(exc)


class Listener:
    """The gateway's SMTP injection listener (async context manager).

    Args:
        queue: where accepted messages go.
        clock: the engine clock (queue times, log stamps).
        sink: where ``listener.*`` and ``message.*`` events go.
        host: address to bind.
        port: port to bind (0: the kernel picks; see :attr:`address`).
        hostname: the name in the banner.
        relay_networks: client networks allowed to relay (CIDR strings).
        max_message_size: the largest message accepted, in bytes.
        tls_context: a server context to offer STARTTLS with, or None.
        on_queued: called with each new MID after its commit.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        clock: Clock,
        sink: EventSink,
        host: str = "127.0.0.1",
        port: int = 2525,
        hostname: str = "sts-engine.localdomain",
        relay_networks: Sequence[str] = DEFAULT_RELAY_NETWORKS,
        max_message_size: int = 10 * 1024 * 1024,
        tls_context: ssl.SSLContext | None = None,
        on_queued: Callable[[int], None] | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.sink = sink
        self.host, self.port, self.hostname = host, port, hostname
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in relay_networks
        )
        self.max_message_size = max_message_size
        self.tls_context = tls_context
        self.on_queued = on_queued
        self._server: asyncio.Server | None = None
        self._live: set[_Protocol] = set()
        self.address: tuple[str, int] = (host, port)

    async def __aenter__(self) -> Listener:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        await server.wait_closed()

    def _protocol(self) -> _Protocol:
        return _Protocol(
            self,
            hostname=self.hostname,
            ident="ESMTP sts-engine",
            data_size_limit=self.max_message_size,
            tls_context=self.tls_context,
            # RFC 6531: accept internationalised addresses; delivery sends the domain
            # in A-labels to servers without SMTPUTF8.
            enable_SMTPUTF8=True,
            timeout=300,
            loop=asyncio.get_running_loop(),
        )

    def _emit(self, code: str, level: str = "info", **fields: object) -> None:
        self.sink.emit(LogEvent(code, fields, level, self.clock.now()))

    def connected(self, proto: _Protocol, transport: asyncio.BaseTransport) -> int:
        """A client connected: allocate its ICID and log it."""
        self._live.add(proto)
        icid = self.queue.next_icid()
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self._emit("listener.connect", icid=icid, interface=sock[0], address=peer[0])
        return icid

    def disconnected(self, proto: _Protocol) -> None:
        """A client went away."""
        self._live.discard(proto)
        self._emit("listener.close", icid=proto.icid)

    def _may_relay(self, peer: object) -> bool:
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        try:
            address = ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    # -- aiosmtpd handler hooks ------------------------------------------------------

    async def handle_RCPT(
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept a recipient only from a relay network and with a domain."""
        if not self._may_relay(session.peer):
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
        except sqlite3.Error as exc:
            self._emit("listener.queue.error", "warning", icid=server.icid, detail=str(exc))
            return "451 4.3.0 Queue unavailable, try again later"
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
