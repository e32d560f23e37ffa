"""Batching scenarios for black-box engines: one shared world, one engine lifetime.

Theory of operation
-------------------
A real MTA costs hundreds of milliseconds to start and stop, so compatible
scenarios run together:

1. :func:`relabel` gives scenario number *k* names of its own by rewriting its TOML
   text: every registrable name ``b`` of its world (``example.com``) becomes
   ``sK.b`` at label boundaries, so ``mx1.example.com``, ``_mta-sts.example.com``,
   ``*.example.com`` in a policy, ``rcpt@example.com`` and every expectation that
   names them move together, and two scenarios never share a zone or a recipient
   domain;
2. :func:`world_view` keeps only what a black-box engine can be judged on: the
   world's observations and the per-recipient report. ``events``, ``no_events`` and
   ``logs`` are our engine's vocabulary and are dropped (and listed in the result's
   reason) when the engine lacks those capabilities;
3. :func:`needs` says why a scenario cannot run on a profile at all (a capability,
   a feature such as DANE, or TLS mandated by local configuration the profile does
   not have), and :func:`plan` groups the rest into :class:`Batch` es: scenarios with
   clock steps, restarts, a proxy, a report sink or pinned addresses run alone; the
   others share a batch when their worlds and, for an engine configured from
   ``[sender]``, their ``[sender]`` tables merge without conflict (per-domain entries
   are disjoint after step 1; a ``default`` entry must be equal);
4. :func:`run_batch` brings up one world from the merged ``[world]`` tables, starts
   the engine once, runs each scenario's steps in turn (one world watcher, so each
   step sees only its own slice) and judges them with the runner's own
   :func:`~harness.assertions.check`.
"""

from __future__ import annotations

import re
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.adapters.base import EngineUnderTest
from harness.assertions import check
from harness.runner import ScenarioResult, StepResult, Verdict, required_capabilities
from harness.scenario.loader import loads_scenario
from harness.scenario.model import Capability, Expect, Scenario, SendSpec, Step, StepKind
from harness.scenario.observation import StepObservation, WorldWatcher
from harness.world.world import World, shared_cert_factory

__all__ = ["Batch", "needs", "plan", "relabel", "run_batch", "world_view"]

_WORLD_ONLY = ("events", "no_events", "logs")
#: ``[sender]`` tables that configure what a fixed black-box profile cannot express.
_LOCAL_TABLES = ("routes", "bounce_profiles")


def _bases(table: Mapping[str, Any]) -> set[str]:
    world = table.get("world", {})
    names = set(world.get("domains", {})) | set(world.get("hosts", {}))
    return {".".join(n.rstrip(".").lower().split(".")[-2:]) for n in names if "." in n}


def relabel(text: str, k: int, path: str | Path) -> Scenario:
    """Scenario ``text`` with every name of its world moved under ``sK.`` (see above)."""
    out = text
    for base in sorted(_bases(tomllib.loads(text)), key=len, reverse=True):
        # The name as written in plain strings, and escaped in regexes: `example\.com`
        # in a TOML literal string, `example\\.com` in a basic one.
        for sep in ("\\\\.", "\\.", "."):
            written = base.replace(".", sep)
            rx = rf"(?<![A-Za-z0-9-]){re.escape(written)}(?![A-Za-z0-9-])"
            out = re.sub(rx, lambda m, s=sep: f"s{k}{s}{m.group(0)}", out, flags=re.IGNORECASE)
    return loads_scenario(out, path)


def world_view(scenario: Scenario, caps: frozenset[Capability]) -> tuple[Scenario, list[str]]:
    """``scenario`` without the expectations ``caps`` cannot judge, and what was dropped."""
    drop = [
        k
        for k, c in (
            ("events", Capability.EVENTS),
            ("no_events", Capability.EVENTS),
            ("logs", Capability.LOGS),
        )
        if c not in caps
    ]
    dropped: list[str] = []

    def strip(x: Expect, where: str) -> Expect:
        gone = [k for k in drop if getattr(x, k)]
        dropped.extend(f"{where}.{k}" for k in gone)
        return replace(x, **{k: () for k in gone})

    steps = tuple(replace(s, expect=strip(s.expect, f"steps[{s.index}]")) for s in scenario.steps)
    return replace(scenario, steps=steps, expect=strip(scenario.expect, "expect")), dropped


def _controls(sender: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    return sender.get("destination_controls", {})


def needs(scenario: Scenario, caps: frozenset[Capability], features: frozenset[str]) -> str:
    """Why ``scenario`` cannot run on an engine with ``caps`` and ``features`` ("" if it can).

    Features: ``sts`` (MTA-STS), ``dane``, ``config`` (a destination's TLS level set
    by local configuration, as our ``[sender]`` does).
    """
    judged = {Capability.REPORT} | set(caps)
    missing = required_capabilities(scenario) - judged - {Capability.EVENTS, Capability.LOGS}
    missing |= scenario.requires - judged
    if missing:
        return f"needs {', '.join(sorted(missing))}"
    want = set()
    if any(k in scenario.sender for k in _LOCAL_TABLES):
        want.add("config")
    for entry in _controls(scenario.sender).values():
        if entry.get("mta_sts"):
            want.add("sts")
        if entry.get("dane") in ("opportunistic", "mandatory"):
            want.add("dane")
        # Only "preferred" (opportunistic TLS) is what every profile does by default;
        # any other level, or mandatory DANE, is local configuration.
        if entry.get("tls", "preferred") != "preferred" or entry.get("dane") == "mandatory":
            want.add("config")
    lacking = sorted(want - features)
    if lacking:
        return f"needs {', '.join(lacking)} (the profile has {', '.join(sorted(features))})"
    return ""


@dataclass(slots=True)
class Batch:
    """Scenarios that share one world and one engine lifetime."""

    scenarios: list[Scenario] = field(default_factory=list)
    world: dict[str, Any] = field(default_factory=dict)
    sender: dict[str, Any] = field(default_factory=dict)
    alone: bool = False


def _alone(s: Scenario) -> bool:
    if any(st.kind in (StepKind.ADVANCE, StepKind.RESTART_ENGINE) for st in s.steps):
        return True
    w = s.world_table
    if "proxy" in w or "report_sink" in w:
        return True
    tables = [*w.get("hosts", {}).values()]
    tables += [d.get("policy_host", {}) for d in w.get("domains", {}).values()]
    return any("address" in t for t in tables)


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any] | None:
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, Mapping) and isinstance(out[k], Mapping):
            sub = _merge(out[k], v)
            if sub is None:
                return None
            out[k] = sub
        elif isinstance(v, list) and isinstance(out[k], list) and k == "records":
            out[k] = [*out[k], *v]
        elif out[k] != v:
            return None
    return out


#: A world is one /24 (harness.world.addresses): keep a batch's hosts well inside it.
_MAX_ADDRESSES = 200


def _addresses(world: Mapping[str, Any]) -> int:
    """An upper bound of the loopback addresses a world table takes."""
    domains = world.get("domains", {})
    hosts = set(world.get("hosts", {}))
    for d in domains.values():
        for mx in d.get("mx", ()):
            target = mx[1] if isinstance(mx, list) else str(mx).split()[-1]
            hosts.add(str(target).rstrip(".").lower())
    policy = sum(1 for d in domains.values() if "policy" in d or "policy_host" in d)
    return len(hosts) + policy + 2


def plan(scenarios: Sequence[Scenario], *, sender_matters: bool) -> list[Batch]:
    """Group (already relabelled) scenarios into batches (see the module docstring)."""
    batches: list[Batch] = []
    for s in scenarios:
        sender = dict(s.sender) if sender_matters else {}
        if _alone(s):
            batches.append(Batch([s], dict(s.world_table), dict(s.sender), alone=True))
            continue
        for b in batches:
            if b.alone:
                continue
            world, merged = _merge(b.world, s.world_table), _merge(b.sender, sender)
            if world is not None and merged is not None and _addresses(world) <= _MAX_ADDRESSES:
                b.scenarios.append(s)
                b.world, b.sender = world, merged
                break
        else:
            batches.append(Batch([s], dict(s.world_table), sender))
    return batches


def _message(s: Scenario, step: Step, send: SendSpec) -> bytes:
    if send.data is not None:
        return send.data
    return (
        f"From: <{send.mail_from}>\r\nTo: {', '.join(f'<{r}>' for r in send.rcpts)}\r\n"
        f"Subject: {s.id} step {step.index}\r\nMessage-ID: <{s.id}.{step.index}@harness.invalid>"
        "\r\n\r\nSent by the mta-sts-harness black-box matrix.\r\n"
    ).encode()


async def _act(s: Scenario, step: Step, world: World, engine: EngineUnderTest) -> tuple[Any, ...]:
    a = step.args
    if step.kind is StepKind.SEND:
        return tuple(await engine.send(a.mail_from, a.rcpts, _message(s, step, a)))
    if step.kind is StepKind.UPDATE_DOMAIN:
        await world.update_domain(a["domain"], **{k: v for k, v in a.items() if k != "domain"})
    elif step.kind is StepKind.UPDATE_POLICY:
        kw = {k: v for k, v in a.items() if k not in ("domain", "body")}
        await world.update_policy(a["domain"], a.get("body"), **kw)
    elif step.kind is StepKind.SET_DNS:
        await world.set_dns(a["name"], a["rrtype"], a["behaviour"], delay_ms=a["delay_ms"])
    elif step.kind is StepKind.ROTATE_CERT:
        await world.rotate_cert(
            a["host"], a["profile"], names=a["names"], update_tlsa=a["update_tlsa"]
        )
    elif step.kind is StepKind.ADVANCE:
        await engine.advance(a)
    else:
        await engine.restart()
    return ()


def _base(s: Scenario, engine: str) -> dict[str, Any]:
    return {
        "id": s.id,
        "title": s.title,
        "path": str(s.path),
        "topic": s.topic,
        "covers": s.covers,
        "engine": engine,
        "description": s.description,
        "world": s.world_table,
        "sender": s.sender,
        "expect": s.expect,
    }


async def run_batch(
    batch: Batch,
    engine_name: str,
    make: Callable[[], EngineUnderTest],
    workdir: Path,
    notes: Mapping[str, str] | None = None,
) -> list[ScenarioResult]:
    """Run every scenario of ``batch`` against one engine lifetime in one world.

    Args:
        batch: the batch (from :func:`plan`).
        engine_name: the engine's name for the results.
        make: a factory of the adapter.
        workdir: the engine's directory.
        notes: per scenario id, a note added to the result's reason (dropped keys).

    Returns:
        One result per scenario; a failure to start makes every one an ERROR.
    """
    notes = notes or {}
    engine = make()
    results: list[ScenarioResult] = []
    began = time.monotonic()
    try:
        async with World(
            batch.world, now=engine.now, certs=shared_cert_factory(), source="<batch>"
        ) as w:
            try:
                await engine.start(w, batch.sender, workdir)
                watcher, seen = WorldWatcher(), len(engine.events())
                watcher.take(w)
                for s in batch.scenarios:
                    results.append(
                        await _run_one(
                            s, engine_name, w, engine, watcher, seen, notes.get(s.id, "")
                        )
                    )
                    seen = len(engine.events())
            finally:
                await engine.stop()
    except Exception:
        tb = traceback.format_exc()
        done = {r.id for r in results}
        results += [
            ScenarioResult(
                **_base(s, engine_name),
                verdict=Verdict.ERROR,
                reason=tb,
                seconds=time.monotonic() - began,
            )
            for s in batch.scenarios
            if s.id not in done
        ]
    return results


async def _run_one(
    s: Scenario,
    engine_name: str,
    w: World,
    engine: EngineUnderTest,
    watcher: WorldWatcher,
    seen: int,
    note: str,
) -> ScenarioResult:
    began = time.monotonic()
    steps: list[StepResult] = []
    for step in s.steps:
        t0, error, deliveries = time.monotonic(), None, ()
        try:
            deliveries = await _act(s, step, w, engine)
            await w.settle()
        except Exception:
            error = traceback.format_exc()
        events = tuple(engine.events()[seen:])
        seen += len(events)
        obs = StepObservation(
            index=step.index,
            label=step.label,
            events=events,
            lines=tuple(e.line for e in events if e.line),
            deliveries=deliveries,
            world=watcher.take(w),
            clock=engine.now(),
            seconds=time.monotonic() - t0,
            error=error,
        )
        mismatches = () if error else tuple(check(step.expect, [obs]))
        steps.append(
            StepResult(step.index, step.kind.value, step.label, step.expect, obs, mismatches)
        )
        if error:
            break
    error = next((r.observation.error for r in steps if r.observation.error), None)
    final = tuple(check(s.expect, [r.observation for r in steps]))
    failed = any(r.mismatches for r in steps) or final
    verdict = Verdict.ERROR if error else Verdict.FAILED if failed else Verdict.PASSED
    return ScenarioResult(
        **_base(s, engine_name),
        verdict=verdict,
        reason=error or note,
        steps=tuple(steps),
        final=final,
        seconds=time.monotonic() - began,
    )
