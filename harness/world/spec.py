"""The world spec: a TOML table describing DNS, policy hosts, MXs, proxy and report sink.

Theory of operation
-------------------
:func:`load_world_spec` turns a dict (a whole ``world.toml``, or a scenario's
``[world]`` table: pass its ``prefix``) into a frozen :class:`WorldSpec`. Every key
is checked; a wrong one raises :class:`~harness.errors.SpecError` naming the file,
the key path and the value. After loading, the spec is *complete*: every MX target
has a :class:`HostSpec` (defaults when not declared), names are canonical, and the
policy host's response is a ready :class:`~harness.world.policy_host.PolicyResponse`.
:class:`~harness.world.world.World` builds from it and keeps it as its state, so a
mutation is "load the changed table, replace it in the spec, rebuild what depends".

The format (every key optional unless noted)::

    [domains."example.com"]             # a zone, and a mail domain when it has `mx`
    dnssec = "insecure"                 # secure | insecure | bogus
    mx = [[10, "mx1.example.com"], "20 mx2.example.com"]
    mta_sts_txt = ["v=STSv1; id=A1"]    # RRs at _mta-sts.<domain>; an RR may be a list
    tlsrpt_txt = ["v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example"]   # at _smtp._tls.<domain>
    policy = "version: STSv1\\n..."     # presence => https://mta-sts.<domain> exists
    [domains."example.com".policy_host] # also makes the host exist (empty body)
    cert = "valid"; names = [...]; key_type = "ecdsa"; address = "127.0.9.9"
    behaviour = "serve"; status = 200; content_type = "text/plain" (false: none)
    headers = { "Cache-Control" = "no-store" }; location = "https://..."
    trickle_interval = 0.05; trickle_bytes = 1; oversize_bytes = 10485760

    [hosts."mx1.example.com"]           # a ReceivingMta (MX targets get one anyway)
    cert = "valid"                      # any CertProfile, or "none"
    names = [...]; key_type = "ecdsa"; address = "127.0.9.1"
    starttls = "offered"                # offered | absent | refused | broken-close | ...
    tls_min = "1.2"; tls_max = "1.3"
    tlsa = [[3, 1, 1]]                  # at _25._tcp.<host>, from this host's cert
    tlsa_raw = ["3 1 1 ABCD..."]
    replies = { banner = "...", ehlo, helo, mail, data_start, data,
                rcpt = "450 4.2.0 later" | { "a@x" = "550 no" }, rcpt_by_index = [...] }

    [dns]                               # faults and DNSSEC status per name and type
    "_mta-sts.example.com" = { TXT = "servfail", "*" = { behaviour = "drop" } }
    [[records]]                         # raw extra records
    name = "relay.example.net"; type = "A"; value = "127.0.9.1"; ttl = 60; dnssec = "bogus"
    [proxy]                             # an HTTP CONNECT proxy
    fault = "none"; address = "127.0.9.2"
    [report_sink]                       # a TLS-RPT HTTPS collector
    name = "reports.rpt.example"; cert = "valid"; address = "..."
    statuses = { "/tlsrpt" = [503, 201] }
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from certs import CertProfile, KeyType
from harness.errors import SpecError
from harness.world.addresses import is_loopback_v4
from harness.world.dns_answer import Behaviour as DnsBehaviour
from harness.world.dns_records import ZoneError, canonical_name
from harness.world.mta_script import Script, StartTls
from harness.world.policy_host import Behaviour as PolicyBehaviour
from harness.world.policy_host import PolicyResponse
from harness.world.proxy import ProxyFault
from harness.world.spec_records import RecordSpec, parse_record, parse_replies, parse_tlsa
from harness.world.spec_values import Node
from harness.world.zones import DnssecStatus

__all__ = [
    "DnsRule",
    "DomainSpec",
    "HostSpec",
    "PolicyHostSpec",
    "ProxySpec",
    "RecordSpec",
    "ReportSinkSpec",
    "WorldSpec",
    "load_world_spec",
    "read_world_spec",
]

_TLS = {"1.0": "TLSv1", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}
_NO_CERT = "none"


@dataclass(frozen=True, slots=True)
class PolicyHostSpec:
    """``https://mta-sts.<domain>``: its certificate, address and response (body aside)."""

    cert: CertProfile = CertProfile.VALID
    names: tuple[str, ...] = ()  # empty: (mta-sts.<domain>,)
    key_type: KeyType | None = None
    address: str | None = None
    response: PolicyResponse = field(default_factory=PolicyResponse)


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
class HostSpec:
    """A receiving MTA (one MX host)."""

    name: str
    cert: CertProfile | None = CertProfile.VALID  # None: no certificate at all
    names: tuple[str, ...] = ()  # empty: (name,)
    key_type: KeyType | None = None
    address: str | None = None
    starttls: StartTls = StartTls.OFFERED
    tls_min: ssl.TLSVersion | None = None
    tls_max: ssl.TLSVersion | None = None
    tlsa: tuple[tuple[int, int, int], ...] = ()
    tlsa_raw: tuple[tuple[int, int, int, bytes], ...] = ()
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


_DOMAIN_KEYS = ("dnssec", "mx", "mta_sts_txt", "tlsrpt_txt", "policy", "policy_host")
_RESPONSE_KEYS = ("behaviour", "status", "content_type", "headers", "location")
_RESPONSE_NUMBERS = ("trickle_interval", "trickle_bytes", "oversize_bytes")
_POLICY_HOST_KEYS = ("cert", "names", "key_type", "address", *_RESPONSE_KEYS, *_RESPONSE_NUMBERS)
_HOST_KEYS: tuple[str, ...] = ("cert", "names", "key_type", "address", "starttls")
_HOST_KEYS += ("tls_min", "tls_max", "tlsa", "tlsa_raw", "replies")


def name_of(node: Node) -> str:
    """A canonical DNS name from ``node`` (a SpecError when it is not one)."""
    try:
        return canonical_name(node.text())
    except ZoneError as exc:
        raise node.error(str(exc)) from None


def address_of(node: Node) -> str:
    """A 127.0.0.0/8 address from ``node``; anything else is refused."""
    text = node.text()
    if not is_loopback_v4(text):
        raise node.error(f"{text!r} is not an IPv4 loopback address; the world uses 127.0.0.0/8")
    return text


def _profile(node: Node) -> CertProfile:
    allowed = [p.value for p in CertProfile]
    if node.value not in allowed:
        raise node.error(f"{node.value!r} is not a certificate profile", allowed)
    return CertProfile(node.value)


def _host_cert(node: Node) -> CertProfile | None:
    if node.value == _NO_CERT:
        return None
    allowed = [p.value for p in CertProfile] + [_NO_CERT]
    if node.value not in allowed:
        raise node.error(f"{node.value!r} is not a certificate profile", allowed)
    return CertProfile(node.value)


def _tls(node: Node) -> ssl.TLSVersion:
    if node.value not in _TLS:
        raise node.error(f"{node.value!r} is not a TLS version", _TLS)
    return ssl.TLSVersion[_TLS[node.value]]


def _mx(node: Node) -> tuple[int, str]:
    shape = "expected [preference, host] or 'preference host'"
    if isinstance(node.value, str):
        pref, _, exchange = node.value.strip().partition(" ")
        if not pref.isdigit():
            raise node.error(shape)
        return Node(int(pref), node.file, node.path).integer(0, 65535), name_of(
            Node(exchange.strip(), node.file, node.path)
        )
    parts = node.items()
    if len(parts) != 2:
        raise node.error(shape)
    return parts[0].integer(0, 65535), name_of(parts[1])


def _response(node: Node, entries: dict[str, Node]) -> PolicyResponse:
    kw: dict[str, Any] = {}
    if "behaviour" in entries:
        kw["behaviour"] = entries["behaviour"].choice(PolicyBehaviour)
    if "status" in entries:
        kw["status"] = entries["status"].integer(100, 599)
    if "content_type" in entries:
        ct = entries["content_type"]
        kw["content_type"] = None if ct.value is False else ct.text()
    if "headers" in entries:
        kw["headers"] = tuple((k, v.text()) for k, v in entries["headers"].mapping().items())
    if "location" in entries:
        kw["location"] = entries["location"].text()
    for key in _RESPONSE_NUMBERS:
        if key in entries:
            number = entries[key].number(0)
            kw[key] = number if key == "trickle_interval" else int(number)
    if kw.get("behaviour") is PolicyBehaviour.REDIRECT and "status" not in kw:
        kw["status"] = 301
    try:
        return PolicyResponse(**kw)
    except ValueError as exc:
        raise node.error(str(exc)) from None


def _policy_host(node: Node) -> PolicyHostSpec:
    e = node.table(_POLICY_HOST_KEYS)
    response = _response(node, e)
    return PolicyHostSpec(
        cert=_profile(e["cert"]) if "cert" in e else CertProfile.VALID,
        names=tuple(name_of(n) for n in e["names"].items()) if "names" in e else (),
        key_type=e["key_type"].choice(KeyType) if "key_type" in e else None,
        address=address_of(e["address"]) if "address" in e else None,
        response=response,
    )


def _txt_rrs(node: Node) -> tuple[tuple[str, ...], ...]:
    return tuple(rr.strings() for rr in node.items())


def domain_from(node: Node, name: str, base: DomainSpec | None = None) -> DomainSpec:
    """Parse one ``[domains."<name>"]`` table, over ``base`` when given (a mutation)."""
    e = node.table(_DOMAIN_KEYS)
    d = base or DomainSpec(name)
    changes: dict[str, Any] = {}
    if "dnssec" in e:
        changes["dnssec"] = e["dnssec"].choice(DnssecStatus)
    if "mx" in e:
        changes["mx"] = tuple(_mx(n) for n in e["mx"].items())
    for key in ("mta_sts_txt", "tlsrpt_txt"):
        if key in e:
            changes[key] = _txt_rrs(e[key])
    if "policy" in e:
        changes["policy"] = None if e["policy"].value is False else e["policy"].text()
    if "policy_host" in e:
        ph = e["policy_host"]
        changes["policy_host"] = None if ph.value is False else _policy_host(ph)
    return replace(d, **changes)


def host_from(node: Node, name: str) -> HostSpec:
    """Parse one ``[hosts."<name>"]`` table."""
    e = node.table(_HOST_KEYS)
    host = HostSpec(
        name=name,
        cert=_host_cert(e["cert"]) if "cert" in e else CertProfile.VALID,
        names=tuple(name_of(n) for n in e["names"].items()) if "names" in e else (),
        key_type=e["key_type"].choice(KeyType) if "key_type" in e else None,
        address=address_of(e["address"]) if "address" in e else None,
        starttls=e["starttls"].choice(StartTls) if "starttls" in e else StartTls.OFFERED,
        tls_min=_tls(e["tls_min"]) if "tls_min" in e else None,
        tls_max=_tls(e["tls_max"]) if "tls_max" in e else None,
        tlsa=tuple(parse_tlsa(n) for n in e["tlsa"].items()) if "tlsa" in e else (),
        tlsa_raw=tuple(parse_tlsa(n, raw=True) for n in e["tlsa_raw"].items())
        if "tlsa_raw" in e
        else (),
        script=parse_replies(e["replies"]) if "replies" in e else Script(),
    )
    if host.cert is None and host.starttls is StartTls.OFFERED:
        raise e["cert"].error("starttls = 'offered' needs a certificate; set starttls too")
    if host.cert is None and host.tlsa:
        raise e["tlsa"].error("TLSA computed from the certificate needs one; use tlsa_raw")
    if host.tls_min and host.tls_max and host.tls_min > host.tls_max:
        raise e["tls_min"].error(f"tls_min is above tls_max {e['tls_max'].value!r}")
    return host


def _dns_rules(node: Node) -> tuple[DnsRule, ...]:
    allowed = [b.value for b in DnsBehaviour] + [s.value for s in DnssecStatus]
    rules = []
    for raw_name, per_type in node.mapping().items():
        name = name_of(Node(raw_name, node.file, per_type.path))
        for rrtype, action in per_type.mapping().items():
            delay = 0
            if isinstance(action.value, Mapping):
                t = action.table(("behaviour", "delay_ms"), required=("behaviour",))
                delay = t["delay_ms"].integer(0, 600_000) if "delay_ms" in t else 0
                action = t["behaviour"]
            if action.value not in allowed:
                raise action.error(f"{action.value!r} is not a DNS behaviour or status", allowed)
            value = action.value
            statuses = {s.value for s in DnssecStatus}
            act = DnssecStatus(value) if value in statuses else DnsBehaviour(value)
            rtype = None if rrtype == "*" else rrtype.upper()
            rules.append(DnsRule(name, rtype, act, delay))
    return tuple(rules)


def load_world_spec(
    data: Mapping[str, Any], source: str = "<world>", prefix: str = ""
) -> WorldSpec:
    """Check and complete a world spec given as a dict.

    Args:
        data: the world table (e.g. ``tomllib.load(...)`` or a scenario's ``[world]``).
        source: the file name errors start with.
        prefix: the key path of ``data`` inside that file (``"world"`` in a scenario).

    Returns:
        The complete :class:`WorldSpec`.

    Raises:
        SpecError: an unknown key, a bad value, or an inconsistency; the message names
            ``source: key.path`` and the value.
    """
    keys = ("domains", "hosts", "dns", "records", "proxy", "report_sink")
    top = Node(data, source, prefix).table(keys)
    domains: dict[str, DomainSpec] = {}
    for raw, node in top["domains"].mapping().items() if "domains" in top else ():
        name = name_of(Node(raw, source, node.path))
        domains[name] = domain_from(node, name)
    hosts: dict[str, HostSpec] = {}
    for raw, node in top["hosts"].mapping().items() if "hosts" in top else ():
        name = name_of(Node(raw, source, node.path))
        hosts[name] = host_from(node, name)
    for d in domains.values():
        for _, target in d.mx:
            if target and target not in hosts:  # "" is the null MX "." (RFC 7505)
                hosts[target] = HostSpec(target)
    proxy = None
    if "proxy" in top:
        p = top["proxy"].table(("fault", "address"))
        proxy = ProxySpec(
            fault=p["fault"].choice(ProxyFault) if "fault" in p else ProxyFault.NONE,
            address=address_of(p["address"]) if "address" in p else None,
        )
    sink = None
    if "report_sink" in top:
        r = top["report_sink"].table(("name", "cert", "address", "statuses"), required=("name",))
        sink = ReportSinkSpec(
            name=name_of(r["name"]),
            cert=_profile(r["cert"]) if "cert" in r else CertProfile.VALID,
            address=address_of(r["address"]) if "address" in r else None,
            statuses=tuple(
                (path, tuple(s.integer(100, 599) for s in codes.items()))
                for path, codes in (r["statuses"].mapping().items() if "statuses" in r else ())
            ),
        )
    return WorldSpec(
        domains=MappingProxyType(domains),
        hosts=MappingProxyType(hosts),
        dns=_dns_rules(top["dns"]) if "dns" in top else (),
        records=tuple(parse_record(n) for n in top["records"].items()) if "records" in top else (),
        proxy=proxy,
        report_sink=sink,
        source=source,
        prefix=prefix,
    )


def read_world_spec(path: str | Path) -> WorldSpec:
    """Read and check a ``world.toml`` file.

    Raises:
        SpecError: the file cannot be read, is not TOML, or holds a bad spec.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(str(path), "", None, f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), "", None, f"not valid TOML: {exc}") from None
    return load_world_spec(data, str(path))
