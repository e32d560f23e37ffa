"""Regression capture: record what a live domain serves, as a scenario that replays it.

Theory of operation
-------------------
:func:`capture_domain` looks at a domain through the engine's own adapters, so it
sees exactly what a delivery would (``engine.io.dns.DnsResolver``,
``engine.io.fetch.PolicyFetcher``, ``engine.io.smtp.SmtpClient`` through one
``Dialer``):

* DNS: TXT at ``_mta-sts`` and ``_smtp._tls``, MX, A/AAAA of every MX host and of
  ``mta-sts.<domain>``, TLSA at ``_25._tcp.<host>``, each with its status and AD bit;
* the policy: status, ``Content-Type``, body, redirect target, and the certificate
  (the fetcher's judge *records* the chain and accepts it, so a bad certificate still
  yields the body, judged here afterwards);
* each MX: banner, STARTTLS offered / absent / refused / broken, the TLS versions it
  accepts (a second handshake capped at TLS 1.2 when the first said 1.3), and its
  certificate's properties (:class:`CertFacts`).

:func:`capture_scenario` turns a :class:`Capture` into a scenario dict whose world
reproduces it: the same records and faults, the closest certificate profile per host
(:func:`closest_profile`), TLSA records that match the served certificate computed
afresh (the others copied raw, so they still match nothing), and addresses left to
the world (loopback). The ``[sender]`` and send step come from the caller; an
optional live delivery attempt (:func:`record_delivery`) fills in ``[steps.expect]``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from engine.config import EngineConfig
from engine.core.discovery import FetchFailed
from engine.core.events import ListSink
from engine.core.pkix import rfc6125_match, verify_chain
from engine.core.tlsa import parse_tlsa, record_matches
from engine.delivery.agent import Engine
from engine.delivery.probe import ProbeStatus, StartTlsProbe, probe_starttls
from engine.io.dialer import Dialer
from engine.io.dns import DnsAnswer, DnsResolver
from engine.io.fetch import PolicyFetcher

__all__ = [
    "Capture",
    "CertFacts",
    "DnsFacts",
    "FixedClock",
    "MxFacts",
    "PolicyFacts",
    "capture_domain",
    "capture_scenario",
    "cert_facts",
    "closest_profile",
]

_FAULTS = {
    "servfail": "servfail",
    "timeout": "drop",
    "refused": "refused",
    "bogus": "bogus",
    "error": "garbage",
    "nxdomain": "nxdomain",
    "nodata": "nodata",
}


@dataclass(frozen=True, slots=True)
class DnsFacts:
    """One lookup: status (``ok``, ``nxdomain``, ``servfail`` ...), AD, RDATA text."""

    name: str
    rdtype: str
    status: str
    secure: bool
    records: tuple[str, ...] = ()
    txt: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class CertFacts:
    """A served certificate, judged at the capture's clock against the given CA."""

    names: tuple[str, ...]
    common_name: str | None
    validity: str  # current | expired | not-yet-valid
    chains: bool  # to the CA, dates aside
    self_signed: bool
    chain_length: int
    key_type: str
    matches_host: bool
    chain_problem: str | None = None  # why it does not chain, when it does not


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """The policy host's answer (``behaviour``: serve, redirect, hang, oversize, reset)."""

    behaviour: str
    status: int | None = None
    content_type: str | None = None
    body: str | None = None
    location: str | None = None
    cert: CertFacts | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MxFacts:
    """One MX host: addresses, TLSA, and what its SMTP service does."""

    host: str
    preference: int
    a: DnsFacts
    tlsa: DnsFacts | None
    starttls: str  # offered | absent | refused | broken-close | unreachable
    tls_versions: tuple[str, ...] = ()
    cert: CertFacts | None = None
    tlsa_match: tuple[bool, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Capture:
    """Everything :func:`capture_domain` saw of one domain."""

    domain: str
    at: float
    sts_txt: DnsFacts
    tlsrpt_txt: DnsFacts
    mx: DnsFacts
    policy_a: DnsFacts
    policy: PolicyFacts | None
    hosts: tuple[MxFacts, ...] = field(default_factory=tuple)


class FixedClock:
    """A clock that always says ``at`` (certificates are judged at one instant)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        """``at``."""
        return self.at


def _dns(a: DnsAnswer) -> DnsFacts:
    txt = (
        tuple(tuple(s.decode("utf-8", "replace") for s in rr) for rr in a.txt_strings())
        if (a.rdtype == "TXT")
        else ()
    )
    return DnsFacts(a.qname, a.rdtype, a.status.value, a.secure, a.rrs_text, txt)


def cert_facts(chain: Sequence[bytes], roots: Sequence[bytes], host: str, at: float) -> CertFacts:
    """Judge a served chain (DER, leaf first) for ``host`` at POSIX time ``at``."""
    leaf = x509.load_der_x509_certificate(chain[0])
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    cns = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    nb, na = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
    validity = "expired" if at > na else "not-yet-valid" if at < nb else "current"
    verdict = verify_chain(list(chain), list(roots), (nb + na) / 2)  # dates aside
    key = "ecdsa" if isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) else "rsa"
    return CertFacts(
        names=names,
        common_name=str(cns[0].value) if cns else None,
        validity=validity,
        chains=verdict.ok,
        self_signed=leaf.issuer == leaf.subject,
        chain_length=len(chain),
        key_type=key,
        matches_host=rfc6125_match(leaf, host),
        chain_problem=None if verdict.ok else verdict.reason,
    )


def closest_profile(c: CertFacts, host: str) -> tuple[str, tuple[str, ...]]:
    """The certificate profile (and ``names``, when not the host's own) nearest ``c``."""
    own = names = tuple(n.lower() for n in c.names)
    if c.self_signed:
        profile = "self-signed"
    elif not c.chains and "path length" in (c.chain_problem or ""):
        # It reaches the trusted root but breaks a CA's pathLenConstraint (DANE-30).
        profile = "via-two-intermediates-pathlen0"
    elif not c.chains and "max depth" in (c.chain_problem or ""):
        profile = "long-chain"  # it reaches no root within the verifier's depth
    elif not c.chains:
        profile = "untrusted"  # also a missing intermediate: both fail to chain
    elif c.validity != "current":
        profile = c.validity
    elif not names and c.common_name and c.common_name.lower() == host:
        return "cn-only", ()
    elif names == (host,):
        profile = "via-intermediate" if c.chain_length > 1 else "valid"
    elif c.matches_host and all(n.startswith("*.") for n in names):
        return "wildcard", ()
    else:
        profile = "valid" if names and not any("*" in n for n in names) else "wrong-name"
        if profile == "wrong-name":
            return profile, ()
    keep = own if own and own != (host,) and not any("*" in n for n in own) else ()
    return profile, keep


async def _starttls(
    dialer: Dialer, address: str, host: str, timeout: float, maximum: ssl.TLSVersion | None
) -> StartTlsProbe:
    return await probe_starttls(
        dialer,
        address,
        host,
        timeout=timeout,
        local_hostname="sts-harness-capture.invalid",
        maximum=maximum,
    )


async def _probe_mx(
    resolver: DnsResolver,
    dialer: Dialer,
    roots: Sequence[bytes],
    pref: int,
    host: str,
    at: float,
    timeout: float,
) -> MxFacts:
    a = _dns(await resolver.query(host, "A"))
    tlsa = _dns(await resolver.query(f"_25._tcp.{host}", "TLSA")) if a.secure else None
    if not a.records:
        return MxFacts(host, pref, a, tlsa, "unreachable", detail=f"no address ({a.status})")
    address = a.records[0]
    probe = await _starttls(dialer, address, host, timeout, None)
    tls = probe.tls
    if probe.status is not ProbeStatus.OFFERED or tls is None:
        return MxFacts(host, pref, a, tlsa, probe.status.value, detail=probe.detail)
    versions = [tls.protocol] if tls.protocol else []
    if tls.protocol == "TLSv1.3":
        older = await _starttls(dialer, address, host, timeout, ssl.TLSVersion.TLSv1_2)
        if older.status is ProbeStatus.OFFERED and older.tls and older.tls.protocol:
            versions.append(older.tls.protocol)
    chain = list(tls.chain)
    matches = tuple(
        any(record_matches(parse_tlsa(text), der) for der in chain)
        for text in (tlsa.records if tlsa else ())
    )
    cert = cert_facts(chain, roots, host, at) if chain else None
    return MxFacts(host, pref, a, tlsa, "offered", tuple(versions), cert, matches)


async def _policy(
    engine: Engine, domain: str, roots: Sequence[bytes], timeout: float
) -> PolicyFacts:
    seen: list[list[bytes]] = []

    def record(chain: list[bytes], host: str, now: float) -> str | None:
        seen.append(chain)
        return None  # accept, so the body is seen; judged below

    at = engine.clock.now()
    fetcher = PolicyFetcher(
        engine.resolver, engine.services.dialer, record, engine.clock, timeout=timeout
    )
    try:
        outcome = await fetcher.fetch(domain)
    finally:
        await fetcher.aclose()
    host = f"mta-sts.{domain}"
    cert = cert_facts(seen[0], roots, host, at) if seen and seen[0] else None
    if not isinstance(outcome, FetchFailed):
        body = outcome.body.decode("utf-8", "surrogateescape")
        return PolicyFacts("serve", 200, outcome.content_type, body, cert=cert)
    kind, detail = outcome.kind.value, outcome.detail
    if kind in ("status", "redirect"):
        status = int(detail.split()[1])
        location = detail.partition(" to ")[2].strip("'\"") or None
        behaviour = "redirect" if kind == "redirect" else "serve"
        return PolicyFacts(behaviour, status, location=location, cert=cert, detail=detail)
    behaviour = {"timeout": "hang", "oversize": "oversize"}.get(kind, "reset")
    return PolicyFacts(behaviour, cert=cert, detail=f"{kind}: {detail}")


async def capture_domain(
    domain: str,
    *,
    resolvers: Sequence[tuple[str, int]],
    roots: Sequence[bytes],
    dialer: Dialer | None = None,
    at: float | None = None,
    timeout: float = 10.0,
) -> Capture:
    """Record what ``domain`` serves (see the module docstring).

    Args:
        domain: the recipient domain.
        resolvers: validating resolvers as (address, port); AD counts from loopback only.
        roots: the trusted CA certificates (DER) certificates are judged against.
        dialer: where connections go (an endpoint map for a simulated world).
        at: the time certificates are judged at (default: now).
        timeout: seconds per DNS query, SMTP stage and policy fetch.
    """
    domain = domain.rstrip(".").lower()
    at = time.time() if at is None else at
    config = EngineConfig()
    config = replace(
        config,
        dns=replace(config.dns, resolvers=tuple(resolvers), timeout=timeout),
        policy_fetch=replace(config.policy_fetch, timeout=timeout),
    )
    # The engine's own resolver (AD believed from loopback only) and fetcher.
    async with Engine(
        config, sink=ListSink(), dialer=dialer or Dialer(), roots=list(roots), clock=FixedClock(at)
    ) as engine:
        q = engine.resolver.query
        sts = _dns(await q(f"_mta-sts.{domain}", "TXT"))
        rpt = _dns(await q(f"_smtp._tls.{domain}", "TXT"))
        mx_answer = await q(domain, "MX")
        policy_a = _dns(await q(f"mta-sts.{domain}", "A"))
        policy = await _policy(engine, domain, roots, timeout) if policy_a.records else None
        hosts = [
            await _probe_mx(engine.resolver, engine.services.dialer, roots, pref, host, at, timeout)
            for pref, host in sorted(mx_answer.mx_hosts())
            if host
        ]
    return Capture(domain, at, sts, rpt, _dns(mx_answer), policy_a, policy, tuple(hosts))


def capture_scenario(
    c: Capture,
    *,
    sender: Mapping[str, Any],
    send: Mapping[str, Any],
    expect: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The scenario dict reproducing ``c`` (see the module docstring).

    Args:
        c: the capture.
        sender: the ``[sender]`` table to replay with.
        send: the send step's ``{from, to}``.
        expect: ``[steps.expect]`` recorded from a live delivery attempt, if any.
    """
    step: dict[str, Any] = {"send": dict(send)}
    if expect:
        step["expect"] = dict(expect)
    return {
        "scenario": {
            "id": f"capture-{c.domain.replace('.', '-')}",
            "title": f"captured from {c.domain}",
            "topic": "regressions",
            "description": f"Recorded by `sts-harness capture {c.domain}` at {int(c.at)}.",
        },
        "world": _world(c),
        "sender": dict(sender),
        "steps": [step],
    }


def _zone(f: DnsFacts) -> str:
    return "bogus" if f.status == "bogus" else "secure" if f.secure else "insecure"


class _WorldBuilder:
    """Accumulates the world table: domains, hosts and DNS fault/status rules."""

    def __init__(self, domain: str, status: str) -> None:
        self.domain = domain
        self.domains: dict[str, dict[str, Any]] = {domain: {"dnssec": status}}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, str]] = {}

    def fault(self, f: DnsFacts, *, absent_too: bool = False) -> bool:
        """Add a rule for a failed lookup; True when there was one."""
        if f.status == "ok" or (f.status in ("nxdomain", "nodata") and not absent_too):
            return f.status != "ok"
        self.rules.setdefault(f.name, {})[f.rdtype] = _FAULTS.get(f.status, "servfail")
        return True

    def zone_of(self, host: str, f: DnsFacts) -> None:
        """Declare the zone of an out-of-domain host, or mark an in-zone difference."""
        d = self.domain
        if host == d or host.endswith("." + d):
            if _zone(f) != self.domains[d]["dnssec"] and f.status == "ok":
                self.rules.setdefault(host, {})[f.rdtype] = _zone(f)
        elif (parent := host.partition(".")[2]) and "." in parent:
            self.domains.setdefault(parent, {"dnssec": _zone(f)})

    def host(self, m: MxFacts) -> None:
        spec: dict[str, Any] = {}
        self.zone_of(m.host, m.a)
        self.fault(m.a, absent_too=True)
        if m.cert is not None:
            profile, names = closest_profile(m.cert, m.host)
            spec["cert"] = profile
            if names:
                spec["names"] = list(names)
            spec["key_type"] = m.cert.key_type
        else:
            spec["cert"] = "none"
            spec["starttls"] = "broken-close" if m.starttls == "unreachable" else m.starttls
            if m.starttls == "unreachable" and m.a.records:
                spec["replies"] = {"banner": "disconnect"}  # closest to "no SMTP service"
        if m.tls_versions == ("TLSv1.2",):
            spec["tls_max"] = "1.2"
        elif m.tls_versions == ("TLSv1.3",):
            spec["tls_min"] = "1.3"
        if m.tlsa is not None and not self.fault(m.tlsa):
            for text, match in zip(m.tlsa.records, m.tlsa_match, strict=False):
                u, s, t, *_ = text.split()
                if match and m.cert is not None:
                    spec.setdefault("tlsa", []).append([int(u), int(s), int(t)])
                else:
                    spec.setdefault("tlsa_raw", []).append(text)
            for text in m.tlsa.records[len(m.tlsa_match) :]:
                spec.setdefault("tlsa_raw", []).append(text)
        self.hosts[m.host] = spec

    def policy(self, c: Capture) -> None:
        d, p = self.domains[self.domain], c.policy
        if self.fault(c.policy_a) or p is None:
            return
        ph: dict[str, Any] = {}
        if p.cert is not None:
            profile, names = closest_profile(p.cert, f"mta-sts.{self.domain}")
            ph["cert"] = profile
            if names:
                ph["names"] = list(names)
        if p.behaviour != "serve":
            ph["behaviour"] = p.behaviour
        if p.status not in (None, 200):
            ph["status"] = p.status
        if p.location:
            ph["location"] = p.location
        if p.behaviour == "oversize":
            ph["oversize_bytes"] = 10 * 1024 * 1024
        if p.body is not None:
            d["policy"] = p.body
            if p.content_type != "text/plain":
                ph["content_type"] = p.content_type if p.content_type is not None else False
        d["policy_host"] = ph


def _world(c: Capture) -> dict[str, Any]:
    w = _WorldBuilder(c.domain, _zone(c.mx))
    d = w.domains[c.domain]
    if not w.fault(c.mx):
        d["mx"] = [f"{m.preference} {m.host}" for m in c.hosts]
    for key, f in (("mta_sts_txt", c.sts_txt), ("tlsrpt_txt", c.tlsrpt_txt)):
        if not w.fault(f) and f.txt:
            d[key] = [list(rr) for rr in f.txt]
    w.policy(c)
    for m in c.hosts:
        w.host(m)
    world: dict[str, Any] = {"domains": w.domains, "hosts": w.hosts}
    if w.rules:
        world["dns"] = w.rules
    return world
