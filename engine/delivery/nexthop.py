"""Next hops: MX order, addresses and TLSA records, each with its DNSSEC status.

Theory of operation
-------------------
For one destination domain the engine needs the candidate hosts in the order
RFC 5321 §5.1 gives them, and for each host what DANE can say. Lookups follow
RFC 7672 §2.2 in this order, which ``daneverify`` on the appliance also shows:

1. MX for the domain (status and AD bit). A temporary failure defers the
   whole domain; there is no fallback to the implicit MX (DANE-3, AMB-26),
   which is used only when the domain provably has no MX records.
2. For each host, A then AAAA before any TLSA (DANE-13). No address: the host
   is unreachable.
3. TLSA at ``_<port>._tcp.<host>`` only when the address answer is secure
   (DANE-14). With a secure CNAME expansion, the expanded name is tried
   first, then the original (DANE-15). A lookup error makes the host
   unreachable for DANE purposes (DANE-5, AMB-25): the caller must not use it.

Hosts of equal preference are shuffled with an injected random generator so
runs are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

from engine.core.tlsa import RrsetStatus, Tlsa, classify_rrset
from engine.io.dns import DnsAnswer, DnsResolver, DnsStatus

__all__ = [
    "DaneState",
    "MxLookup",
    "NextHop",
    "order_mx",
    "resolve_addresses",
    "resolve_host",
    "resolve_mx",
    "resolve_tlsa",
]


class DaneState(StrEnum):
    """What DANE says about one host (docs/gateway-behaviour.md §2.1 inputs)."""

    USABLE = "usable"  # secure TLSA with a usable record: TLS + DANE authentication
    UNUSABLE = "unusable"  # secure TLSA, none usable: TLS mandatory, no authentication
    NOT_APPLICABLE = "not-applicable"  # insecure, or secure denial
    DNS_ERROR = "dns-error"  # the TLSA lookup failed: the host must not be used
    NOT_CHECKED = "not-checked"  # DANE off for this destination


@dataclass(frozen=True, slots=True)
class MxLookup:
    """The MX step's outcome.

    Attributes:
        status: ``ok`` (hosts listed), ``implicit`` (no MX: the domain itself),
            ``fail`` (the domain does not exist, or publishes a null MX: bounce),
            or ``defer`` (a lookup error: retry later).
        hosts: (preference, host) in delivery order.
        secure: the MX RRset was DNSSEC-secure.
        detail: why, for ``defer`` and ``null``.
    """

    status: str
    hosts: tuple[tuple[int, str], ...] = ()
    secure: bool = False
    detail: str = ""
    answer: DnsAnswer | None = None


@dataclass(frozen=True, slots=True)
class NextHop:
    """One candidate host with everything DNS said about it."""

    host: str
    port: int
    preference: int = 0
    addresses: tuple[str, ...] = ()
    address_secure: bool = False
    address_status: DnsStatus = DnsStatus.OK
    canonical: str = ""
    dane: DaneState = DaneState.NOT_CHECKED
    tlsa: tuple[Tlsa, ...] = ()
    tlsa_base: str | None = None
    detail: str = ""
    notes: tuple[str, ...] = field(default=())
    cname_chain: tuple[str, ...] = ()  # the CNAMEs the address answer followed

    @property
    def reachable(self) -> bool:
        """Has an address, and DANE did not fail to look up."""
        return bool(self.addresses) and self.dane is not DaneState.DNS_ERROR


def order_mx(records: list[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """RFC 5321 §5.1: ascending preference, random order within one preference."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r[0])


async def resolve_mx(resolver: DnsResolver, domain: str, rng: random.Random) -> MxLookup:
    """Look up the MX RRset of ``domain`` and order it."""
    answer = await resolver.query(domain, "MX")
    if answer.status.temporary:
        # DANE-3 / AMB-26: an MX lookup error never falls back to the A record.
        return MxLookup(
            "defer",
            detail=f"DNS Soft Error looking up {domain} (MX): {answer.detail}",
            answer=answer,
        )
    if answer.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        if answer.status is DnsStatus.NXDOMAIN:
            return MxLookup(
                "fail",
                detail=f"DNS Hard Error looking up {domain} (MX):  NXDomain",
                answer=answer,
            )
        # RFC 5321 §5.1: no MX records, so the domain is its own implicit MX.
        return MxLookup("implicit", ((0, domain),), answer.secure, answer=answer)
    hosts = answer.mx_hosts()
    if len(hosts) == 1 and hosts[0][1] in ("", "."):
        # RFC 7505 §3: a null MX says the domain accepts no mail.
        return MxLookup("fail", detail=f"{domain} publishes a null MX", answer=answer)
    return MxLookup("ok", tuple(order_mx(hosts, rng)), answer.secure, answer=answer)


async def resolve_host(
    resolver: DnsResolver,
    host: str,
    port: int,
    *,
    preference: int = 0,
    want_dane: bool,
) -> NextHop:
    """Addresses of ``host`` and, when asked and possible, its TLSA RRset."""
    hop = await resolve_addresses(resolver, host, port, preference=preference)
    if not hop.addresses or not want_dane:
        return hop
    return await resolve_tlsa(resolver, hop)


async def resolve_addresses(
    resolver: DnsResolver, host: str, port: int, *, preference: int = 0
) -> NextHop:
    """Addresses of ``host`` (A, then AAAA), with their DNSSEC status and CNAME chain.

    A host without any address has ``detail`` saying why; DANE is ``NOT_CHECKED``
    until :func:`resolve_tlsa` runs.
    """
    addresses: list[str] = []
    secure = True
    status = DnsStatus.NODATA
    canonical = host
    chain: tuple[str, ...] = ()
    # DANE-13: addresses first; TLSA only for a host that has some.
    for rdtype in ("A", "AAAA"):
        answer = await resolver.query(host, rdtype)
        if answer.status is DnsStatus.OK:
            addresses += answer.addresses()
            secure = secure and answer.secure
            status = DnsStatus.OK
            canonical = answer.canonical or host
            chain = answer.chain
        elif answer.status.temporary and status is not DnsStatus.OK:
            status = answer.status
    hop = NextHop(
        host,
        port,
        preference,
        tuple(addresses),
        secure and bool(addresses),
        status,
        canonical,
        cname_chain=chain,
    )
    if not addresses:
        return _replace(hop, detail=f"no address for {host} ({status.value})")
    return hop


async def resolve_tlsa(resolver: DnsResolver, hop: NextHop) -> NextHop:
    """The DANE state of ``hop`` (which has addresses): its TLSA RRset, if DANE can apply.

    RFC 7672 §2.2: the TLSA lookup runs only for a host whose address answer is
    secure (DANE-14), at the secure CNAME target first (DANE-15).
    """
    host, port, canonical, chain = hop.host, hop.port, hop.canonical, hop.cname_chain
    bases: list[str] = []
    if hop.address_secure:
        # DANE-15: a secure CNAME expansion is tried first, then the original name.
        bases = [canonical, host] if canonical != host else [host]
    elif chain:
        # DANE-16: an insecure expansion; the original name counts if its CNAME is secure.
        cname = await resolver.query(host, "CNAME")
        if cname.status is DnsStatus.OK and cname.secure:
            bases = [host]
    if not bases:
        # DANE-14: insecure addresses, so no TLSA query at all.
        return _replace(hop, dane=DaneState.NOT_APPLICABLE, notes=("address insecure",))
    for base in bases:
        owner = f"_{port}._tcp.{base}"  # RFC 7672 §2.2.3 / DANE-17: the real port
        tlsa = await resolver.query(owner, "TLSA")
        if tlsa.status.temporary:
            # DANE-5 / AMB-25: any TLSA lookup failure makes the host unusable.
            return _replace(
                hop,
                dane=DaneState.DNS_ERROR,
                tlsa_base=base,
                detail=f"TLSA lookup for {owner} failed: {tlsa.status.value}",
            )
        if tlsa.status is DnsStatus.OK and tlsa.secure:
            records = tuple(
                Tlsa(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))  # type: ignore[attr-defined]
                for r in tlsa.records
            )
            state = (
                DaneState.USABLE
                if classify_rrset(records) is RrsetStatus.USABLE
                else DaneState.UNUSABLE
            )
            return _replace(hop, dane=state, tlsa=records, tlsa_base=base)
    # RFC 7672 §2.2: insecure TLSA or an authenticated denial: DANE does not apply.
    return _replace(hop, dane=DaneState.NOT_APPLICABLE)


def _replace(hop: NextHop, **changes: object) -> NextHop:
    return replace(hop, **changes)  # type: ignore[arg-type]
