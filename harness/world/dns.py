"""FakeDns: a validating-resolver look-alike for the simulated world, over UDP and TCP.

Theory of operation
-------------------
The engine talks to FakeDns as it would to a trusted validating recursive
resolver on loopback (RFC 7672 §2.1.1): it sends queries with DO set and reads
the AD bit. FakeDns does not sign anything; each RRset's DNSSEC status comes
from its zone (``harness.world.zones``) and is turned into what such a resolver
would say: secure data gets AD=1, insecure data AD=0, bogus data SERVFAIL with
an EDE option 6 (RFC 8914 §4.7).

One query is handled in three steps, all synchronous and in memory:

1. ``respond()`` (sans-IO) parses the wire query with dnslib.
2. ``_walk()`` follows the question through the zones the way a recursive
   resolver would, CNAME by CNAME, consulting the behaviour rules at every name
   on the way. The first rule that is not ``answer`` decides the outcome;
   ``delay_ms`` is the largest delay of any rule met.
3. ``_reply()`` encodes the outcome: the answer chain, a synthetic SOA for
   negative answers, OPT (only when the query had one), AD, TC.

The I/O shell is two asyncio protocols on one port of one loopback address:
TCP is bound first on port 0, then UDP on the port TCP got, retrying when UDP
finds it taken. Delayed replies are ``call_later`` timers, so no task is ever
created. Teardown stops listening, aborts open TCP connections, cancels
pending timers and waits for every transport's ``connection_lost``, so when
``__aexit__`` returns no socket is left open.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType, TracebackType
from typing import Any

import dnslib

from harness.world.zones import (
    AAAA,
    CNAME,
    MX,
    TLSA,
    TXT,
    A,
    DnssecStatus,
    RData,
    Record,
    Zone,
    ZoneError,
    canonical_name,
    check_loopback,
)

__all__ = ["Behaviour", "FakeDns", "LoggedQuery", "Transport"]


class Behaviour(StrEnum):
    """How FakeDns misbehaves for a (name, type), or for every type at a name."""

    ANSWER = "answer"  # answer normally (useful with delay_ms)
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    DROP = "drop"  # no reply at all: the client times out
    TRUNCATE = "truncate"  # UDP: TC=1 and no records; TCP: the full answer
    GARBAGE = "garbage"  # bytes that are not a DNS message


class Transport(StrEnum):
    """The transport a query arrived on."""

    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class LoggedQuery:
    """One query as FakeDns saw and answered it.

    Attributes:
        seq: 0, 1, 2 ... in arrival order.
        qname: canonical query name (lower case, no trailing dot).
        qtype: type mnemonic, e.g. ``"TXT"``, or ``"TYPE65280"``.
        transport: ``udp`` or ``tcp``.
        do: the query's EDNS DO bit.
        rcode: the rcode sent (``"NOERROR"``, ``"NXDOMAIN"`` ...); None when nothing or
            garbage was sent.
        ad: the AD bit sent.
        tc: the TC bit sent.
        answers: the answer section in presentation format.
        behaviour: the rule that applied, if any.
    """

    seq: int
    qname: str
    qtype: str
    transport: Transport
    do: bool
    rcode: str | None
    ad: bool
    tc: bool
    answers: tuple[str, ...]
    behaviour: Behaviour | None


@dataclass(frozen=True, slots=True)
class _Rule:
    behaviour: Behaviour
    delay_ms: int


@dataclass(slots=True)
class _Outcome:
    rcode: int = 0
    chain: list[tuple[dnslib.DNSLabel, Record]] = field(default_factory=list)
    statuses: list[tuple[DnssecStatus, Zone | None]] = field(default_factory=list)
    soa: Zone | None = None  # zone whose SOA goes in the authority section
    behaviour: Behaviour | None = None
    delay_ms: int = 0


_MAX_UDP = 1232  # our EDNS buffer size (DNS flag day 2020)
_MAX_CHAIN = 16
_EDE, _EDE_DNSSEC_BOGUS = 15, 6  # RFC 8914 §4: EXTENDED-ERROR option, info-code 6
_GARBAGE = b"\xff\xfe this is not a DNS message \x00\x00"
_BIND_ATTEMPTS = 20
_Send = Callable[[bytes], None]


def _rdata(rd: RData) -> dnslib.RD:
    match rd:
        case A(address) | AAAA(address):
            return dnslib.A(address) if isinstance(rd, A) else dnslib.AAAA(address)
        case MX(preference, exchange):
            return dnslib.MX(exchange + ".", preference)
        case TXT(strings):
            return dnslib.TXT(list(strings))
        case CNAME(target):
            return dnslib.CNAME(target + ".")
        case TLSA(usage, selector, mtype, data):
            return dnslib.TLSA(usage, selector, mtype, data)
    raise AssertionError(f"unhandled RDATA {rd!r}")


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
        self._rules: dict[tuple[str, str], _Rule] = {}
        self._log: list[LoggedQuery] = []
        self._seq = itertools.count()
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._udp: _Udp | None = None
        self._tcp: set[_Tcp] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._errors: list[Exception] = []

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
        server.close()
        await asyncio.sleep(0)  # let just-accepted connections reach connection_made
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        closing = [udp.closed, *(conn.closed for conn in self._tcp)]
        for conn in list(self._tcp):
            conn.transport.abort()
        if udp.transport is not None:
            udp.transport.close()
        await asyncio.gather(*closing)
        await server.wait_closed()
        self._server = self._udp = None
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

    def remove_zone(self, apex: str) -> None:
        """Stop serving the zone at ``apex`` (its names become NXDOMAIN)."""
        self._zones.pop(canonical_name(apex), None)

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

    def set_status(self, name: str, rrtype: str, status: DnssecStatus | str) -> None:
        """Give the RRset (``name``, ``rrtype``) its own DNSSEC status."""
        zone = self._owning_zone(name).with_status(name, rrtype, status)
        self._zones[zone.apex] = zone

    # -- behaviours ------------------------------------------------------------------

    def set_behaviour(
        self,
        name: str,
        behaviour: Behaviour | str,
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
        self._rules[key] = _Rule(Behaviour(behaviour), delay_ms)

    def clear_behaviour(self, name: str, rrtype: str | None = None) -> None:
        """Remove the rule for ``name`` (and ``rrtype``; None is the whole-name rule)."""
        self._rules.pop((canonical_name(name), "*" if rrtype is None else rrtype.upper()), None)

    def clear_behaviours(self) -> None:
        """Remove every rule."""
        self._rules.clear()

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

    # -- answering (sans-IO) -------------------------------------------------------------

    def respond(self, wire: bytes, transport: Transport) -> tuple[bytes | None, int]:
        """Answer one wire-format query and log it.

        Returns:
            The reply bytes (None: send nothing) and the delay in milliseconds.
        """
        query = _parse(wire)
        if query is None:
            self._log_query("", "", transport, False, "FORMERR", False, False, (), None)
            # RFC 1035 §4.1.1: FORMERR, echoing the ID when there is a header.
            return (wire[:2] + b"\x80\x01" + bytes(8) if len(wire) >= 12 else None), 0
        q = query.q
        qname, qtype = _name(q.qname), dnslib.QTYPE[q.qtype]
        opt = next((rr for rr in query.ar if rr.rtype == dnslib.QTYPE.OPT), None)
        do = bool(opt is not None and opt.edns_do)
        out = _Outcome()
        if q.qclass != 1:  # IN only
            out.rcode = dnslib.RCODE.REFUSED
        else:
            self._walk(out, q.qname, qname, qtype, transport)
        if out.behaviour in (Behaviour.DROP, Behaviour.GARBAGE):
            self._log_query(qname, qtype, transport, do, None, False, False, (), out.behaviour)
            if out.behaviour is Behaviour.DROP:
                return None, out.delay_ms
            return struct.pack("!H", query.header.id) + _GARBAGE, out.delay_ms
        reply = self._reply(query, opt, out)
        wire_out = reply.pack()
        limit = max(512, min(opt.edns_len, _MAX_UDP)) if opt is not None else 512
        if transport is Transport.UDP and (
            out.behaviour is Behaviour.TRUNCATE or len(wire_out) > limit
        ):
            # RFC 2181 §9 / RFC 7766 §5: TC=1 without records sends the client to TCP.
            reply.rr, reply.auth, reply.header.tc, reply.header.ad = [], [], 1, 0
            wire_out = reply.pack()
        answers = tuple(
            f"{owner} {rec.ttl} IN {rec.rdata.rrtype} {rec.rdata.text()}"
            for owner, rec in (() if reply.header.tc else out.chain)
        )
        rcode = dnslib.RCODE[reply.header.rcode]
        h = reply.header
        self._log_query(
            qname, qtype, transport, do, rcode, bool(h.ad), bool(h.tc), answers, out.behaviour
        )
        return wire_out, out.delay_ms

    def _log_query(self, *fields: Any) -> None:
        self._log.append(LoggedQuery(next(self._seq), *fields))

    def _rule(self, name: str, qtype: str) -> _Rule | None:
        return self._rules.get((name, qtype)) or self._rules.get((name, "*"))

    def _walk(
        self, out: _Outcome, owner: dnslib.DNSLabel, name: str, qtype: str, transport: Transport
    ) -> None:
        for _ in range(_MAX_CHAIN):
            act = Behaviour.ANSWER
            rule = self._rule(name, qtype)
            if rule is not None and not (
                rule.behaviour is Behaviour.TRUNCATE and transport is Transport.TCP
            ):
                out.delay_ms = max(out.delay_ms, rule.delay_ms)
                act = rule.behaviour
                if out.behaviour in (None, Behaviour.ANSWER):
                    out.behaviour = act
            if act in (Behaviour.DROP, Behaviour.GARBAGE, Behaviour.TRUNCATE):
                return
            if act in (Behaviour.SERVFAIL, Behaviour.REFUSED):
                out.rcode = getattr(dnslib.RCODE, act.upper())
                return
            zone = self.zone_for(name)
            if zone is None:  # outside every zone: nothing exists there
                out.rcode = dnslib.RCODE.NXDOMAIN
                out.statuses.append((DnssecStatus.INSECURE, None))
                return
            found = zone.lookup(name, qtype)
            if act in (Behaviour.NXDOMAIN, Behaviour.NODATA):
                kind, status = act.value, zone.status_of(name, qtype)
            else:
                kind, status = found.kind, found.status
            out.statuses.append((status, zone))
            if kind == "cname":
                cname = found.records[0]
                assert isinstance(cname.rdata, CNAME)
                out.chain.append((owner, cname))
                name, owner = cname.rdata.target, dnslib.DNSLabel(cname.rdata.target + ".")
                continue
            if kind == "data":
                out.chain.extend((owner, r) for r in found.records)
                return
            out.rcode = dnslib.RCODE.NXDOMAIN if kind == "nxdomain" else 0
            out.soa = zone
            return
        out.rcode, out.chain = dnslib.RCODE.SERVFAIL, []  # CNAME loop or over-long chain

    def _reply(self, query: dnslib.DNSRecord, opt: dnslib.RR | None, out: _Outcome) -> Any:
        ede = False
        bogus = [z for s, z in out.statuses if s is DnssecStatus.BOGUS]
        if bogus and not query.header.cd:  # RFC 4035 §3.2.2: CD=1 turns validation off
            out.rcode, out.chain, out.soa = dnslib.RCODE.SERVFAIL, [], None
            ede = bogus[0] is not None and bogus[0].ede
        want_ad = not self._ad_requires_do or query.header.ad or (opt is not None and opt.edns_do)
        secure = bool(out.statuses) and all(s is DnssecStatus.SECURE for s, _ in out.statuses)
        header = dnslib.DNSHeader(
            id=query.header.id, bitmap=0, qr=1, ra=1, rd=query.header.rd, cd=query.header.cd
        )
        header.rcode = out.rcode
        # RFC 4035 §3.2.3 / RFC 6840 §5.8: AD only for data that validated as secure.
        header.ad = int(secure and want_ad and out.rcode in (0, dnslib.RCODE.NXDOMAIN))
        reply = dnslib.DNSRecord(header, q=query.q)
        for owner, rec in out.chain:
            rtype = getattr(dnslib.QTYPE, rec.rdata.rrtype)
            reply.add_answer(dnslib.RR(owner, rtype, ttl=rec.ttl, rdata=_rdata(rec.rdata)))
        if out.soa is not None:  # RFC 2308 §3: negative answers carry the SOA
            apex = out.soa.apex + "."
            soa = dnslib.SOA("ns." + apex, "hostmaster." + apex, (1, 3600, 600, 86400, 300))
            reply.add_auth(dnslib.RR(apex, dnslib.QTYPE.SOA, ttl=300, rdata=soa))
        if opt is not None:  # RFC 6891 §7: OPT in the reply only if the query had one
            opts = [dnslib.EDNSOption(_EDE, struct.pack("!H", _EDE_DNSSEC_BOGUS))] if ede else []
            flags = "do" if opt.edns_do else ""
            reply.add_ar(dnslib.EDNS0(".", udp_len=_MAX_UDP, flags=flags, opts=opts))
        return reply

    # -- I/O shell ----------------------------------------------------------------------

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


def _parse(wire: bytes) -> Any:
    try:
        query = dnslib.DNSRecord.parse(wire)
    except (dnslib.DNSError, ValueError, IndexError, struct.error):
        return None
    if len(query.questions) != 1 or query.header.opcode != 0 or query.header.qr:
        return None
    return query


def _name(label: dnslib.DNSLabel) -> str:
    return b".".join(label.label).decode("ascii", "backslashreplace").lower()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, dns: FakeDns) -> None:
        self._dns = dns
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

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
    def __init__(self, dns: FakeDns) -> None:
        self._dns = dns
        self._buffer = bytearray()
        self.transport: asyncio.Transport
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._dns._tcp.add(self)

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
        if not self.transport.is_closing():
            self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dns._tcp.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
