"""The world's DNS data, computed from its spec: a pure function, rebuilt on every change.

Theory of operation
-------------------
:func:`build_zones` maps (spec, host addresses, certificates published in TLSA) to
the zones FakeDns serves. Nothing is patched in place: a mutation changes the spec
(or the published certificates) and the world calls this again, so the zones can
never drift from what the spec says.

* Each ``[domains."d"]`` is a zone with its DNSSEC status; its MX set is at the apex,
  its ``mta_sts_txt`` at ``_mta-sts.d`` (RFC 8461 §3.1), its ``tlsrpt_txt`` at
  ``_smtp._tls.d`` (RFC 8460 §3).
* Every named host (MX host, policy host, report sink) gets an A record in the zone
  that holds it: the declared domain with the longest matching apex, or else an
  implicit, insecure zone at the name's last two labels.
* TLSA data lives at ``_<port>._tcp.<mx host>`` (RFC 7672 §2.2; port 25 unless the
  host says otherwise), computed from the *published* certificate, which stays the
  old one after a rotation unless asked, so a scenario can rotate a key without
  updating DANE (DANE-2x). A derived entry publishes data computed with other
  parameters (or from another certificate of the path) than it is labelled with.
* Raw ``[[records]]`` go in last; then every DNSSEC status rule of ``[dns]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from certs import IssuedCert
from harness.world.dns.records import MX, TLSA, TXT, A, RData
from harness.world.dns.zones import DnssecStatus, Zone
from harness.world.spec.model import WorldSpec

__all__ = ["build_zones", "tlsa_name", "zone_apex"]


def tlsa_name(host: str, port: int = 25) -> str:
    """``_<port>._tcp.<host>`` (RFC 7672 §2.2; RFC 6698 §3)."""
    return f"_{port}._tcp.{host}"


def zone_apex(name: str, declared: Iterable[str]) -> str:
    """The apex of the zone holding ``name``: the longest declared one, else implicit.

    The implicit apex is the name's last two labels (the whole name when shorter).
    """
    best = max((d for d in declared if name == d or name.endswith("." + d)), key=len, default="")
    return best or ".".join(name.split(".")[-2:])


def build_zones(
    spec: WorldSpec,
    addresses: Mapping[str, str],
    published: Mapping[str, IssuedCert],
) -> list[Zone]:
    """The zones of a world.

    Args:
        spec: the world spec.
        addresses: host name -> its 127.x address (every host that gets an A record).
        published: MX host name -> the certificate its TLSA records describe.

    Returns:
        One zone per declared domain and per implicit apex, records in spec order.
    """
    zones: dict[str, Zone] = {
        name: Zone(name, d.dnssec) for name, d in sorted(spec.domains.items())
    }

    def add(name: str, rdata: RData, ttl: int | None = None) -> None:
        apex = zone_apex(name, spec.domains)
        zone = zones.get(apex) or Zone(apex, DnssecStatus.INSECURE)
        zones[apex] = zone.add(name, rdata, ttl)

    for name, d in spec.domains.items():
        for pref, exchange in d.mx:
            add(name, MX(pref, exchange))
        for rr in d.mta_sts_txt:
            add(f"_mta-sts.{name}", TXT(tuple(s.encode() for s in rr)))
        for rr in d.tlsrpt_txt:
            add(f"_smtp._tls.{name}", TXT(tuple(s.encode() for s in rr)))
    for host, address in addresses.items():
        add(host, A(address))
    for name, h in spec.hosts.items():
        cert, owner = published.get(name), tlsa_name(name, h.port)
        for u, s, m in h.tlsa:
            if cert is not None:
                t = cert.tlsa(u, s, m)
                add(owner, TLSA(t.usage, t.selector, t.mtype, t.data))
        for derived in h.tlsa_derived:
            if cert is not None:
                t = cert.tlsa(*derived.data_from, depth=derived.depth)
                add(owner, TLSA(derived.usage, derived.selector, derived.mtype, t.data))
        for u, s, m, data in h.tlsa_raw:
            add(owner, TLSA(u, s, m, data))
    for r in spec.records:
        add(r.name, r.rdata, r.ttl)
    statuses = [(r.name, r.rdata.rrtype, r.dnssec) for r in spec.records if r.dnssec]
    statuses += [
        (rule.name, rule.rrtype or "*", rule.action)
        for rule in spec.dns
        if isinstance(rule.action, DnssecStatus)
    ]
    for name, rrtype, status in statuses:
        apex = zone_apex(name, spec.domains)
        zone = zones.get(apex) or Zone(apex, DnssecStatus.INSECURE)
        types = ("A", "AAAA", "MX", "TXT", "TLSA", "CNAME") if rrtype == "*" else (rrtype,)
        for rrt in types:
            zone = zone.with_status(name, rrt, DnssecStatus(status))
        zones[apex] = zone
    return list(zones.values())
