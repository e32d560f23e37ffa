"""What a world *must* imply, derived from its spec alone: the fuzz oracle.

Theory of operation
-------------------
The invariants must not trust the engine's account of itself, so every fact they
rest on is re-derived here from the scenario's world spec and ``[sender]`` table,
with small independent readings of the RFC rules (none of the engine's parsers are
imported):

* the destination's profile (the domain entry over the Default entry over the
  appliance defaults, docs/gateway-behaviour.md §1);
* whether an MTA-STS ``enforce`` policy is *certainly* in force: exactly one valid
  ``v=STSv1`` TXT record (RFC 8461 §3.1), answered without a fault; a policy host
  whose certificate verifies for ``mta-sts.<domain>`` and that answers 200 with
  ``text/plain`` (§3.3); and a body that parses strictly with ``mode: enforce``
  (§3.2). Anything doubtful makes it False, which only ever *removes* assertions;
* per MX host: whether the policy permits it (§4.1: case-insensitive, ``*.`` is
  exactly one left-most label), whether its certificate profile verifies for it
  (chain to the trusted root, current, a SAN DNS-ID for the host), and its DANE
  state (RFC 7672 §2.2: ``usable`` / ``unusable`` / ``error`` / ``none``, or
  ``unknown`` where the RFC allows either reading, as with an insecure MX RRset
  pointing into a signed zone, DANE-10).

The certificate oracle is the profile table of ``certs/profiles.py``; TLSA records
given as ``tlsa = [[u, s, m]]`` are computed from the served certificate and so
match it, raw ``tlsa_raw`` records never do. Raw ``[[records]]`` are not read.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.world.dns.zones import DnssecStatus
from harness.world.mta.script import Script
from harness.world.spec import WorldSpec
from harness.world.spec.zones import zone_apex

__all__ = ["DestinationFacts", "HostFacts", "Profile", "destination_facts", "pattern_permits"]

#: Profiles that chain to the trusted root, are current and name the host (CERT-3..8).
PKIX_OK = frozenset({"valid", "via-intermediate", "wildcard"})
#: Profiles that chain to the trusted root and are current, whatever names they carry.
CHAINS = PKIX_OK | {"wrong-name", "cn-only"}
_STS_TXT = re.compile(
    r"v=STSv1[ \t]*;[ \t]*id=[A-Za-z0-9]{1,32}"
    r"(?:[ \t]*;[ \t]*[A-Za-z0-9][A-Za-z0-9_.-]{0,31}=[\x21-\x3a\x3c\x3e-\x7e]+)*"
    r"(?:[ \t]*;)?[ \t]*"
)
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})+")
_MAX_AGE = 31_557_600  # RFC 8461 §3.2
_PROFILE_DEFAULTS: dict[str, Any] = {
    "tls": "no",
    "dane": "none",
    "mta_sts": False,
    "coexistence": "hybrid",
    "opportunistic_dane_fail_falls_back": False,
    "sts_testing_falls_back": True,
}


@dataclass(frozen=True, slots=True)
class Profile:
    """The Destination Controls that matter to the invariants."""

    tls: str
    dane: str
    mta_sts: bool
    coexistence: str
    dane_falls_back: bool
    testing_falls_back: bool = True

    @property
    def dane_on(self) -> bool:
        """DANE is looked for (docs/gateway-behaviour.md §2: not with TLS No)."""
        return self.dane != "none" and self.tls != "no"


@dataclass(frozen=True, slots=True)
class HostFacts:
    """One MX host as the spec defines it.

    Attributes:
        name: the MX host name.
        permitted: the enforce policy's patterns admit it (True without a policy).
        pkix_ok: its certificate verifies for it under RFC 8461 §4.2.
        chains: its certificate chains to the trusted root and is current.
        dane: ``usable`` | ``unusable`` | ``error`` | ``none`` | ``unknown``.
        dane_match: a usable TLSA record matches the certificate it serves.
        plain: reachable, STARTTLS offered, a certificate, TLS 1.2 or later on offer, no
            scripted replies: nothing about it may stop a delivery but the sender's own
            rules.
    """

    name: str
    permitted: bool
    pkix_ok: bool
    chains: bool
    dane: str
    dane_match: bool
    plain: bool = False

    def dane_pass_possible(self, profile: Profile) -> bool:
        """DANE may authenticate this host's certificate (an exemption, never a duty)."""
        return profile.dane_on and self.dane in ("usable", "unknown") and self.dane_match


@dataclass(frozen=True, slots=True)
class DestinationFacts:
    """One recipient domain.

    Attributes:
        domain: the domain.
        profile: its resolved Destination Controls.
        enforce: an MTA-STS enforce policy is certainly in force.
        mx_secure: the MX RRset is DNSSEC-secure.
        hosts: by MX host name.
        mx_ok: the MX lookup answers (no fault, not bogus).
        policy_known: which MX hosts the policy lets through is certain.
    """

    domain: str
    profile: Profile
    enforce: bool
    mx_secure: bool
    hosts: Mapping[str, HostFacts]
    mx_ok: bool = True
    policy_known: bool = True

    def clean_host(self) -> str | None:
        """An MX every rule lets the message through, if there is one (else None).

        Plain, permitted by any enforce policy, and with a certificate that satisfies
        the TLS setting and DANE: a trusted chain naming the host, and a usable
        matching TLSA record (or none, where DANE is optional). Required-Verify is
        left out: its Cisco algorithm wants the *domain* in the certificate.
        """
        p = self.profile
        if not self.mx_ok or not self.policy_known or p.tls == "required-verify":
            return None
        for h in self.hosts.values():
            if not (h.plain and h.permitted and h.pkix_ok):
                continue
            dane_ok = h.dane == "usable" and h.dane_match
            if p.dane == "mandatory" and p.tls != "no" and not (dane_ok and self.mx_secure):
                continue
            if p.dane_on and not dane_ok and h.dane != "none":
                continue
            return h.name
        return None


def _profile(sender: Mapping[str, Any], domain: str) -> Profile:
    controls = sender.get("destination_controls", {})
    entry = {**_PROFILE_DEFAULTS, **controls.get("default", {}), **controls.get(domain, {})}
    return Profile(
        tls=entry["tls"],
        dane=entry["dane"],
        mta_sts=bool(entry["mta_sts"]),
        coexistence=entry["coexistence"],
        dane_falls_back=bool(entry["opportunistic_dane_fail_falls_back"]),
        testing_falls_back=bool(entry["sts_testing_falls_back"]),
    )


def _fault(spec: WorldSpec, name: str, rrtype: str) -> str | None:
    """A DNS fault or non-default status on (name, rrtype), as its text."""
    for rule in spec.dns:
        if rule.name == name and rule.rrtype in (None, rrtype) and rule.action != "answer":
            return str(rule.action)
    return None


def _status(spec: WorldSpec, name: str, rrtype: str) -> str:
    """``secure`` | ``insecure`` | ``bogus`` | a fault, for (name, rrtype)."""
    fault = _fault(spec, name, rrtype)
    if fault is not None:
        return fault
    domain = spec.domains.get(zone_apex(name, spec.domains))
    return str(domain.dnssec) if domain is not None else str(DnssecStatus.INSECURE)


def _resolves(status: str) -> bool:
    return status in ("secure", "insecure")


def _txt_ok(rrs: tuple[tuple[str, ...], ...]) -> bool:
    # RFC 8461 §3.1: discard records not starting "v=STSv1"; exactly one must remain.
    records = ["".join(rr) for rr in rrs]
    sts = [r for r in records if r.startswith("v=STSv1")]
    return len(sts) == 1 and _STS_TXT.fullmatch(sts[0]) is not None


def _parse_policy(body: str) -> tuple[str, tuple[str, ...]] | None:
    """(mode, ``mx`` patterns) of a strictly valid body, else None."""
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    fields: dict[str, list[str]] = {}
    for line in lines:
        m = _FIELD.fullmatch(line.removesuffix("\r"))
        if m is None:
            return None  # RFC 8461 §3.2 ABNF: every line is a field
        fields.setdefault(m.group(1), []).append(m.group(2))
    single = {k: v[0] for k, v in fields.items() if len(v) == 1}
    if any(len(fields.get(k, ())) != 1 for k in ("version", "mode", "max_age")):
        return None
    mode = single["mode"]
    if single["version"] != "STSv1" or mode not in ("enforce", "testing", "none"):
        return None
    age = single["max_age"]
    if not age.isdigit() or len(age) > 10 or int(age) > _MAX_AGE:
        return None
    patterns = tuple(p.lower() for p in fields.get("mx", ()))
    if (not patterns and mode != "none") or not all(_PATTERN.fullmatch(p) for p in patterns):
        return None
    return mode, patterns


def pattern_permits(patterns: tuple[str, ...], host: str) -> bool:
    """RFC 8461 §4.1: an exact match, or ``*.`` standing for exactly one left-most label."""
    host = host.lower().rstrip(".")
    for p in patterns:
        if p.startswith("*."):
            label, _, rest = host.partition(".")
            if label and rest == p[2:]:
                return True
        elif p == host:
            return True
    return False


def _policy(spec: WorldSpec, domain: str) -> tuple[str, tuple[str, ...]] | None:
    """(mode, patterns) when a valid policy is certainly fetched, else None."""
    d = spec.domains[domain]
    if d.policy is None or not _txt_ok(d.mta_sts_txt):
        return None
    if not _resolves(_status(spec, f"_mta-sts.{domain}", "TXT")):
        return None
    host = d.policy_host_name
    if not _resolves(_status(spec, host, "A")):
        return None
    ph = d.policy_host
    if ph is not None:
        r = ph.response
        if ph.cert not in PKIX_OK or (ph.names and host not in ph.names):
            return None
        if r.behaviour != "serve" or r.status != 200 or r.headers:
            return None
        if r.content_type is None or not r.content_type.lower().startswith("text/plain"):
            return None
    if len(d.policy.encode()) > 65_536:
        return None
    return _parse_policy(d.policy)


def _host(
    spec: WorldSpec, name: str, patterns: tuple[str, ...] | None, mx_secure: bool
) -> HostFacts:
    h = spec.hosts[name]
    cert = str(h.cert) if h.cert is not None else "none"
    named = not h.names or name in h.names
    tlsa_name = f"_25._tcp.{name}"
    address = _status(spec, name, "A")
    tlsa_status = _status(spec, tlsa_name, "TLSA")
    records = [(u, s, m) for u, s, m in h.tlsa if h.cert is not None]
    records += [(u, s, m) for u, s, m, _ in h.tlsa_raw]
    if address == "insecure" or not _resolves(address):
        dane = "none"  # RFC 7672 §2.2.2: no secure address, no TLSA (or no host at all)
    elif not mx_secure:
        dane = "unknown"  # DANE-10: an insecure MX RRset; DANE per host is a MAY
    elif not _resolves(tlsa_status):
        dane = "error"  # DANE-5
    elif tlsa_status == "insecure" or not records:
        dane = "none"
    elif any(u in (2, 3) and s in (0, 1) and m in (0, 1, 2) for u, s, m in records):
        dane = "usable"
    else:
        dane = "unusable"
    return HostFacts(
        name=name,
        permitted=patterns is None or pattern_permits(patterns, name),
        pkix_ok=cert in PKIX_OK and named,
        chains=cert in CHAINS,
        dane=dane,
        dane_match=bool(h.tlsa) and h.cert is not None,
        plain=_resolves(address)
        and h.cert is not None
        and str(h.starttls) == "offered"
        # RFC 8996: a host that speaks only TLS 1.0/1.1 is not a path
        and (h.tls_max is None or h.tls_max >= ssl.TLSVersion.TLSv1_2)
        and h.script == Script(),
    )


def destination_facts(
    spec: WorldSpec, sender: Mapping[str, Any], domain: str
) -> DestinationFacts | None:
    """The facts of ``domain``, or None when the world does not define it as a mail domain."""
    d = spec.domains.get(domain)
    if d is None or not d.mx or "routes" in sender:
        return None
    profile = _profile(sender, domain)
    applies = profile.mta_sts and profile.tls != "no"
    policy = _policy(spec, domain) if applies else None
    mode = policy[0] if policy else None
    # [INF] sts_testing_falls_back = false: testing failures defer, as under enforce.
    restricts = mode == "enforce" or (mode == "testing" and not profile.testing_falls_back)
    patterns = policy[1] if policy and restricts else None
    mx_secure = _status(spec, domain, "MX") == "secure"
    hosts = {t: _host(spec, t, patterns, mx_secure) for _, t in d.mx if t in spec.hosts}
    mx_ok = _resolves(_status(spec, domain, "MX"))
    # Whether a testing policy binds is knowable only when the policy certainly is.
    known = not applies or profile.testing_falls_back or policy is not None
    return DestinationFacts(
        domain, profile, mode == "enforce", mx_secure, hosts, mx_ok, policy_known=known
    )
