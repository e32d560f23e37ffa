"""Zones for the fake DNS: DNSSEC status, a builder and lookups.

Theory of operation
-------------------
A :class:`Zone` is an immutable value: an apex, a DNSSEC status (``secure``,
``insecure`` or ``bogus``), a tuple of :class:`~harness.world.dns.records.Record`
and per-RRset status overrides. Builder methods (``.a()``, ``.mx()``, ``.txt()``
...) return a new zone, so a zone can be shared between worlds and steps without
aliasing. A CNAME owner holds no other data (RFC 1034 §3.6.2); that is checked
when a record is added.

:meth:`Zone.lookup` answers one (name, type) question inside the zone. It
distinguishes NXDOMAIN from NODATA, treating empty non-terminals as existing
(RFC 8020 §2), and reports the DNSSEC status that applies to the RRset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from harness.world.dns.records import (
    AAAA,
    CNAME,
    MX,
    TLSA,
    TXT,
    A,
    RData,
    Record,
    ZoneError,
    canonical_name,
)

__all__ = ["DnssecStatus", "Lookup", "Zone"]


class DnssecStatus(StrEnum):
    """What a validating resolver would conclude about an RRset."""

    SECURE = "secure"  # AD=1
    INSECURE = "insecure"  # AD=0
    BOGUS = "bogus"  # SERVFAIL (with EDE 6 "DNSSEC Bogus", RFC 8914 §4.7)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of :meth:`Zone.lookup`.

    ``kind`` is ``"data"`` (``records`` hold the RRset), ``"cname"`` (``records``
    hold the one CNAME to follow), ``"nodata"`` or ``"nxdomain"``.
    """

    kind: str
    records: tuple[Record, ...]
    status: DnssecStatus


@dataclass(frozen=True, slots=True)
class Zone:
    """The data under one apex, with its DNSSEC status.

    Example::

        zone = (
            Zone("example.com", DnssecStatus.SECURE)
            .mx(10, "mx1.example.com")
            .a("mx1.example.com", "127.0.1.1")
            .txt("_mta-sts.example.com", "v=STSv1; id=A1")
        )

    Names are absolute (``"mx1.example.com"``) or ``"@"`` for the apex, and must
    lie at or under the apex.

    Attributes:
        apex: the zone's apex, canonical.
        status: DNSSEC status of every RRset without an override.
        records: the records, in insertion order.
        overrides: ``(name, rrtype, status)`` triples for single RRsets (``rrtype``
            may be any type name, also one without records: secure NODATA, bogus TLSA;
            ``"*"`` covers every type at the name).
        ede: bogus answers carry an EDE option 6 "DNSSEC Bogus" when the query had EDNS.
        ttl: TTL of records added by the builder methods.
    """

    apex: str
    status: DnssecStatus = DnssecStatus.INSECURE
    records: tuple[Record, ...] = ()
    overrides: tuple[tuple[str, str, DnssecStatus], ...] = ()
    ede: bool = True
    ttl: int = 300

    def __post_init__(self) -> None:
        object.__setattr__(self, "apex", canonical_name(self.apex))
        object.__setattr__(self, "status", DnssecStatus(self.status))

    # -- membership and lookup -------------------------------------------------

    def contains(self, name: str) -> bool:
        """Whether canonical ``name`` is at or under the apex."""
        return not self.apex or name == self.apex or name.endswith("." + self.apex)

    def owner(self, name: str) -> str:
        """Canonicalise ``name`` (``"@"`` is the apex) and check it lies in the zone.

        Raises:
            ZoneError: the name is outside the zone.
        """
        canon = self.apex if name == "@" else canonical_name(name)
        if not self.contains(canon):
            raise ZoneError(f"name {name!r} is outside zone {self.apex!r}")
        return canon

    def status_of(self, name: str, rrtype: str) -> DnssecStatus:
        """The DNSSEC status of the RRset (``name``, ``rrtype``): its override, the
        whole-name override, or the zone's status."""
        found = {(o[0], o[1]): o[2] for o in self.overrides}
        return found.get((name, rrtype)) or found.get((name, "*")) or self.status

    def lookup(self, name: str, rrtype: str) -> Lookup:
        """Answer (canonical ``name``, ``rrtype``) from this zone's data.

        ``rrtype`` ``"ANY"`` returns every record at the name; a CNAME owner
        answers ``"cname"`` unless the CNAME itself is asked for.
        """
        at_name = tuple(r for r in self.records if r.name == name)
        status = self.status_of(name, rrtype)
        if not at_name:
            # RFC 8020 §2: a name with descendants exists (empty non-terminal).
            suffix = "." + name
            exists = name == self.apex or any(r.name.endswith(suffix) for r in self.records)
            return Lookup("nodata" if exists else "nxdomain", (), status)
        if rrtype == "ANY":
            return Lookup("data", at_name, status)
        if rrtype != "CNAME" and at_name[0].rdata.rrtype == "CNAME":
            return Lookup("cname", at_name, self.status_of(name, "CNAME"))
        rrset = tuple(r for r in at_name if r.rdata.rrtype == rrtype)
        return Lookup("data" if rrset else "nodata", rrset, status)

    # -- builder ---------------------------------------------------------------

    def add(self, name: str, rdata: RData, ttl: int | None = None) -> Zone:
        """Return a copy with one more record.

        Raises:
            ZoneError: the name is outside the zone, or CNAME exclusivity is broken.
        """
        owner = self.owner(name)
        others = [r.rdata.rrtype for r in self.records if r.name == owner]
        # RFC 1034 §3.6.2: a CNAME owner has no other data.
        if others and (rdata.rrtype == "CNAME" or "CNAME" in others):
            raise ZoneError(f"{owner!r} would hold a CNAME together with other data")
        record = Record(owner, rdata, self.ttl if ttl is None else ttl)
        return dataclasses.replace(self, records=(*self.records, record))

    def a(self, name: str, address: str) -> Zone:
        """Add an A record (127.0.0.0/8 only)."""
        return self.add(name, A(address))

    def aaaa(self, name: str, address: str = "::1") -> Zone:
        """Add an AAAA record (``::1`` only)."""
        return self.add(name, AAAA(address))

    def mx(self, preference: int, exchange: str, name: str = "@") -> Zone:
        """Add an MX record, at the apex unless ``name`` is given."""
        return self.add(name, MX(preference, exchange))

    def txt(self, name: str, *strings: str | bytes) -> Zone:
        """Add one TXT RR made of ``strings`` (call again for several RRs)."""
        return self.add(name, TXT(tuple(s.encode() if isinstance(s, str) else s for s in strings)))

    def cname(self, name: str, target: str) -> Zone:
        """Add a CNAME from ``name`` to ``target``."""
        return self.add(name, CNAME(target))

    def tlsa(self, name: str, usage: int, selector: int, mtype: int, data: bytes | str) -> Zone:
        """Add a TLSA record; ``data`` is bytes or a hex string."""
        raw = bytes.fromhex(data) if isinstance(data, str) else data
        return self.add(name, TLSA(usage, selector, mtype, raw))

    def with_status(self, name: str, rrtype: str | None, status: DnssecStatus | str) -> Zone:
        """Return a copy where the RRset (``name``, ``rrtype``) has its own DNSSEC status.

        ``rrtype`` None covers every type at ``name`` (a type-specific override wins).
        """
        owner, rtype = self.owner(name), "*" if rrtype is None else rrtype.upper()
        kept = tuple(o for o in self.overrides if o[:2] != (owner, rtype))
        entry = (owner, rtype, DnssecStatus(status))
        return dataclasses.replace(self, overrides=(*kept, entry))

    def without(self, name: str, rrtype: str | None = None) -> Zone:
        """Return a copy without the records at ``name`` (of ``rrtype`` only, if given)."""
        owner = self.owner(name)
        kept = tuple(
            r
            for r in self.records
            if r.name != owner or (rrtype is not None and r.rdata.rrtype != rrtype.upper())
        )
        return dataclasses.replace(self, records=kept)
