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
from engine.core.tomlnode import TomlNode, key_path
from harness.errors import SpecError, spec_errors
from harness.world.dns.answer import DnsBehaviour
from harness.world.dns.records import ZoneError, canonical_name
from harness.world.dns.zones import DnssecStatus
from harness.world.spec.model import DnsRule, DomainSpec, PolicyHostSpec, WorldSpec
from harness.world.spec.tables import domain_from
from harness.world.web.behaviour import PolicyBehaviour, PolicyResponse

__all__ = ["changed_dns", "changed_domain", "changed_policy"]

_RESPONSE_FIELDS = tuple(f.name for f in fields(PolicyResponse) if f.name != "body")


def _canon(source: str, key: str, name: str) -> str:
    try:
        return canonical_name(name)
    except ZoneError as exc:
        raise SpecError(str(exc), file=source, key=key, value=name) from None


def changed_domain(spec: WorldSpec, domain: str, changes: Mapping[str, Any]) -> DomainSpec:
    """``spec``'s domain with ``changes`` (keys as in its TOML table) applied.

    A domain not in ``spec`` is new (an insecure zone unless ``dnssec`` says otherwise).

    Raises:
        SpecError: an unknown key or a bad value.
    """
    source = "update_domain"
    name = _canon(source, "domains", domain)
    node = TomlNode(dict(changes), source, key_path("domains", name))
    with spec_errors():
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
        known = ", ".join(sorted(spec.domains)) or "none"
        raise SpecError(f"no such domain (the world has {known})", file=source, key=where)
    ph = d.policy_host or PolicyHostSpec()
    kw = dict(response)
    node = TomlNode(kw, source, f"{where}.policy_host")
    with spec_errors():
        node.table(("cert", *_RESPONSE_FIELDS))
        if "cert" in kw:
            ph = replace(ph, cert=node.get("cert").member(CertProfile))
            del kw["cert"]
        # The same value rules as the world table: behaviours are enum members (the
        # policy host compares them by identity); `content_type = false`: no header.
        if "behaviour" in kw:
            kw["behaviour"] = node.get("behaviour").member(PolicyBehaviour)
    if isinstance(kw.get("headers"), Mapping):
        kw["headers"] = tuple(kw["headers"].items())
    if kw.get("content_type") is False:
        kw["content_type"] = None
    try:
        ph = replace(ph, response=replace(ph.response, **kw))
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc), file=source, key=f"{where}.policy_host", value=kw) from None
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
    allowed = sorted(statuses | {b.value for b in DnsBehaviour})
    if behaviour not in allowed:
        what = f"a DNS behaviour or DNSSEC status: one of {', '.join(allowed)}"
        raise SpecError.of(TomlNode(behaviour, source, where).bad(what, allowed))
    if delay_ms < 0 or (delay_ms and behaviour in statuses):
        raise SpecError(
            "delay_ms must be >= 0, and only with behaviours",
            file=source,
            key=f"{where}.delay_ms",
            value=delay_ms,
        )
    action = DnssecStatus(behaviour) if behaviour in statuses else DnsBehaviour(behaviour)
    return replace(spec, dns=(*kept, DnsRule(canon, rtype, action, delay_ms)))
