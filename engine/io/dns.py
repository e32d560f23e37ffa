"""DNS adapter: dnspython aimed at configured resolvers, answers as values.

Theory of operation
-------------------
The engine trusts a validating recursive resolver (the model Postfix and Exim
use, RFC 7672 §2.1.1): every query is sent with EDNS and the DO bit, and the
AD bit of the reply is read as "this answer is DNSSEC-secure". The AD bit is
believed only from a resolver the configuration trusts; by default that means a
loopback address (DANE-1: "over a secure channel (e.g. loopback)").

Every library exception is translated here into a :class:`DnsStatus`, so the
core can keep the outcomes the RFCs distinguish apart: NXDOMAIN and NODATA
(the name provably has no such data), SERVFAIL, a bogus answer (SERVFAIL with
an Extended DNS Error "DNSSEC Bogus"), REFUSED, a timeout and a malformed
reply. Truncated UDP answers are retried over TCP. Trusted resolvers are asked over
one shared UDP socket (``engine.io.dnsudp``); others through ``udp_with_fallback``.
For trusted resolvers the query bytes come from ``engine.io.dnswire`` (the same bytes
dnspython writes), and a simple TXT reply, the one every warm MTA-STS check gets, is
read there too; every other reply is dnspython's to decode. Each distinct reply (its
bytes after the ID) is read once per resolver and its answer remembered, bounded.
Several resolvers are tried in order while the outcome is temporary.

Resolvers follow CNAMEs for us; the chain they report is kept
(:attr:`DnsAnswer.chain`) because DISC-9, AMB-8/9 and DANE-15/16 care about
which names were expanded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.rrset

from engine.core.clock import Clock
from engine.core.events import EventSink, LogEvent, wants_debug
from engine.core.fastpaths import FAST_PATHS
from engine.io.dnsudp import UdpChannel, check_reply
from engine.io.dnswire import TxtReply, query_question, query_wire, read_txt_reply

__all__ = ["DnsAnswer", "DnsResolver", "DnsStatus", "ResolverAddress", "parse_resolver"]

_EDE_DNSSEC_BOGUS = 6  # RFC 8914 §4.7
_REPLY_MEMO_SIZE = 4096

# RFC 7672 §2.2 / DANE-7: a TLSA record whose digest length does not fit its matching
# type is *unusable*, and the rest of the RRset still counts (an all-unusable RRset makes
# TLS mandatory). dnspython rejects the whole reply on such a record, which would turn
# "unusable" into "lookup error" (DANE-5: host unreachable). So TLSA RDATA is parsed
# without the length check here, and engine.core.tlsa.unusable_reason judges it instead.
# The attribute is shadowed on the TLSA class only; SMIMEA and the base class keep theirs.
dns.rdtypes.ANY.TLSA.TLSA._cert_length_by_mtype = {}


class DnsStatus(StrEnum):
    """The outcome of one lookup."""

    OK = "ok"  # records of the asked type are present
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    BOGUS = "bogus"  # SERVFAIL with EDE 6, i.e. failed DNSSEC validation
    REFUSED = "refused"
    TIMEOUT = "timeout"
    ERROR = "error"  # malformed reply, unexpected rcode

    @property
    def temporary(self) -> bool:
        """Whether the outcome says nothing about the data (a lookup error)."""
        return self not in (DnsStatus.OK, DnsStatus.NXDOMAIN, DnsStatus.NODATA)


@dataclass(frozen=True, slots=True)
class ResolverAddress:
    """A resolver to query, and whether its AD bit is believed."""

    host: str
    port: int = 53
    trusted: bool = True

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_resolver(text: str, *, trusted: bool | None = None) -> ResolverAddress:
    """Parse ``host[:port]`` (IPv6 as ``[::1]:53``).

    Args:
        text: the resolver address.
        trusted: believe its AD bit; by default only loopback resolvers are trusted (DANE-1).

    Raises:
        ValueError: the text is not an IP address with an optional port.
    """
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    addr = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"resolver port out of range in {text!r}")
    # RFC 7672 §2.1.1 / DANE-1: trust AD only over a secure channel such as loopback.
    return ResolverAddress(str(addr), port, addr.is_loopback if trusted is None else trusted)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One lookup's result.

    Attributes:
        qname: the name asked (lower case, no root dot).
        rdtype: the type asked (``"TXT"``, ``"MX"``, ...).
        status: what happened.
        secure: the answer carried AD=1 from a trusted resolver.
        records: RDATA of the asked type: dnspython rdata objects, or for a simple TXT
            reply :class:`~engine.io.dnswire.TxtRdata` (the same ``strings``).
        chain: CNAME owner names followed, in order, starting with ``qname`` when any.
        canonical: the final name after CNAMEs.
        detail: a human explanation for errors.
    """

    qname: str
    rdtype: str
    status: DnsStatus
    secure: bool = False
    records: tuple[object, ...] = ()
    chain: tuple[str, ...] = ()
    canonical: str = ""
    detail: str = ""
    server: str = ""
    via_tcp: bool = False
    rrs_text: tuple[str, ...] = field(default=(), repr=False)

    def txt_strings(self) -> list[list[bytes]]:
        """TXT RRs as lists of character-strings."""
        return [list(r.strings) for r in self.records]  # type: ignore[attr-defined]

    def mx_hosts(self) -> list[tuple[int, str]]:
        """MX RRs as (preference, target host without root dot)."""
        return [
            (int(r.preference), _name(r.exchange))  # type: ignore[attr-defined]
            for r in self.records
        ]

    def addresses(self) -> list[str]:
        """A/AAAA RRs as address strings."""
        return [str(r.address) for r in self.records]  # type: ignore[attr-defined]


def _log_records(answer: DnsAnswer) -> list[str | list[str]]:
    """RDATA for the ``dns.answer`` event: TXT as its character-strings, others as text.

    The seed's ``DNS encache`` line shows a TXT record as the tuple of its strings,
    unquoted: ``('v=STSv1; id=12345678598Z;',)``, not the presentation form ``"..."``.
    """
    if answer.rdtype == "TXT":
        return [[s.decode("utf-8", "replace") for s in strings] for strings in answer.txt_strings()]
    return list(answer.rrs_text)


def _name(n: dns.name.Name) -> str:
    return n.to_text(omit_final_dot=True).lower()


class DnsResolver:
    """Asks the configured resolvers; never raises for a DNS outcome.

    Args:
        resolvers: where to send queries, tried in order while outcomes are temporary.
        timeout: seconds per query attempt (UDP, and TCP after truncation).
        retransmit: seconds before a trusted resolver's UDP query is sent again when
            no reply came, doubling after each copy, within ``timeout``; 0 never does
            (RFC 1123 §6.1.3.3). Untrusted resolvers are asked through dnspython,
            which does not resend.
        sink: where ``dns.query`` / ``dns.answer`` debug events go.
        clock: stamps events.
    """

    def __init__(
        self,
        resolvers: Sequence[ResolverAddress],
        *,
        timeout: float = 5.0,
        retransmit: float = 0.0,
        sink: EventSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not resolvers:
            raise ValueError("at least one resolver is required")
        self.resolvers = tuple(resolvers)
        self.timeout = timeout
        self.retransmit = retransmit
        self._sink = sink
        # Every event here is Debug: with a sink that drops those, none is built.
        self._debug = wants_debug(sink)
        self._clock = clock
        self.queries_sent = 0
        self._channels: dict[ResolverAddress, UdpChannel] = {}
        # Replies already read, by their bytes after the message ID and the server (bounded).
        self._replies: dict[tuple[bytes, ResolverAddress], DnsAnswer] = {}

    def _emit(self, code: str, **fields: object) -> None:
        if self._sink is not None:
            at = self._clock.now() if self._clock is not None else 0.0
            self._sink.emit(LogEvent(code, fields, level="debug", at=at))

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up ``name``/``rdtype`` and classify the outcome."""
        qname = name.rstrip(".").lower()
        debug = self._debug
        if debug:
            self._emit("dns.query", name=qname, type=rdtype)
        answer: DnsAnswer | None = None
        for index, server in enumerate(self.resolvers):
            if debug:
                self._emit(
                    "dns.query.server",
                    name=qname,
                    type=rdtype,
                    server=server.host,
                    port=server.port,
                    index=index,
                    timeout=self.timeout,
                )
            answer = await self._ask(server, qname, rdtype)
            if not answer.status.temporary:
                break
        assert answer is not None  # __init__ requires at least one resolver
        if debug:
            self._emit(
                "dns.answer",
                name=qname,
                type=rdtype,
                status=answer.status.value,
                secure=answer.secure,
                records=_log_records(answer),
                server=answer.server,
            )
        return answer

    def _channel(self, server: ResolverAddress) -> UdpChannel:
        channel = self._channels.get(server)
        if channel is None:
            channel = self._channels[server] = UdpChannel(server.host, server.port)
        return channel

    async def _exchange(
        self, server: ResolverAddress, q: dns.message.Message, wire: bytes | None = None
    ) -> tuple[dns.message.Message, bool]:
        """Ask ``server`` ``q``; ``wire`` is a reply already received for it over UDP."""
        if not server.trusted:
            return await dns.asyncquery.udp_with_fallback(
                q, server.host, timeout=self.timeout, port=server.port
            )
        if wire is None:
            reply = await self._channel(server).query(q, self.timeout, self.retransmit)
        else:
            q.id = int.from_bytes(wire[:2], "big")
            reply = check_reply(q, wire)
        if reply.flags & dns.flags.TC:
            # RFC 7766 §5: a truncated answer is asked again over TCP.
            return await dns.asyncquery.tcp(
                q, server.host, timeout=self.timeout, port=server.port
            ), True
        return reply, False

    async def aclose(self) -> None:
        """Close the shared UDP sockets."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.aclose()

    async def _ask(self, server: ResolverAddress, qname: str, rdtype: str) -> DnsAnswer:
        self.queries_sent += 1
        # Trusted resolvers share one UDP socket, and the query is written by dnswire
        # (byte for byte what dnspython writes); a simple TXT reply is read there too.
        # STS_ENGINE_NO_FAST_PATHS=1 (engine.core.fastpaths): every reply through _classify.
        query = query_wire(qname, rdtype) if server.trusted and FAST_PATHS else None
        try:
            if query is None:
                reply, via_tcp = await self._exchange(server, _query(qname, rdtype))
                return _classify(reply, qname, rdtype, server, via_tcp)
            wire = await self._channel(server).exchange(query, self.timeout, self.retransmit)
            # The same reply bytes (after the ID) always read the same way, and a sender
            # asks the same questions on every delivery: each distinct reply is read once.
            key = (wire[2:], server)
            known = self._replies.get(key)
            if known is not None:
                return known
            lean = read_txt_reply(wire, query_question(query)) if rdtype == "TXT" else None
            if lean is not None:
                answer = _txt_answer(lean, qname, server)
            else:
                reply, via_tcp = await self._exchange(server, _query(qname, rdtype), wire)
                answer = _classify(reply, qname, rdtype, server, via_tcp)
                if via_tcp:
                    return answer  # the UDP reply was truncated; nothing to remember
        except dns.exception.Timeout:
            return DnsAnswer(qname, rdtype, DnsStatus.TIMEOUT, detail="timeout", server=str(server))
        except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            return DnsAnswer(qname, rdtype, DnsStatus.ERROR, detail=detail, server=str(server))
        if len(self._replies) >= _REPLY_MEMO_SIZE:
            self._replies.clear()
        self._replies[key] = answer
        return answer


def _query(qname: str, rdtype: str) -> dns.message.Message:
    # RFC 7672 §2.1.1: a security-aware query (EDNS0 with DO), AD requested (RFC 6840 §5.7).
    q = dns.message.make_query(qname, rdtype, want_dnssec=True, payload=1232)
    q.flags |= dns.flags.AD
    return q


def _txt_answer(reply: TxtReply, qname: str, server: ResolverAddress) -> DnsAnswer:
    """The DnsAnswer :func:`_classify` gives for the same simple TXT reply."""
    if reply.nxdomain:
        status = DnsStatus.NXDOMAIN
    else:
        status = DnsStatus.OK if reply.records else DnsStatus.NODATA
    return DnsAnswer(
        qname,
        "TXT",
        status,
        # DANE-1: the AD bit counts only from a trusted resolver.
        secure=reply.authentic_data and server.trusted,
        records=reply.records,
        canonical=qname,
        server=str(server),
        rrs_text=tuple(r.to_text() for r in reply.records),
    )


def _classify(
    reply: dns.message.Message, qname: str, rdtype: str, server: ResolverAddress, via_tcp: bool
) -> DnsAnswer:
    where = str(server)
    rcode = reply.rcode()
    # DANE-1: the AD bit counts only from a trusted resolver.
    secure = bool(reply.flags & dns.flags.AD) and server.trusted
    if rcode == dns.rcode.SERVFAIL:
        ede = [o for o in reply.options if isinstance(o, dns.edns.EDEOption)]
        if any(int(o.code) == _EDE_DNSSEC_BOGUS for o in ede):
            return DnsAnswer(qname, rdtype, DnsStatus.BOGUS, detail="DNSSEC bogus", server=where)
        return DnsAnswer(qname, rdtype, DnsStatus.SERVFAIL, detail="SERVFAIL", server=where)
    if rcode == dns.rcode.REFUSED:
        return DnsAnswer(qname, rdtype, DnsStatus.REFUSED, detail="REFUSED", server=where)
    wanted = dns.rdatatype.from_text(rdtype)
    chain: list[str] = []
    current = dns.name.from_text(qname)
    records: list[object] = []
    texts: list[str] = []
    # Follow the CNAME chain the recursive resolver put in the answer section.
    # A query for the CNAME itself answers with it; only other types follow the chain.
    for _ in range(16 if wanted != dns.rdatatype.CNAME else 0):
        cname = _find(reply, current, dns.rdatatype.CNAME)
        if cname is None:
            break
        chain.append(_name(current))
        current = next(iter(cname)).target
    rrset = _find(reply, current, wanted)
    if rrset is not None:
        records = list(rrset)
        texts = [r.to_text() for r in rrset]
    canonical = _name(current)
    if chain:
        chain.append(canonical)
    if rcode == dns.rcode.NXDOMAIN:
        status = DnsStatus.NXDOMAIN
    elif rcode != dns.rcode.NOERROR:
        return DnsAnswer(
            qname, rdtype, DnsStatus.ERROR, detail=dns.rcode.to_text(rcode), server=where
        )
    else:
        status = DnsStatus.OK if records else DnsStatus.NODATA
    return DnsAnswer(
        qname,
        rdtype,
        status,
        secure=secure,
        records=tuple(records),
        chain=tuple(chain),
        canonical=canonical,
        server=where,
        via_tcp=via_tcp,
        rrs_text=tuple(texts),
    )


def _find(
    reply: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in reply.answer:
        if rrset.name == name and rrset.rdtype == rdtype:
            return rrset
    return None
