"""Divergences of real MTAs the conformance matrix already explains, recognised in
fuzz findings so a campaign can say "known" instead of "new".

Each rule names the engines it applies to, the invariant, and a test on the
violation's text and the world; the label points at the entry of
``docs/conformance.md`` ("Divergences found") that explains it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.fuzz.driver import load_document
from harness.fuzz.invariants import Violation
from harness.fuzz.oracle import destination_facts

__all__ = ["KNOWN", "Known", "label"]


@dataclass(frozen=True, slots=True)
class Known:
    """One known divergence: where it applies and how to recognise it."""

    engines: tuple[str, ...]
    invariant: str
    matches: Callable[[Violation, Mapping[str, Any]], bool]
    label: str


def _hosts(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(doc.get("world", {}).get("hosts", {}).values())


def _replies(doc: Mapping[str, Any], stage: str, first: str) -> bool:
    return any(str(h.get("replies", {}).get(stage, "")).startswith(first) for h in _hosts(doc))


def _cert(doc: Mapping[str, Any], host: str | None) -> str:
    """The certificate profile ``host`` serves in ``doc`` ("valid" by default)."""
    return str(doc.get("world", {}).get("hosts", {}).get(host or "", {}).get("cert", "valid"))


def _policy(doc: Mapping[str, Any]) -> str:
    return str(doc.get("world", {}).get("domains", {}).get("example.com", {}).get("policy", ""))


def _failed_sessions(v: Violation) -> int:
    """MX hosts whose session met a fault in the attempt (the violation's "faults met")."""
    met = v.detail.rpartition("faults met: ")[2].removesuffix(")")
    return len({part.split(" ", 1)[0] for part in met.split("; ") if part})


_POSTFIX = ("postfix-sts", "postfix-dane")
KNOWN = (
    Known(
        _POSTFIX,
        "healthy-mx-reached",
        lambda v, d: _failed_sessions(v) >= 2,
        "known: Postfix ends a delivery attempt after smtp_mx_session_limit (2) MX sessions, "
        "which RFC 5321 §5.1 allows (a client should try at least two addresses); the healthy "
        "MX came later (conformance.md, World fuzzing)",
    ),
    Known(
        _POSTFIX,
        "healthy-mx-reached",
        lambda v, d: _replies(d, "ehlo", "5") or _replies(d, "helo", "5"),
        "known: Postfix bounces on a 5yz to EHLO/HELO (conformance.md, postfix-sts 12, P-1)",
    ),
    Known(
        _POSTFIX,
        "healthy-mx-reached",
        lambda v, d: _replies(d, "starttls", "5"),
        "known: Postfix bounces on a 5yz to STARTTLS when TLS is required "
        "(conformance.md, postfix-sts 13, P-2)",
    ),
    Known(
        _POSTFIX,
        "no-message-lost",
        lambda v, d: "refused to start TLS: 5" in v.detail,
        "known: Postfix bounces on a 5yz to STARTTLS when TLS is required "
        "(conformance.md, postfix-sts 13, P-2)",
    ),
    Known(
        _POSTFIX,
        "no-message-lost",
        lambda v, d: "refused to talk to me: 5" in v.detail,
        "known: Postfix bounces on a 5yz to EHLO/HELO (conformance.md, postfix-sts 12, P-1)",
    ),
    Known(
        ("postfix-sts", "postfix-dane", "chasquid", "exim-dane"),
        "run-completes",
        lambda v, d: "no outcome for" in v.detail or "Cannot start TLS" in v.detail,
        "harness limit: the MTA settled no outcome within the adapter's 8 s window "
        "(its own timeouts, one MX after another, add up to more)",
    ),
    Known(
        ("postfix-sts",),
        "sts-enforce-mx",
        lambda v, d: True,
        "known: Postfix 3.7 never matches the MX name against the policy, only the "
        "certificate (conformance.md, postfix-sts 1-3: MX-1, MX-3)",
    ),
    Known(
        ("postfix-sts",),
        "sts-enforce-tls",
        lambda v, d: _cert(d, v.host) in ("cn-only", "wrong-name"),
        "known: OpenSSL's CN fallback / another policy MX's name accepted "
        "(conformance.md, postfix-sts 3: CERT-6, CERT-7)",
    ),
    Known(
        ("postfix-dane",),
        "no-message-lost",
        lambda v, d: "bounced" in v.detail,
        "known: Postfix bounces where DANE expects a deferral "
        "(conformance.md, postfix-dane 1: DANE-13)",
    ),
    Known(
        ("exim-dane",),
        "no-message-lost",
        lambda v, d: (
            "SMTP error from remote mail server after initial connection: 5" in v.detail
            or "SMTP error from remote mail server after EHLO" in v.detail
            or "SMTP error from remote mail server after HELO" in v.detail
        ),
        "known: Exim bounces when the last MX refuses at the greeting or EHLO/HELO with a 5yz "
        "(conformance.md, exim-dane 10, AMB-36)",
    ),
    Known(
        ("chasquid",),
        "no-message-lost",
        lambda v, d: "Could not find mail server" in v.detail,
        "found by world fuzzing: chasquid bounces when the MX query is answered REFUSED "
        "(conformance.md, World fuzzing; regressions/fuzz-mx-lookup-failure-defers)",
    ),
    Known(
        ("chasquid",),
        "clean-path-delivers",
        lambda v, d: _enforce_not_in_force(d),
        "known: chasquid's lenient TXT/policy parsing applies an enforce policy the RFC "
        "rejects (conformance.md, chasquid 2-4: DISC-5, DISC-6, POL-*)",
    ),
    Known(
        ("chasquid",),
        "healthy-mx-reached",
        lambda v, d: _enforce_not_in_force(d),
        "known: chasquid's lenient TXT/policy parsing applies an enforce policy the RFC "
        "rejects, so a permitted MX is refused (conformance.md, chasquid 2-4: DISC-6, POL-*)",
    ),
    Known(
        ("postfix-sts",),
        "clean-path-delivers",
        lambda v, d: _enforce_not_in_force(d),
        "known: the resolver's lenient TXT/policy parsing applies an enforce policy the RFC "
        "rejects (conformance.md, postfix-sts 4-6: DISC-6, POL-5, POL-10, POL-17)",
    ),
    Known(
        ("postfix-sts",),
        "healthy-mx-reached",
        lambda v, d: _enforce_not_in_force(d),
        "known: the resolver's lenient TXT/policy parsing applies an enforce policy the RFC "
        "rejects (conformance.md, postfix-sts 4-6: DISC-6, POL-5, POL-10, POL-17)",
    ),
)


def _enforce_not_in_force(doc: Mapping[str, Any]) -> bool:
    """The world serves a body saying ``mode: enforce`` that the RFC does not apply
    (a malformed or doubled TXT record, a malformed body, a failed fetch)."""
    if "mode: enforce" not in _policy(doc):
        return False
    try:
        scenario = load_document(doc)
    except HarnessError:
        return False
    facts = destination_facts(scenario.world, scenario.sender, "example.com")
    return facts is not None and not facts.enforce


def label(engine: str, violation: Violation, doc: Mapping[str, Any]) -> str:
    """The known divergence ``violation`` is for ``engine``, or ""."""
    for k in KNOWN:
        if engine in k.engines and k.invariant == violation.invariant and k.matches(violation, doc):
            return k.label
    return ""
