"""One connected UDP socket per resolver, shared by concurrent queries.

Why this exists: ``dns.asyncquery.udp`` opens a new socket and a new asyncio
datagram endpoint for every query, which costs more than encoding and
decoding the message. A sender asks its trusted local resolver a handful of
questions per delivery, thousands of times a minute, so the socket is kept and
replies are matched to waiting queries by message ID and question (dnspython
stays the codec). The socket is watched with the loop's ``add_reader`` and read
until it is empty; asyncio's datagram transport read one datagram per wake-up,
which was a sixth of a warm policy check's CPU (bench/bench_resolve.py).

Kept only for *trusted* resolvers (loopback by default, DANE-1): a fixed source
port gives an off-path attacker less to guess than a fresh port per query, which
matters on a network path but not on loopback. Untrusted resolvers keep
dnspython's per-query sockets.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket

import dns.exception
import dns.message

__all__ = ["UdpChannel", "check_reply"]


class _Wait:
    """One query waiting for its reply: when its next copy is due, or its end.

    RFC 1123 §6.1.3.3: a resolver retransmits a UDP query whose reply did not come
    (a datagram can be lost), backing off exponentially, within an overall time limit.
    Each copy keeps the message ID, so a reply to any of them answers the query.
    """

    __slots__ = ("datagram", "deadline", "due", "future", "interval", "last", "timeout")

    def __init__(
        self,
        now: float,
        datagram: bytes,
        future: asyncio.Future[bytes],
        timeout: float,
        retransmit: float,
    ) -> None:
        self.datagram, self.future, self.timeout = datagram, future, timeout
        self.deadline = now + timeout
        self.interval = retransmit
        # ``due``: when the next copy goes, or (``last``) when the wait ends.
        self.last = not 0 < retransmit < timeout
        self.due = self.deadline if self.last else now + retransmit

    def step(self, now: float, channel: UdpChannel) -> None:
        """``due`` has come: send the next copy and back off, or end the wait."""
        if self.last:
            self.future.set_exception(dns.exception.Timeout(timeout=self.timeout))  # type: ignore[no-untyped-call]
            return
        channel.send(self.datagram)
        self.interval *= 2
        self.due = now + self.interval
        if self.due >= self.deadline:
            self.due, self.last = self.deadline, True


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


#: Datagrams read per readiness event at most, so that a flood cannot hold the loop.
_DRAIN = 64
#: Datagrams kept while the kernel's send buffer is full; beyond, a datagram is dropped
#: (as the network may drop it): its query is sent again or times out.
_BACKLOG = 1024


class UdpChannel:
    """Queries to one ``host:port`` over one connected UDP socket.

    The socket is driven with the loop's ``add_reader`` rather than a datagram
    transport: asyncio's transport reads one datagram per readiness event (one
    ``epoll_wait`` per reply), and when concurrent queries' replies arrive together
    this reads them all at once, up to ``_DRAIN``. A connected UDP socket only
    receives from its peer (the kernel drops the rest), as the transport did.

    Args:
        host: resolver address (an IP address).
        port: resolver port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[bytes] = collections.deque()
        self._id_pool, self._id_at = b"", 0
        # One timer for all waiting queries, at the earliest ``due`` (or before it): a
        # timer per query cost more than the rest of a cached answer's lookup.
        self._waits: dict[int, _Wait] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        # The resolver is an IP address (parse_resolver); AI_NUMERICHOST never looks up.
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.connect(address)
            self.attach(sock, loop)
        except BaseException:
            sock.close()
            raise

    def attach(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """Use the connected datagram socket ``sock`` on ``loop`` (the channel owns it now)."""
        self._close()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)
        self._sock, self._loop = sock, loop

    def _close(self) -> None:
        sock, loop = self._sock, self._loop
        self._sock = None
        self._backlog.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if sock is None:
            return
        if loop is not None and not loop.is_closed():
            loop.remove_reader(sock.fileno())
            loop.remove_writer(sock.fileno())
        sock.close()

    def _readable(self) -> None:
        sock, pending = self._sock, self.pending
        if sock is None:
            return
        for _ in range(_DRAIN):
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable on the connected socket
                self.fail(exc)
                return
            if len(data) >= 2:
                future = pending.pop(int.from_bytes(data[:2], "big"), None)
                if future is not None and not future.done():
                    future.set_result(data)

    def send(self, datagram: bytes) -> None:
        """Send ``datagram``, or keep it until the socket can take it."""
        sock = self._sock
        if sock is None:
            return
        if self._backlog:
            if len(self._backlog) < _BACKLOG:
                self._backlog.append(datagram)
            return
        try:
            sock.send(datagram)
        except (BlockingIOError, InterruptedError):
            self._backlog.append(datagram)
            assert self._loop is not None
            self._loop.add_writer(sock.fileno(), self._writable)
        except OSError as exc:
            self.fail(exc)

    def _writable(self) -> None:
        sock, backlog = self._sock, self._backlog
        while sock is not None and backlog:
            try:
                sock.send(backlog[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                backlog.clear()
                self.fail(exc)
                break
            backlog.popleft()
        if sock is not None and self._loop is not None:
            self._loop.remove_writer(sock.fileno())

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        """Have the timer fire by ``at`` (a timer set for earlier already does)."""
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(at, self._tick, loop), at

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Step every wait that is due, then set the timer for the next one."""
        self._timer = None
        now = loop.time()
        soonest = None
        for wait in list(self._waits.values()):
            if wait.future.done():
                continue
            if wait.due <= now:
                wait.step(now, self)
                if wait.future.done():
                    continue
            if soonest is None or wait.due < soonest:
                soonest = wait.due
        if soonest is not None:
            self._arm(loop, soonest)

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
        loop = asyncio.get_running_loop()
        if self._sock is None or self._loop is not loop:
            self._open(loop)
        qid = self._next_id()
        pending = self.pending
        while qid in pending:
            qid = self._next_id()
        future: asyncio.Future[bytes] = loop.create_future()
        pending[qid] = future
        datagram = qid.to_bytes(2, "big") + wire[2:]
        wait = self._waits[qid] = _Wait(loop.time(), datagram, future, timeout, retransmit)
        self._arm(loop, wait.due)
        try:
            self.send(datagram)
            return await future
        finally:
            # Only our own entries: once the reply has taken this ID out of ``pending``,
            # a query started before this task resumed may have drawn the same ID.
            if self.pending.get(qid) is future:
                del self.pending[qid]
            if self._waits.get(qid) is wait:
                del self._waits[qid]

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
        """Close the socket; waiting queries fail."""
        self._close()
        self.fail(ConnectionError("resolver socket closed"))
