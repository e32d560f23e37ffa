"""FakeDns: the simulated world's DNS, served over UDP and TCP on one loopback port.

Theory of operation
-------------------
FakeDns holds the world's zones, the behaviour rules and the query log; how one
query is answered lives in ``harness.world.dns.answer`` (sans-IO), and the zone
data in ``harness.world.dns.zones``. This module is the I/O shell around them.

Both transports listen on one port of one loopback address: TCP is bound first
on port 0, then UDP on the port TCP got, retrying when UDP finds it taken. Both
are plain asyncio protocols in the caller's event loop (no threads). Delayed
replies are ``call_later`` timers, so no task is ever created. Teardown stops
listening, aborts open TCP connections, cancels pending timers and waits for
every transport's ``connection_lost``, so when ``__aexit__`` returns no socket is
left open.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType, TracebackType
from typing import Any, cast

from harness.world.dns.answer import DnsBehaviour, LoggedQuery, Rule, Transport, answer
from harness.world.dns.records import RData, ZoneError, canonical_name, check_loopback
from harness.world.dns.zones import DnssecStatus, Zone

__all__ = ["FakeDns"]

_BIND_ATTEMPTS = 20
_TEARDOWN_S = 1.0
_Send = Callable[[bytes], None]


class FakeDns:
    """An in-memory DNS world served on one loopback UDP+TCP port.

    Use as ``async with FakeDns(zones) as dns: host, port = dns.address``.
    The sockets are bound when ``__aenter__`` returns.

    Args:
        zones: the zones to serve, keyed by their apex (a later zone with the same
            apex replaces an earlier one).
        address: a loopback address to bind (127.0.0.0/8 or ``::1``).
        ad_requires_do: set AD only when the query had DO or AD set, as a validating
            resolver does (RFC 6840 §5.8). False sets AD on every secure answer.

    Raises:
        ZoneError: (a ValueError) ``address`` is not loopback.
    """

    def __init__(
        self,
        zones: Iterable[Zone] = (),
        *,
        address: str = "127.0.0.53",
        ad_requires_do: bool = True,
    ) -> None:
        self._host = check_loopback(address)
        self._ad_requires_do = ad_requires_do
        self._zones: dict[str, Zone] = {z.apex: z for z in zones}
        self._rules: dict[tuple[str, str], Rule] = {}
        self._replies: dict[tuple[bytes, Transport], tuple[bytes | None, int, LoggedQuery]] = {}
        self._log: list[LoggedQuery] = []
        self._seq = itertools.count()
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._udp: _Udp | None = None
        self._tcp: set[_Tcp] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._errors: list[Exception] = []
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> FakeDns:
        if self._server is not None:
            raise RuntimeError("FakeDns is already running")
        loop = asyncio.get_running_loop()
        for _ in range(_BIND_ATTEMPTS):
            server = await loop.create_server(lambda: _Tcp(self), self._host, 0)
            port = server.sockets[0].getsockname()[1]
            try:
                _, udp = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(self._host, port)
                )
            except OSError as exc:
                server.close()
                await server.wait_closed()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._server, self._udp, self._port = server, udp, port
            return self
        raise RuntimeError(f"no port free for both UDP and TCP on {self._host!r}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, udp = self._server, self._udp
        assert server is not None and udp is not None, "FakeDns exited without entering"
        self._closing = True
        # Stop accepting, then yield once so that accepts already under way attach
        # their transports while the server is still open: asyncio (3.11, 3.12) leaks
        # the accepted socket when a transport is made for a closed server. Protocols
        # built from now on are born doomed and abort in connection_made.
        for sock in server.sockets:
            asyncio.get_running_loop().remove_reader(sock.fileno())
        await asyncio.sleep(0)
        server.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        closing = [udp.closed, *(conn.closed for conn in self._tcp)]
        for conn in list(self._tcp):
            conn.doom()
        if udp.transport is not None:
            udp.transport.close()
        # Bounded: a protocol whose transport never got made would never report.
        await asyncio.wait(closing, timeout=_TEARDOWN_S)
        await server.wait_closed()
        self._server = self._udp = self._port = None
        self._closing = False
        if self._errors and exc_type is None:
            raise ExceptionGroup("FakeDns failed while answering", self._errors)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) both UDP and TCP listen on.

        Raises:
            RuntimeError: FakeDns is not running.
        """
        if self._port is None:
            raise RuntimeError("FakeDns.address is known only inside `async with`")
        return self._host, self._port

    # -- world data ----------------------------------------------------------------

    @property
    def zones(self) -> Mapping[str, Zone]:
        """The zones served, keyed by apex (read-only view)."""
        return MappingProxyType(self._zones)

    def set_zone(self, zone: Zone) -> None:
        """Add ``zone``, or replace the zone with the same apex."""
        self._zones[zone.apex] = zone
        self._replies.clear()

    def remove_zone(self, apex: str) -> None:
        """Stop serving the zone at ``apex`` (its names become NXDOMAIN)."""
        self._zones.pop(canonical_name(apex), None)
        self._replies.clear()

    def zone_for(self, name: str) -> Zone | None:
        """The zone that holds ``name`` (longest matching apex), or None."""
        labels = canonical_name(name).split(".")
        for i in range(len(labels) + 1):
            zone = self._zones.get(".".join(labels[i:]))
            if zone is not None:
                return zone
        return None

    def _owning_zone(self, name: str) -> Zone:
        zone = self.zone_for(name)
        if zone is None:
            raise ZoneError(f"no zone holds {name!r}; zones: {sorted(self._zones)}")
        return zone

    def set_rrset(self, name: str, rrtype: str, *rdata: RData, ttl: int | None = None) -> None:
        """Replace the RRset (``name``, ``rrtype``) with ``rdata``; none removes it.

        Raises:
            ZoneError: no zone holds ``name``, or an RDATA is not of ``rrtype``.
        """
        rrtype = rrtype.upper()
        zone = self._owning_zone(name).without(name, rrtype)
        for rd in rdata:
            if rd.rrtype != rrtype:
                raise ZoneError(f"set_rrset({name!r}, {rrtype!r}) given {rd.rrtype} data {rd!r}")
            zone = zone.add(name, rd, ttl)
        self._zones[zone.apex] = zone
        self._replies.clear()

    def set_status(self, name: str, rrtype: str | None, status: DnssecStatus | str) -> None:
        """Give the RRset (``name``, ``rrtype``; None: every type) its own DNSSEC status.

        Raises:
            ZoneError: no zone holds ``name``.
            ValueError: unknown status.
        """
        zone = self._owning_zone(name).with_status(name, rrtype, status)
        self._zones[zone.apex] = zone
        self._replies.clear()

    # -- behaviours ------------------------------------------------------------------

    def set_behaviour(
        self,
        name: str,
        behaviour: DnsBehaviour | str,
        rrtype: str | None = None,
        *,
        delay_ms: int = 0,
    ) -> None:
        """Make queries for ``name`` (of ``rrtype``; None means every type) misbehave.

        A (name, type) rule beats a whole-name rule. Rules apply to every name met
        while following a CNAME chain, not only to the query name.

        Raises:
            ValueError: unknown behaviour or negative delay.
        """
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms!r}")
        key = (canonical_name(name), "*" if rrtype is None else rrtype.upper())
        self._rules[key] = Rule(DnsBehaviour(behaviour), delay_ms)
        self._replies.clear()

    def clear_behaviour(self, name: str, rrtype: str | None = None) -> None:
        """Remove the rule for ``name`` (and ``rrtype``; None is the whole-name rule)."""
        self._rules.pop((canonical_name(name), "*" if rrtype is None else rrtype.upper()), None)
        self._replies.clear()

    def clear_behaviours(self) -> None:
        """Remove every rule."""
        self._rules.clear()
        self._replies.clear()

    # -- query log -------------------------------------------------------------------

    def queries(
        self, name: str | None = None, qtype: str | None = None, transport: str | None = None
    ) -> list[LoggedQuery]:
        """Logged queries, oldest first, filtered by any of name, type and transport."""
        cname = None if name is None else canonical_name(name)
        return [
            q
            for q in self._log
            if (cname is None or q.qname == cname)
            and (qtype is None or q.qtype == qtype.upper())
            and (transport is None or q.transport == transport)
        ]

    def count(
        self, name: str | None = None, qtype: str | None = None, transport: str | None = None
    ) -> int:
        """How many logged queries match (see :meth:`queries`)."""
        return len(self.queries(name, qtype, transport))

    def assert_queried(self, name: str, qtype: str | None = None) -> None:
        """Fail with the queries actually seen unless ``name`` (``qtype``) was queried.

        Raises:
            AssertionError: no such query was logged.
        """
        if not self.count(name, qtype):
            seen = sorted({f"{q.qname} {q.qtype}" for q in self._log})
            raise AssertionError(f"no query for {name!r} {qtype or '*'}; seen: {seen}")

    def clear_log(self) -> None:
        """Forget logged queries (sequence numbers keep counting)."""
        self._log.clear()

    # -- I/O shell ----------------------------------------------------------------------

    def respond(self, wire: bytes, transport: Transport) -> tuple[bytes | None, int]:
        """Answer one wire-format query and log it, without any I/O.

        Returns:
            The reply bytes (None: send nothing) and the delay in milliseconds.
        """
        seq = next(self._seq)
        # A reply depends on the query's bytes after its ID and on the transport, and on
        # the zones and rules, which every mutation below resets the cache for. Repeated
        # questions (the same names in every delivery) skip dnslib's encoding; the ID of
        # the cached reply is replaced by this query's.
        key = (wire[2:], transport)
        cached = self._replies.get(key) if len(wire) >= 12 else None
        if cached is not None:
            reply, delay_ms, entry = cached
            self._log.append(replace(entry, seq=seq))
            return (wire[:2] + reply[2:] if reply else reply), delay_ms
        result = answer(
            wire,
            transport,
            seq,
            zone_for=self.zone_for,
            rule_for=self._rule,
            ad_requires_do=self._ad_requires_do,
        )
        self._log.append(result.entry)
        if len(wire) >= 12 and (result.wire is None or result.wire[:2] == wire[:2]):
            if len(self._replies) > 4096:
                self._replies.clear()
            self._replies[key] = (result.wire, result.delay_ms, result.entry)
        return result.wire, result.delay_ms

    def _rule(self, name: str, qtype: str) -> Rule | None:
        return self._rules.get((name, qtype)) or self._rules.get((name, "*"))

    def _serve(self, wire: bytes, transport: Transport, send: _Send) -> None:
        try:
            reply, delay_ms = self.respond(wire, transport)
        except Exception as exc:  # a bug here must not kill the transport; re-raised on exit
            self._errors.append(exc)
            return
        if reply is None:
            return
        if not delay_ms:
            send(reply)
            return

        def fire() -> None:
            self._timers.discard(timer)
            send(reply)

        timer = asyncio.get_running_loop().call_later(delay_ms / 1000, fire)
        self._timers.add(timer)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, dns: FakeDns) -> None:
        self._dns = dns
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._dns._serve(data, Transport.UDP, lambda reply: self._send(reply, addr))

    def _send(self, reply: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors about clients that went away are not ours to report

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Tcp(asyncio.Protocol):
    # RFC 1035 §4.2.2 / RFC 7766: two-octet length prefix, several queries per connection.
    # Registered when built (before connection_made) so teardown cannot miss one.
    def __init__(self, dns: FakeDns) -> None:
        self._dns = dns
        self._buffer = bytearray()
        self._doomed = dns._closing
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        dns._tcp.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._doomed:
            self.transport.abort()

    def doom(self) -> None:
        self._doomed = True
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if len(self._buffer) < 2 + size:
                return
            message = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
            self._dns._serve(message, Transport.TCP, self._send)

    def _send(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dns._tcp.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
