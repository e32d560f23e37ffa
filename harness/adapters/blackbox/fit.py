"""What of a scenario a black-box profile can run: the whole file, some of its sends, or none.

Theory of operation
-------------------
A real MTA's profile has a fixed configuration (``[engine] features``: ``sts``,
``dane``; ``config`` when it could be configured from ``[sender]`` as ours is), so
a scenario whose ``[sender]`` asks for something else cannot be run as written.
What it asks for is decided per *destination*: a ``send`` step needs what the
Destination Controls entries of its recipients' domains say (the domain's own
entry over the ``default`` one, key by key, as ``engine.config`` resolves them).

:func:`fit` therefore returns one of three answers:

* the scenario unchanged, when every send can run;
* the scenario without the sends that cannot, with a note naming them, when the
  rest is independent of them: every step is a send and there is no
  scenario-level ``[expect]`` (the transport scenarios: five contexts, one send
  each, of which a profile without DANE runs four);
* no scenario, with the reason (``needs dane (the profile has sts)``), otherwise.

Reasons that concern the whole file come first: capabilities the profile lacks
(clock, restart, TLS reports ...), local configuration (routes, bounce profiles,
DNS trust, a policy-fetch proxy), an expected configuration refusal, and a world
that would keep the MTA waiting beyond the adapter's outcome window because its own
timeouts are fixed and long (``[engine] smtp_timeout``/``fetch_timeout``: chasquid
waits up to 10 minutes on a stalled MX).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.core.errors import MxPatternError
from engine.core.mx import normalize_host
from harness.adapters.blackbox.adapter import SETTLE_TIMEOUT
from harness.scenario.model import Capability, Scenario, StepKind
from harness.scenario.needs import required_capabilities

__all__ = ["PARTIAL", "Fit", "fit", "needs"]

#: How a :attr:`Fit.note` (and so a result's reason) starts when only some steps run.
PARTIAL = "partial: "
#: Policy-host behaviours that keep a fetch open until the client's timeout.
_HANGING = ("hang", "slow_body")
#: ``[sender]`` tables that configure what a fixed black-box profile cannot express.
_LOCAL_TABLES = ("routes", "bounce_profiles")


@dataclass(frozen=True, slots=True)
class Fit:
    """What :func:`fit` decided.

    Attributes:
        scenario: what to run (None: nothing).
        why: the skip reason when ``scenario`` is None.
        note: which steps were left out and why, when only some run ("" otherwise).
    """

    scenario: Scenario | None
    why: str = ""
    note: str = ""


def _controls(sender: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    controls: Mapping[str, Mapping[str, Any]] = sender.get("destination_controls", {})
    return controls


def _key(domain: str) -> str:
    try:
        return normalize_host(domain)
    except MxPatternError:
        return domain.rstrip(".").lower()


def _entry(sender: Mapping[str, Any], domain: str) -> dict[str, Any]:
    """The Destination Controls entry that applies to ``domain`` (a key the domain's
    entry lacks is inherited from ``default``: docs/gateway-behaviour.md §1)."""
    controls = _controls(sender)
    own = {_key(k): v for k, v in controls.items() if k != "default"}
    return {**controls.get("default", {}), **own.get(_key(domain), {})}


def _wants(entry: Mapping[str, Any], features: frozenset[str]) -> set[str]:
    """The features one resolved entry asks of a profile with ``features``."""
    want = set()
    # Switching off what the profile always does is configuration too.
    if entry.get("mta_sts") is False and "sts" in features:
        want.add("config")
    if entry.get("dane") == "none" and "dane" in features:
        want.add("config")
    if entry.get("mta_sts"):
        want.add("sts")
    if entry.get("dane") in ("opportunistic", "mandatory"):
        want.add("dane")
    # Only "preferred" (opportunistic TLS) is what every profile does by default;
    # any other level, or mandatory DANE, is local configuration.
    if entry.get("tls", "preferred") != "preferred" or entry.get("dane") == "mandatory":
        want.add("config")
    return want


def _lacking(lacking: set[str], features: frozenset[str]) -> str:
    return f"needs {', '.join(sorted(lacking))} (the profile has {', '.join(sorted(features))})"


def _whole(scenario: Scenario, caps: frozenset[Capability]) -> str:
    """Why no part of ``scenario`` can run whatever its destinations ("" if some can)."""
    judged = {Capability.REPORT} | set(caps)
    missing = required_capabilities(scenario) - judged - {Capability.EVENTS, Capability.LOGS}
    missing |= scenario.requires - judged
    if missing:
        return f"needs {', '.join(sorted(missing))}"
    for d in scenario.world_table.get("domains", {}).values():
        if d.get("policy_host", {}).get("behaviour") == "endless":
            # harness/world/web/policy_host.py keeps writing to a client that left without
            # ever suspending, which starves the event loop the adapter shares.
            return "world: the endless policy body spins after the client leaves (known bug)"
    return ""


def _local_config(scenario: Scenario) -> bool:
    if scenario.config_error is not None:
        return True  # a refusal of our [sender] layout
    if any(k in scenario.sender for k in _LOCAL_TABLES):
        return True
    if scenario.sender.get("policy_fetch", {}).get("proxy"):
        return True  # the profiles fetch directly: a proxy is not theirs to use
    return bool(set(scenario.sender.get("dns", {})) - {"timeout"})  # e.g. trust_ad


def _stalls(world: Mapping[str, Any]) -> bool:
    """An MX of ``world`` stops answering at some stage (the client's timeout ends it)."""
    for host in world.get("hosts", {}).values():
        if host.get("starttls") == "broken-stall" or "stall" in host.get("replies", {}).values():
            return True
    return False


def _hangs(scenario: Scenario) -> bool:
    """A policy fetch of ``scenario`` never completes by itself (hang, endless trickle)."""
    tables = [d.get("policy_host", {}) for d in scenario.world_table.get("domains", {}).values()]
    tables += [s.args for s in scenario.steps if s.kind is StepKind.UPDATE_POLICY]
    return any(t.get("behaviour") in _HANGING for t in tables)


def _waits(scenario: Scenario, smtp_timeout: float, fetch_timeout: float) -> str:
    """Why the engine's own timeouts outlast the adapter's outcome window here ("" if not)."""
    if smtp_timeout >= SETTLE_TIMEOUT and _stalls(scenario.world_table):
        return (
            f"world: an MX stalls, and the engine waits {smtp_timeout:g} s for a reply "
            f"(not configurable; the adapter waits {SETTLE_TIMEOUT:g} s for an outcome)"
        )
    if fetch_timeout >= SETTLE_TIMEOUT and _hangs(scenario):
        return (
            f"world: a policy fetch hangs, and the engine waits {fetch_timeout:g} s for it "
            f"(not configurable; the adapter waits {SETTLE_TIMEOUT:g} s for an outcome)"
        )
    return ""


def fit(
    scenario: Scenario,
    caps: frozenset[Capability],
    features: frozenset[str],
    *,
    smtp_timeout: float = 0.0,
    fetch_timeout: float = 0.0,
) -> Fit:
    """What of ``scenario`` an engine with ``caps`` and ``features`` can run (see above).

    Features: ``sts`` (MTA-STS), ``dane``, ``config`` (a destination's TLS level set
    by local configuration, as our ``[sender]`` does). ``smtp_timeout`` and
    ``fetch_timeout``: how long the engine waits for one SMTP reply and one policy
    fetch; a world that makes it wait that long cannot be judged in the adapter's
    outcome window.
    """
    why = _whole(scenario, caps) or _waits(scenario, smtp_timeout, fetch_timeout)
    if why:
        return Fit(None, why)
    if _local_config(scenario) and "config" not in features:
        return Fit(None, _lacking({"config"}, features))
    sends = [s for s in scenario.steps if s.kind is StepKind.SEND]
    if not sends:
        # No destination is ever used: what the entries ask for is what the file asks.
        want = set().union(*(_wants(e, features) for e in _controls(scenario.sender).values()))
        lacking = want - features
        return Fit(None, _lacking(lacking, features)) if lacking else Fit(scenario)
    out: dict[int, set[str]] = {}
    for step in sends:
        domains = [r.rpartition("@")[2] for r in step.args.rcpts]
        want = set().union(*(_wants(_entry(scenario.sender, d), features) for d in domains))
        if want - features:
            out[step.index] = want - features
    if not out:
        return Fit(scenario)
    every = set().union(*out.values())
    separable = all(s.kind is StepKind.SEND for s in scenario.steps) and scenario.expect.empty
    if len(out) == len(sends) or not separable:
        return Fit(None, _lacking(every, features))
    kept = tuple(s for s in scenario.steps if s.index not in out)
    by_reason: dict[str, list[str]] = {}
    for i, w in sorted(out.items()):
        by_reason.setdefault(_lacking(w, features), []).append(str(i))
    left = "; ".join(f"step {', '.join(ix)}: {why}" for why, ix in by_reason.items())
    ran = ", ".join(str(s.index) for s in kept)
    note = f"{PARTIAL}ran step {ran} of {len(scenario.steps)}; not run: {left}"
    return Fit(replace(scenario, steps=kept), note=note)


def needs(scenario: Scenario, caps: frozenset[Capability], features: frozenset[str]) -> str:
    """Why no part of ``scenario`` can run on such an engine ("" when some can)."""
    return fit(scenario, caps, features).why
