"""The world spec's values: frozen dataclasses, one per TOML table (see ``spec.py``)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from certs import CertProfile, KeyType
from harness.world.dns.answer import DnsBehaviour
from harness.world.dns.records import RData
from harness.world.dns.zones import DnssecStatus
from harness.world.mta.script import MxStartTls, Script
from harness.world.web.behaviour import PolicyResponse, ProxyFault

__all__ = [
    "DerivedTlsa",
    "DnsRule",
    "DomainSpec",
    "HostSpec",
    "PolicyHostSpec",
    "ProxySpec",
    "RecordSpec",
    "ReportSinkSpec",
    "WorldSpec",
]


@dataclass(frozen=True, slots=True)
class PolicyHostSpec:
    """``https://mta-sts.<domain>``: its certificate, address and response (body aside)."""

    cert: CertProfile = CertProfile.VALID
    names: tuple[str, ...] = ()  # empty: (mta-sts.<domain>,)
    key_type: KeyType | None = None
    address: str | None = None
    response: PolicyResponse = field(default_factory=PolicyResponse)
    tls_min: ssl.TLSVersion | None = None  # None: OpenSSL's default floor (TLS 1.2)
    tls_max: ssl.TLSVersion | None = None  # below 1.2: the host gets a listener of its own


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """One zone and its MTA-STS / TLS-RPT data."""

    name: str
    dnssec: DnssecStatus = DnssecStatus.INSECURE
    mx: tuple[tuple[int, str], ...] = ()
    mta_sts_txt: tuple[tuple[str, ...], ...] = ()
    tlsrpt_txt: tuple[tuple[str, ...], ...] = ()
    policy: str | None = None
    policy_host: PolicyHostSpec | None = None

    @property
    def policy_host_name(self) -> str:
        """``mta-sts.<domain>`` (RFC 8461 §3.2)."""
        return f"mta-sts.{self.name}"

    @property
    def has_policy_host(self) -> bool:
        """Whether ``mta-sts.<domain>`` exists (a policy body or a policy_host table)."""
        return self.policy is not None or self.policy_host is not None


@dataclass(frozen=True, slots=True)
class DerivedTlsa:
    """A TLSA record computed from the served certificate, with its parameters apart.

    Published as ``usage selector mtype``, with the data that ``data_from`` (a usage,
    selector, matching type triple) computes from the certificate at ``depth`` of the
    verification path. ``data_from = (3, 1, 1)`` under ``(3, 0, 1)`` is an SPKI digest
    labelled as a full-certificate one (DANE-21); ``depth`` picks a CA above the issuer
    (DANE-30).

    Attributes:
        usage: the published certificate usage.
        selector: the published selector.
        mtype: the published matching type.
        data_from: the parameters the data is computed with.
        depth: 0 the leaf, 1 its issuer ... -1 the root; None: the leaf for
            ``data_from`` usages 1 and 3, the issuer for 0 and 2.
    """

    usage: int
    selector: int
    mtype: int
    data_from: tuple[int, int, int]
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A receiving MTA (one MX host)."""

    name: str
    cert: CertProfile | None = CertProfile.VALID  # None: no certificate at all
    names: tuple[str, ...] = ()  # empty: (name,)
    cn: str | None = None  # the subject CN, when it is not the first name
    key_type: KeyType | None = None
    address: str | None = None
    port: int = 25  # the service port the engine dials; TLSA at _<port>._tcp.<name>
    starttls: MxStartTls = MxStartTls.OFFERED
    tls_min: ssl.TLSVersion | None = None
    tls_max: ssl.TLSVersion | None = None
    tlsa: tuple[tuple[int, int, int], ...] = ()
    tlsa_derived: tuple[DerivedTlsa, ...] = ()  # the table form of `tlsa` entries
    tlsa_raw: tuple[tuple[int, int, int, bytes], ...] = ()
    sni_certs: tuple[tuple[str, CertProfile], ...] = ()  # SNI name -> profile served for it
    script: Script = field(default_factory=Script)


@dataclass(frozen=True, slots=True)
class DnsRule:
    """A fault (``behaviour``) or a DNSSEC status for one name and type (None: every type)."""

    name: str
    rrtype: str | None
    action: DnsBehaviour | DnssecStatus
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """The HTTP CONNECT proxy."""

    fault: ProxyFault = ProxyFault.NONE
    address: str | None = None


@dataclass(frozen=True, slots=True)
class ReportSinkSpec:
    """The TLS-RPT HTTPS collector."""

    name: str
    cert: CertProfile = CertProfile.VALID
    address: str | None = None
    statuses: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """One raw record from ``[[records]]``.

    Attributes:
        name: canonical owner name.
        rdata: the record data.
        ttl: its TTL, or None for the zone's default.
        dnssec: a DNSSEC status for its RRset, or None for the zone's.
    """

    name: str
    rdata: RData
    ttl: int | None = None
    dnssec: DnssecStatus | None = None


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """A complete, checked world description (see the module docstring for the format).

    Attributes:
        domains: by canonical name.
        hosts: every receiving MTA by canonical name (MX targets included).
        dns: fault and status rules.
        records: raw extra records.
        proxy: the proxy, or None.
        report_sink: the report sink, or None.
        source: the file name used in errors.
        prefix: the key path of the world table in that file (``""`` at the top).
    """

    domains: Mapping[str, DomainSpec] = field(default_factory=dict)
    hosts: Mapping[str, HostSpec] = field(default_factory=dict)
    dns: tuple[DnsRule, ...] = ()
    records: tuple[RecordSpec, ...] = ()
    proxy: ProxySpec | None = None
    report_sink: ReportSinkSpec | None = None
    source: str = "<world>"
    prefix: str = ""
