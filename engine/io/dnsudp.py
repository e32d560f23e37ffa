"""One connected UDP socket per resolver, shared by concurrent queries.

Why this exists: ``dns.asyncquery.udp`` opens a new socket and a new asyncio
datagram endpoint for every query, which costs more than encoding and
decoding the message. A sender asks its trusted local resolver a handful of
questions per delivery, thousands of times a minute, so the socket is kept and
replies are matched to waiting queries by message ID and question (dnspython
stays the codec).

Kept only for *trusted* resolvers (loopback by default, DANE-1): a fixed source
port gives an off-path attacker less to guess than a fresh port per query, which
matters on a network path but not on loopback. Untrusted resolvers keep
dnspython's per-query sockets.
"""

from __future__ import annotations

import asyncio
import os

import dns.exception
import dns.message

__all__ = ["UdpChannel", "check_reply"]


class _Wait:
    """What happens while a query waits for its reply: copies, then the timeout.

    RFC 1123 §6.1.3.3: a resolver retransmits a UDP query whose reply did not come
    (a datagram can be lost), backing off exponentially, within an overall time limit.
    Each copy keeps the message ID, so a reply to any of them answers the query. One
    timer at a time: the next copy, or the end of the wait, whichever comes first.
    """

    __slots__ = ("_datagram", "_deadline", "_future", "_handle", "_loop", "_timeout", "_transport")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.DatagramTransport,
        datagram: bytes,
        future: asyncio.Future[bytes],
        timeout: float,
        retransmit: float,
    ) -> None:
        self._loop, self._transport, self._datagram = loop, transport, datagram
        self._future, self._timeout = future, timeout
        self._deadline = loop.time() + timeout
        self._handle: asyncio.TimerHandle
        if 0 < retransmit < timeout:
            self._handle = loop.call_later(retransmit, self._resend, retransmit)
        else:
            self._handle = loop.call_at(self._deadline, self._expire)

    def _resend(self, interval: float) -> None:
        if self._future.done():
            return
        if not self._transport.is_closing():
            self._transport.sendto(self._datagram)
        interval *= 2
        when = self._loop.time() + interval
        if when < self._deadline:
            self._handle = self._loop.call_at(when, self._resend, interval)
        else:
            self._handle = self._loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        if not self._future.done():
            self._future.set_exception(dns.exception.Timeout(timeout=self._timeout))  # type: ignore[no-untyped-call]

    def cancel(self) -> None:
        self._handle.cancel()


def check_reply(q: dns.message.Message, wire: bytes) -> dns.message.Message:
    """Decode ``wire`` with dnspython and check it answers ``q`` (same ID and question).

    Raises:
        dns.exception.DNSException: undecodable, or not a reply to ``q``.
    """
    reply = dns.message.from_wire(wire, ignore_trailing=True)
    if not q.is_response(reply):
        raise dns.exception.FormError(  # type: ignore[no-untyped-call]
            "reply does not answer the question asked"
        )
    return reply


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, channel: UdpChannel) -> None:
        self._channel = channel

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 2:
            return
        future = self._channel.pending.pop(int.from_bytes(data[:2], "big"), None)
        if future is not None and not future.done():
            future.set_result(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        self._channel.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel.fail(exc or ConnectionError("resolver socket closed"))
        self._channel.transport = None
        closed = self._channel.closed
        if closed is not None and not closed.done():
            closed.set_result(None)


class UdpChannel:
    """Queries to one ``host:port`` over one connected UDP socket.

    Args:
        host: resolver address.
        port: resolver port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed: asyncio.Future[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._id_pool, self._id_at = b"", 0

    async def _ensure(self) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # concurrent first queries must share one socket
            if self.transport is None or self._loop is not loop or self.transport.is_closing():
                self.closed = loop.create_future()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), remote_addr=(self.host, self.port)
                )
                self.transport, self._loop = transport, loop
            return self.transport

    def _next_id(self) -> int:
        """An unpredictable message ID (RFC 5452 §9.2), from a pool of OS randomness.

        One ``os.urandom`` call serves 2048 IDs; a ``SystemRandom`` call per query
        cost as much as reading the whole reply.
        """
        at = self._id_at
        if at >= len(self._id_pool):
            self._id_pool, at = os.urandom(4096), 0
        self._id_at = at + 2
        return int.from_bytes(self._id_pool[at : at + 2], "big")

    def fail(self, exc: BaseException) -> None:
        """Fail every waiting query (the socket broke)."""
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    async def exchange(self, wire: bytes, timeout: float, retransmit: float = 0.0) -> bytes:
        """Send the query ``wire`` under a fresh message ID; return the reply with that ID.

        Args:
            wire: the query, any message ID.
            timeout: seconds until the exchange fails.
            retransmit: seconds before the query is first sent again if no reply came,
                doubling after each copy, while within ``timeout``; 0 never resends.

        Raises:
            dns.exception.Timeout: no matching reply within ``timeout``.
            OSError: the socket failed.
        """
        transport = self.transport
        loop = asyncio.get_running_loop()
        if transport is None or self._loop is not loop or transport.is_closing():
            transport = await self._ensure()
        qid = self._next_id()
        while qid in self.pending:
            qid = self._next_id()
        future: asyncio.Future[bytes] = loop.create_future()
        self.pending[qid] = future
        datagram = qid.to_bytes(2, "big") + wire[2:]
        # Timer handles rather than asyncio.timeout(): the same effect for a single
        # await, at a fraction of the cost on the path every warm delivery takes.
        wait = _Wait(loop, transport, datagram, future, timeout, retransmit)
        try:
            transport.sendto(datagram)
            return await future
        finally:
            wait.cancel()
            self.pending.pop(qid, None)

    async def query(
        self, q: dns.message.Message, timeout: float, retransmit: float = 0.0
    ) -> dns.message.Message:
        """Send ``q`` and return the matching reply.

        Raises:
            dns.exception.Timeout: no matching reply within ``timeout``.
            dns.exception.DNSException: the reply could not be decoded, or does not
                answer ``q`` (wrong question).
            OSError: the socket failed.
        """
        wire = await self.exchange(q.to_wire(), timeout, retransmit)
        q.id = int.from_bytes(wire[:2], "big")
        return check_reply(q, wire)

    async def aclose(self) -> None:
        """Close the socket and wait until it is closed; waiting queries fail."""
        transport, closed = self.transport, self.closed
        if transport is None or closed is None:
            return
        transport.close()
        if self._loop is asyncio.get_running_loop():
            await closed
