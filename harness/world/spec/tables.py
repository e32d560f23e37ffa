"""Parsers for the world spec's tables: each takes a TomlNode and returns a checked value.

Errors are :class:`~engine.core.errors.ConfigError` at the offending key path. ``spec.py``
composes them into :func:`~harness.world.spec.reader.load_world_spec`; the world's
mutations reuse :func:`domain_from`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from certs import CertProfile, KeyType
from engine.core.tomlnode import TomlNode
from harness.world.dns.answer import DnsBehaviour
from harness.world.dns.zones import DnssecStatus
from harness.world.mta.script import MxStartTls, Script
from harness.world.spec.model import (
    DerivedTlsa,
    DnsRule,
    DomainSpec,
    HostSpec,
    PolicyHostSpec,
    ProxySpec,
    ReportSinkSpec,
)
from harness.world.spec.records import parse_replies, parse_tlsa
from harness.world.spec.values import address_of, member_of, name_of, strings_of
from harness.world.web.behaviour import PolicyBehaviour, PolicyResponse, ProxyFault

__all__ = [
    "dns_rules_from",
    "domain_from",
    "host_from",
    "proxy_from",
    "report_sink_from",
]

_TLS = {"1.0": "TLSv1", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}
_NO_CERT = "none"
_DOMAIN_KEYS = ("dnssec", "mx", "mta_sts_txt", "tlsrpt_txt", "policy", "policy_host")
_RESPONSE_KEYS = ("behaviour", "status", "content_type", "headers", "location")
_RESPONSE_NUMBERS = ("trickle_interval", "trickle_bytes", "oversize_bytes")
_POLICY_HOST_KEYS: tuple[str, ...] = (
    "cert",
    "names",
    "key_type",
    "address",
    *_RESPONSE_KEYS,
    *_RESPONSE_NUMBERS,
)
_POLICY_HOST_KEYS += ("tls_min", "tls_max")
_HOST_KEYS: tuple[str, ...] = ("cert", "names", "cn", "key_type", "address", "port", "starttls")
_HOST_KEYS += ("tls_min", "tls_max", "tlsa", "tlsa_raw", "sni_certs", "replies")
_DERIVED_TLSA_KEYS = ("usage", "selector", "mtype", "data_from", "depth")


def _profile(node: TomlNode) -> CertProfile:
    return node.member(CertProfile)


def _host_cert(node: TomlNode) -> CertProfile | None:
    if node.value == _NO_CERT:
        return None
    allowed = [p.value for p in CertProfile] + [_NO_CERT]
    if node.value not in allowed:
        raise node.bad(f"one of {', '.join(allowed)}", allowed)
    return CertProfile(node.value)


def _tls(node: TomlNode) -> ssl.TLSVersion:
    return ssl.TLSVersion[_TLS[node.choice(tuple(_TLS))]]


def _tls_range(
    e: dict[str, TomlNode],
) -> tuple[ssl.TLSVersion | None, ssl.TLSVersion | None]:
    low = _tls(e["tls_min"]) if "tls_min" in e else None
    high = _tls(e["tls_max"]) if "tls_max" in e else None
    if low and high and low > high:
        raise e["tls_min"].bad(f"a version no higher than tls_max ({e['tls_max'].value})")
    return low, high


def _derived_tlsa(node: TomlNode) -> DerivedTlsa:
    t = node.table(_DERIVED_TLSA_KEYS, required=("usage", "selector", "mtype"))
    u, s, m = (t[k].integer(0, 255) for k in ("usage", "selector", "mtype"))
    data_from = parse_tlsa(t["data_from"]) if "data_from" in t else (u, s, m)
    depth = t["depth"].integer(-16, 16) if "depth" in t else None
    return DerivedTlsa(u, s, m, data_from, depth)


def _tlsa_entries(
    node: TomlNode,
) -> tuple[tuple[tuple[int, int, int], ...], tuple[DerivedTlsa, ...]]:
    """``tlsa``: ``[u, s, m]`` entries, and table entries (:class:`DerivedTlsa`)."""
    plain: list[tuple[int, int, int]] = []
    derived: list[DerivedTlsa] = []
    for n in node.items():
        if isinstance(n.value, Mapping):
            derived.append(_derived_tlsa(n))
        else:
            plain.append(parse_tlsa(n))
    return tuple(plain), tuple(derived)


def _sni_certs(node: TomlNode) -> tuple[tuple[str, CertProfile], ...]:
    return tuple(
        (name_of(TomlNode(raw, node.file, n.path)), _profile(n)) for raw, n in node.table().items()
    )


def _mx(node: TomlNode) -> tuple[int, str]:
    shape = "[preference, host] or 'preference host'"
    if isinstance(node.value, str):
        pref, _, exchange = node.value.strip().partition(" ")
        if not pref.isdigit():
            raise node.bad(shape)
        return TomlNode(int(pref), node.file, node.path).integer(0, 65535), name_of(
            TomlNode(exchange.strip(), node.file, node.path)
        )
    parts = node.items()
    if len(parts) != 2:
        raise node.bad(shape)
    return parts[0].integer(0, 65535), name_of(parts[1])


def _response(node: TomlNode, entries: dict[str, TomlNode]) -> PolicyResponse:
    kw: dict[str, Any] = {}
    if "behaviour" in entries:
        kw["behaviour"] = member_of(entries["behaviour"], PolicyBehaviour)
    if "status" in entries:
        kw["status"] = entries["status"].integer(100, 599)
    if "content_type" in entries:
        ct = entries["content_type"]
        kw["content_type"] = None if ct.value is False else ct.text()
    if "headers" in entries:
        kw["headers"] = tuple((k, v.text()) for k, v in entries["headers"].table().items())
    if "location" in entries:
        kw["location"] = entries["location"].text()
    for key in _RESPONSE_NUMBERS:
        if key in entries:
            number = entries[key].number(above=0)
            kw[key] = number if key == "trickle_interval" else int(number)
    if kw.get("behaviour") is PolicyBehaviour.REDIRECT and "status" not in kw:
        kw["status"] = 301
    try:
        return PolicyResponse(**kw)
    except ValueError as exc:
        raise node.error(str(exc)) from None


def _policy_host(node: TomlNode) -> PolicyHostSpec:
    e = node.table(_POLICY_HOST_KEYS)
    response = _response(node, e)
    tls_min, tls_max = _tls_range(e)
    return PolicyHostSpec(
        cert=_profile(e["cert"]) if "cert" in e else CertProfile.VALID,
        names=tuple(name_of(n) for n in e["names"].items()) if "names" in e else (),
        key_type=member_of(e["key_type"], KeyType) if "key_type" in e else None,
        address=address_of(e["address"]) if "address" in e else None,
        response=response,
        tls_min=tls_min,
        tls_max=tls_max,
    )


def _txt_rrs(node: TomlNode) -> tuple[tuple[str, ...], ...]:
    return tuple(strings_of(rr) for rr in node.items())


def domain_from(node: TomlNode, name: str, base: DomainSpec | None = None) -> DomainSpec:
    """Parse one ``[domains."<name>"]`` table, over ``base`` when given (a mutation)."""
    e = node.table(_DOMAIN_KEYS)
    d = base or DomainSpec(name)
    changes: dict[str, Any] = {}
    if "dnssec" in e:
        changes["dnssec"] = member_of(e["dnssec"], DnssecStatus)
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


def host_from(node: TomlNode, name: str) -> HostSpec:
    """Parse one ``[hosts."<name>"]`` table."""
    e = node.table(_HOST_KEYS)
    tls_min, tls_max = _tls_range(e)
    tlsa, derived = _tlsa_entries(e["tlsa"]) if "tlsa" in e else ((), ())
    host = HostSpec(
        name=name,
        cert=_host_cert(e["cert"]) if "cert" in e else CertProfile.VALID,
        names=tuple(name_of(n) for n in e["names"].items()) if "names" in e else (),
        cn=name_of(e["cn"]) if "cn" in e else None,
        key_type=member_of(e["key_type"], KeyType) if "key_type" in e else None,
        address=address_of(e["address"]) if "address" in e else None,
        port=e["port"].integer(1, 65535) if "port" in e else 25,
        starttls=member_of(e["starttls"], MxStartTls) if "starttls" in e else MxStartTls.OFFERED,
        tls_min=tls_min,
        tls_max=tls_max,
        tlsa=tlsa,
        tlsa_derived=derived,
        tlsa_raw=tuple(parse_tlsa(n, raw=True) for n in e["tlsa_raw"].items())
        if "tlsa_raw" in e
        else (),
        sni_certs=_sni_certs(e["sni_certs"]) if "sni_certs" in e else (),
        script=parse_replies(e["replies"]) if "replies" in e else Script(),
    )
    if host.cert is None and host.starttls.needs_cert:
        mode = host.starttls.value
        raise e["cert"].error(f"starttls = {mode!r} needs a certificate; set starttls too")
    if host.cert is None and (host.tlsa or host.tlsa_derived):
        raise e["tlsa"].error("TLSA computed from the certificate needs one; use tlsa_raw")
    if host.cert is None and host.sni_certs:
        raise e["sni_certs"].error("SNI certificates need a default certificate (cert) too")
    if host.port in (53, 443):
        raise e["port"].error("53 and 443 are the DNS's and the HTTPS hosts' service ports")
    return host


def dns_rules_from(node: TomlNode) -> tuple[DnsRule, ...]:
    allowed = [b.value for b in DnsBehaviour] + [s.value for s in DnssecStatus]
    what = f"a DNS behaviour or DNSSEC status: one of {', '.join(allowed)}"
    rules = []
    for raw_name, per_type in node.table().items():
        name = name_of(TomlNode(raw_name, node.file, per_type.path))
        for rrtype, action in per_type.table().items():
            delay = 0
            if isinstance(action.value, Mapping):
                t = action.table(("behaviour", "delay_ms"), required=("behaviour",))
                delay = t["delay_ms"].integer(0, 600_000) if "delay_ms" in t else 0
                action = t["behaviour"]
            if action.value not in allowed:
                raise action.bad(what, allowed)
            value = action.value
            statuses = {s.value for s in DnssecStatus}
            act = DnssecStatus(value) if value in statuses else DnsBehaviour(value)
            rtype = None if rrtype == "*" else rrtype.upper()
            rules.append(DnsRule(name, rtype, act, delay))
    return tuple(rules)


def proxy_from(node: TomlNode) -> ProxySpec:
    """Parse the ``[proxy]`` table."""
    p = node.table(("fault", "address"))
    return ProxySpec(
        fault=member_of(p["fault"], ProxyFault) if "fault" in p else ProxyFault.NONE,
        address=address_of(p["address"]) if "address" in p else None,
    )


def report_sink_from(node: TomlNode) -> ReportSinkSpec:
    """Parse the ``[report_sink]`` table."""
    r = node.table(("name", "cert", "address", "statuses"), required=("name",))
    statuses = r["statuses"].table().items() if "statuses" in r else ()
    return ReportSinkSpec(
        name=name_of(r["name"]),
        cert=_profile(r["cert"]) if "cert" in r else CertProfile.VALID,
        address=address_of(r["address"]) if "address" in r else None,
        statuses=tuple(
            (path, tuple(s.integer(100, 599) for s in codes.items())) for path, codes in statuses
        ),
    )
