"""Mutations of a world spec between steps: pure functions from (spec, change) to spec.

The world applies the result (:meth:`World.update_domain` and friends). Keeping the
checking here means a mutation is validated exactly like the TOML it mirrors, with
errors naming the call and the key path (``update_domain: domains."d".polcy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from certs import CertProfile
from harness.errors import SpecError
from harness.world.dns.answer import Behaviour
from harness.world.dns.records import ZoneError, canonical_name
from harness.world.dns.zones import DnssecStatus
from harness.world.spec.model import DnsRule, DomainSpec, PolicyHostSpec, WorldSpec
from harness.world.spec.tables import domain_from
from harness.world.spec.values import Node, key_path
from harness.world.web.behaviour import Behaviour as PolicyBehaviour
from harness.world.web.behaviour import PolicyResponse

__all__ = ["changed_dns", "changed_domain", "changed_policy"]

_RESPONSE_FIELDS = tuple(f.name for f in fields(PolicyResponse) if f.name != "body")


def _canon(source: str, key: str, name: str) -> str:
    try:
        return canonical_name(name)
    except ZoneError as exc:
        raise SpecError(source, key, name, str(exc)) from None


def changed_domain(spec: WorldSpec, domain: str, changes: Mapping[str, Any]) -> DomainSpec:
    """``spec``'s domain with ``changes`` (keys as in its TOML table) applied.

    A domain not in ``spec`` is new (an insecure zone unless ``dnssec`` says otherwise).

    Raises:
        SpecError: an unknown key or a bad value.
    """
    source = "update_domain"
    name = _canon(source, "domains", domain)
    node = Node(dict(changes), source, key_path("domains", name))
    return domain_from(node, name, spec.domains.get(name))


def changed_policy(
    spec: WorldSpec, domain: str, body: str | bytes | None, response: Mapping[str, Any]
) -> DomainSpec:
    """``spec``'s domain with a new policy body and/or policy-host response fields.

    Raises:
        SpecError: the domain is unknown, a field is unknown, or a value is bad.
    """
    source = "update_policy"
    name = _canon(source, "domains", domain)
    where = key_path("domains", name)
    d = spec.domains.get(name)
    if d is None:
        raise SpecError(source, where, domain, "no such domain", sorted(spec.domains))
    ph = d.policy_host or PolicyHostSpec()
    kw = dict(response)
    if "cert" in kw:
        value = kw.pop("cert")
        if value not in {p.value for p in CertProfile}:
            allowed = [p.value for p in CertProfile]
            raise SpecError(source, f"{where}.policy_host.cert", value, "not a profile", allowed)
        ph = replace(ph, cert=CertProfile(value))
    for key in kw:
        if key not in _RESPONSE_FIELDS:
            raise SpecError(
                source, f"{where}.policy_host.{key}", key, "unknown field", _RESPONSE_FIELDS
            )
    if isinstance(kw.get("headers"), Mapping):
        kw["headers"] = tuple(kw["headers"].items())
    # The same value rules as the world table: behaviours are enum members (the policy
    # host compares them by identity) and `content_type = false` means no header at all.
    if "behaviour" in kw:
        try:
            kw["behaviour"] = PolicyBehaviour(kw["behaviour"])
        except ValueError:
            allowed = [b.value for b in PolicyBehaviour]
            raise SpecError(
                source, f"{where}.policy_host.behaviour", kw["behaviour"], "unknown", allowed
            ) from None
    if kw.get("content_type") is False:
        kw["content_type"] = None
    try:
        ph = replace(ph, response=replace(ph.response, **kw))
    except (TypeError, ValueError) as exc:
        raise SpecError(source, f"{where}.policy_host", kw, str(exc)) from None
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
    return replace(d, policy=d.policy if text is None else text, policy_host=ph)


def changed_dns(
    spec: WorldSpec, name: str, rrtype: str | None, behaviour: str | None, delay_ms: int
) -> WorldSpec:
    """``spec`` with the DNS rule for (``name``, ``rrtype``) replaced (None: removed).

    Raises:
        SpecError: an unknown behaviour, or a delay on a DNSSEC status.
    """
    source = "set_dns"
    canon = _canon(source, "dns", name)
    rtype = None if rrtype in (None, "*") else str(rrtype).upper()
    where = key_path(key_path("dns", canon), rtype or "*")
    kept = tuple(r for r in spec.dns if (r.name, r.rrtype) != (canon, rtype))
    if behaviour is None:
        return replace(spec, dns=kept)
    statuses = {s.value for s in DnssecStatus}
    allowed = sorted(statuses | {b.value for b in Behaviour})
    if behaviour not in allowed:
        raise SpecError(source, where, behaviour, "not a DNS behaviour or status", allowed)
    if delay_ms < 0 or (delay_ms and behaviour in statuses):
        raise SpecError(source, where, delay_ms, "delay_ms must be >= 0, and only with behaviours")
    action = DnssecStatus(behaviour) if behaviour in statuses else Behaviour(behaviour)
    return replace(spec, dns=(*kept, DnsRule(canon, rtype, action, delay_ms)))
