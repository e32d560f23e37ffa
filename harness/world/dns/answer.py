"""How the fake DNS answers one query: the sans-IO core of ``FakeDns``.

Theory of operation
-------------------
FakeDns plays a trusted validating recursive resolver on loopback (RFC 7672
§2.1.1): the engine sends queries with DO set and reads the AD bit. Nothing is
signed; each RRset's DNSSEC status comes from its zone and is turned into what
such a resolver would say: secure data gets AD=1, insecure data AD=0, bogus data
SERVFAIL with an EDE option 6 (RFC 8914 §4.7).

:func:`answer` takes the query's bytes and returns the reply's bytes, in three
steps, all in memory:

1. parse with dnslib (unparseable input gets FORMERR);
2. :func:`_walk` follows the question through the zones as a recursive resolver
   would, CNAME by CNAME, consulting the behaviour rules at every name on the
   way. The first rule that is not ``answer`` decides the outcome; ``delay_ms``
   is the largest delay among the rules met;
3. :func:`_reply` encodes the outcome: the answer chain, a synthetic SOA for
   negative answers, OPT (only when the query had one), AD and TC.

AD is set only when every RRset in the answer (each CNAME link, the final data
or the denial) is secure, and, as in RFC 6840 §5.8, only when the query asked
with DO or AD (``ad_requires_do=False`` drops that condition).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import dnslib

from harness.world.dns.records import AAAA, CNAME, MX, TLSA, TXT, A, RData, Record
from harness.world.dns.zones import DnssecStatus, Zone

__all__ = ["Answer", "DnsBehaviour", "LoggedQuery", "Rule", "Transport", "answer"]


class DnsBehaviour(StrEnum):
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
class Rule:
    """A behaviour and an optional delay before the (mis)behaving reply is sent."""

    behaviour: DnsBehaviour
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class LoggedQuery:
    """One query as FakeDns saw and answered it.

    Attributes:
        seq: 0, 1, 2 ... in arrival order.
        qname: canonical query name (lower case, no trailing dot); ``""`` if malformed.
        qtype: type mnemonic, e.g. ``"TXT"`` or ``"TYPE65280"``; ``""`` if malformed.
        transport: ``udp`` or ``tcp``.
        do: the query's EDNS DO bit.
        rcode: the rcode sent (``"NOERROR"``, ``"NXDOMAIN"`` ...); None when nothing,
            or garbage, was sent.
        ad: the AD bit sent.
        tc: the TC bit sent.
        answers: the answer section sent, in presentation format.
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
    behaviour: DnsBehaviour | None


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send (``wire``; None sends nothing), after ``delay_ms``, and the log entry."""

    wire: bytes | None
    delay_ms: int
    entry: LoggedQuery


@dataclass(slots=True)
class _Outcome:
    rcode: int = 0
    chain: list[tuple[dnslib.DNSLabel, Record]] = field(default_factory=list)
    statuses: list[tuple[DnssecStatus, Zone | None]] = field(default_factory=list)
    soa: Zone | None = None  # zone whose SOA goes in the authority section
    behaviour: DnsBehaviour | None = None
    delay_ms: int = 0


ZoneFor = Callable[[str], Zone | None]
RuleFor = Callable[[str, str], Rule | None]

_MAX_UDP = 1232  # our EDNS buffer size (DNS flag day 2020)
_MAX_CHAIN = 16
_EDE, _EDE_DNSSEC_BOGUS = 15, 6  # RFC 8914 §4: EXTENDED-ERROR option, info-code 6
_GARBAGE = b"\xff\xfe this is not a DNS message \x00\x00"


def answer(
    wire: bytes,
    transport: Transport,
    seq: int,
    *,
    zone_for: ZoneFor,
    rule_for: RuleFor,
    ad_requires_do: bool = True,
) -> Answer:
    """Answer one wire-format query.

    Args:
        wire: the query as received (without the TCP length prefix).
        transport: where it came from; UDP replies may be truncated.
        seq: sequence number for the log entry.
        zone_for: the zone holding a canonical name, or None.
        rule_for: the behaviour rule for a canonical (name, type), or None.
        ad_requires_do: set AD only when the query had DO or AD (RFC 6840 §5.8).

    Returns:
        The reply, its delay and the log entry.
    """
    query = _parse(wire)
    if query is None:
        # RFC 1035 §4.1.1: FORMERR, echoing the ID when there is a header to echo.
        reply = wire[:2] + b"\x80\x01" + bytes(8) if len(wire) >= 12 else None
        bad = LoggedQuery(seq, "", "", transport, False, "FORMERR", False, False, (), None)
        return Answer(reply, 0, bad)
    q = query.q
    qname = b".".join(q.qname.label).decode("ascii", "backslashreplace").lower()
    qtype = dnslib.QTYPE[q.qtype]
    opt = next((rr for rr in query.ar if rr.rtype == dnslib.QTYPE.OPT), None)
    do = bool(opt is not None and opt.edns_do)
    out = _Outcome()
    if q.qclass != 1:  # IN only
        out.rcode = dnslib.RCODE.REFUSED
    else:
        _walk(out, q.qname, qname, qtype, transport, zone_for, rule_for)

    def entry(rcode: str | None, ad: bool = False, tc: bool = False) -> LoggedQuery:
        texts = tuple(
            f"{owner} {rec.ttl} IN {rec.rdata.rrtype} {rec.rdata.text()}"
            for owner, rec in (() if rcode is None or tc else out.chain)
        )
        return LoggedQuery(seq, qname, qtype, transport, do, rcode, ad, tc, texts, out.behaviour)

    if out.behaviour is DnsBehaviour.DROP:
        return Answer(None, out.delay_ms, entry(None))
    if out.behaviour is DnsBehaviour.GARBAGE:
        return Answer(struct.pack("!H", query.header.id) + _GARBAGE, out.delay_ms, entry(None))
    reply = _reply(query, opt, out, ad_requires_do)
    wire_out = reply.pack()
    limit = max(512, min(opt.edns_len, _MAX_UDP)) if opt is not None else 512
    if transport is Transport.UDP and (
        out.behaviour is DnsBehaviour.TRUNCATE or len(wire_out) > limit
    ):
        # RFC 2181 §9, RFC 7766 §5: TC=1 with no records sends the client to TCP.
        reply.rr, reply.auth, reply.header.tc, reply.header.ad = [], [], 1, 0
        wire_out = reply.pack()
    h = reply.header
    return Answer(wire_out, out.delay_ms, entry(dnslib.RCODE[h.rcode], bool(h.ad), bool(h.tc)))


def _parse(wire: bytes) -> Any:
    try:
        query = dnslib.DNSRecord.parse(wire)
    except (dnslib.DNSError, ValueError, IndexError, struct.error):
        return None
    if len(query.questions) != 1 or query.header.opcode != 0 or query.header.qr:
        return None
    return query


def _walk(
    out: _Outcome,
    owner: dnslib.DNSLabel,
    name: str,
    qtype: str,
    transport: Transport,
    zone_for: ZoneFor,
    rule_for: RuleFor,
) -> None:
    for _ in range(_MAX_CHAIN):
        act = DnsBehaviour.ANSWER
        rule = rule_for(name, qtype)
        # Truncation is a UDP matter: over TCP the full answer is given.
        if rule is not None and not (
            rule.behaviour is DnsBehaviour.TRUNCATE and transport is Transport.TCP
        ):
            out.delay_ms = max(out.delay_ms, rule.delay_ms)
            act = rule.behaviour
            if out.behaviour in (None, DnsBehaviour.ANSWER):
                out.behaviour = act
        if act in (DnsBehaviour.DROP, DnsBehaviour.GARBAGE, DnsBehaviour.TRUNCATE):
            return
        if act in (DnsBehaviour.SERVFAIL, DnsBehaviour.REFUSED):
            out.rcode = getattr(dnslib.RCODE, act.upper())
            return
        zone = zone_for(name)
        if zone is None:  # outside every zone: nothing exists there
            out.rcode = dnslib.RCODE.NXDOMAIN
            out.statuses.append((DnssecStatus.INSECURE, None))
            return
        found = zone.lookup(name, qtype)
        if act in (DnsBehaviour.NXDOMAIN, DnsBehaviour.NODATA):
            kind, status = act.value, zone.status_of(name, qtype)
        else:
            kind, status = found.kind, found.status
        out.statuses.append((status, zone))
        if kind == "cname":
            link = found.records[0]
            assert isinstance(link.rdata, CNAME)
            out.chain.append((owner, link))
            name, owner = link.rdata.target, dnslib.DNSLabel(link.rdata.target + ".")
            continue
        if kind == "data":
            out.chain.extend((owner, r) for r in found.records)
            return
        out.rcode = dnslib.RCODE.NXDOMAIN if kind == "nxdomain" else 0
        out.soa = zone
        return
    out.rcode, out.chain = dnslib.RCODE.SERVFAIL, []  # a CNAME loop or an over-long chain


def _reply(query: Any, opt: Any, out: _Outcome, ad_requires_do: bool) -> Any:
    ede = False
    bogus = [z for s, z in out.statuses if s is DnssecStatus.BOGUS]
    if bogus and not query.header.cd:  # RFC 4035 §3.2.2: CD=1 turns validation off
        out.rcode, out.chain, out.soa = dnslib.RCODE.SERVFAIL, [], None
        ede = bogus[0] is not None and bogus[0].ede
    asked = bool(query.header.ad) or (opt is not None and bool(opt.edns_do))
    secure = bool(out.statuses) and all(s is DnssecStatus.SECURE for s, _ in out.statuses)
    # Explicit flags: dnslib's reply() would copy the query's (AD included).
    header = dnslib.DNSHeader(
        id=query.header.id, bitmap=0, qr=1, ra=1, rd=query.header.rd, cd=query.header.cd
    )
    header.rcode = out.rcode
    # RFC 4035 §3.2.3, RFC 6840 §5.8: AD only for data that validated as secure.
    ok = out.rcode in (0, dnslib.RCODE.NXDOMAIN)
    header.ad = int(secure and ok and (asked or not ad_requires_do))
    reply = dnslib.DNSRecord(header, q=query.q)
    for owner, rec in out.chain:
        rtype = getattr(dnslib.QTYPE, rec.rdata.rrtype)
        reply.add_answer(dnslib.RR(owner, rtype, ttl=rec.ttl, rdata=_rdata(rec.rdata)))
    if out.soa is not None:  # RFC 2308 §3: negative answers carry the zone's SOA
        apex = out.soa.apex + "."
        soa = dnslib.SOA("ns." + apex, "hostmaster." + apex, (1, 3600, 600, 86400, 300))
        reply.add_auth(dnslib.RR(apex, dnslib.QTYPE.SOA, ttl=300, rdata=soa))
    if opt is not None:  # RFC 6891 §7: OPT in the reply only if the query had one
        opts = [dnslib.EDNSOption(_EDE, struct.pack("!H", _EDE_DNSSEC_BOGUS))] if ede else []
        flags = "do" if opt.edns_do else ""
        reply.add_ar(dnslib.EDNS0(".", udp_len=_MAX_UDP, flags=flags, opts=opts))
    return reply


def _rdata(rd: RData) -> Any:
    match rd:
        case A(address):
            return dnslib.A(address)
        case AAAA(address):
            return dnslib.AAAA(address)
        case MX(preference, exchange):
            return dnslib.MX(exchange + ".", preference)
        case TXT(strings):
            return dnslib.TXT(list(strings))
        case CNAME(target):
            return dnslib.CNAME(target + ".")
        case TLSA(usage, selector, mtype, data):
            return dnslib.TLSA(usage, selector, mtype, data)
    raise AssertionError(f"unhandled RDATA {rd!r}")
