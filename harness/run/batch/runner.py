"""Running a :class:`~harness.run.batch.plan.Batch`: one world, one engine lifetime.

Theory of operation
-------------------
:func:`run_batch` brings up one world from the batch's merged ``[world]`` tables,
starts the engine once, and runs each scenario's steps in turn with one
:class:`~harness.scenario.observation.WorldWatcher`, so each step sees only its own
slice of the shared world. The engine's start-up is every scenario's set-up
observation. Steps and expectations are judged with the runner's own
:func:`~harness.assertions.check`, into the runner's plain-data results. A scenario
with ``[expect] config_error`` runs alone: the engine must refuse its ``[sender]``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.adapters.base import AdapterError, EngineUnderTest
from harness.assertions import Mismatch, check
from harness.run.batch.plan import Batch
from harness.runner import ScenarioResult, StepResult, Verdict
from harness.scenario.loader import config_error_matches
from harness.scenario.model import Scenario, SendSpec, Step, StepKind
from harness.scenario.observation import StepObservation, WorldSlice, WorldWatcher
from harness.world.world import World, shared_cert_factory

__all__ = ["run_batch"]


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
    if len(batch.scenarios) == 1 and batch.scenarios[0].config_error is not None:
        return [await _refusal(batch.scenarios[0], engine_name, engine, workdir)]
    try:
        async with World(
            batch.world, now=engine.now, certs=shared_cert_factory(), source="<batch>"
        ) as w:
            try:
                await engine.start(w, batch.sender, workdir)
                watcher, seen = WorldWatcher(), len(engine.events())
                # The engine's start-up is every scenario's set-up (they share it).
                setup = StepObservation(
                    -1, "set-up", events=tuple(engine.events()), world=watcher.take(w)
                )
                owners = _owners(batch.scenarios)
                for s in batch.scenarios:
                    note = notes.get(s.id, "")

                    def take(sid: str = s.id) -> WorldSlice:
                        return _own(watcher.take(w), sid, owners)

                    results.append(
                        await _run_one(s, engine_name, w, engine, take, seen, note, setup)
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


def _base_of(name: str) -> str:
    """The relabelled base a world name sits under (``s7.example.com`` of
    ``mx1.s7.example.com``: plan.relabel puts ``sK.`` before the last two labels)."""
    host = name.rstrip(".").lower()
    host = host.rpartition("@")[2] if "@" in host else host
    if "://" in host:  # a report's POST URL
        host = host.split("://", 1)[1].split("/", 1)[0]
    host = host.rsplit(":", 1)[0] if host.rpartition(":")[2].isdigit() else host  # proxy target
    return ".".join(host.split(".")[-3:])


def _owners(scenarios: Sequence[Scenario]) -> dict[str, str]:
    """Relabelled base -> the id of the scenario that owns it, over a batch."""
    if len(scenarios) < 2:
        return {}
    owners = {}
    for s in scenarios:
        w = s.world_table
        for name in (*w.get("domains", {}), *w.get("hosts", {})):
            if name.count(".") >= 2:
                owners[_base_of(name)] = s.id
    return owners


def _own(world: WorldSlice, sid: str, owners: Mapping[str, str]) -> WorldSlice:
    """``world`` without what belongs to another scenario of the batch.

    A real MTA works on its own time: a delivery that outlived its scenario (a stalled
    MX, a retry, a bounce's DSN, a policy refresh) reaches the world while a later
    scenario's step is watching. Judged there, it would be that step's -- a session
    at ``mx2.s279.enforce.example`` counted as the ``via`` of ``s284``. What belongs to
    no scenario (the MTA's own look-ups) stays.
    """
    if not owners:
        return world

    def mine(name: str) -> bool:
        return owners.get(_base_of(name), sid) == sid

    return WorldSlice(
        dns=tuple(d for d in world.dns if mine(d.name)),
        fetches=tuple(f for f in world.fetches if mine(f.host)),
        sessions=tuple(x for x in world.sessions if mine(x.mx)),
        timeline=tuple(e for e in world.timeline if mine(e.name)),
        reports=tuple(r for r in world.reports if mine(r.to)),
        dsns=tuple(d for d in world.dsns if mine(d.mx)),
    )


async def _refusal(
    s: Scenario, engine_name: str, engine: EngineUnderTest, workdir: Path
) -> ScenarioResult:
    """``[expect] config_error``: the engine must refuse the ``[sender]`` at start."""
    pattern, began = s.config_error or "", time.monotonic()
    final: tuple[Mismatch, ...] = ()
    async with World(s.world_table, now=engine.now, certs=shared_cert_factory()) as w:
        try:
            await engine.start(w, s.sender, workdir)
            final = (Mismatch("config_error", pattern, "the engine accepted the configuration"),)
        except AdapterError as exc:
            if not config_error_matches(pattern, str(exc)):
                final = (Mismatch("config_error", pattern, f"refused otherwise: {exc}"),)
        finally:
            await engine.stop()
    verdict = Verdict.FAILED if final else Verdict.PASSED
    return ScenarioResult(
        **_base(s, engine_name), verdict=verdict, final=final, seconds=time.monotonic() - began
    )


async def _run_one(
    s: Scenario,
    engine_name: str,
    w: World,
    engine: EngineUnderTest,
    take: Callable[[], WorldSlice],
    seen: int,
    note: str,
    setup: StepObservation,
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
            world=take(),
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
    final = tuple(check(s.expect, [setup, *(r.observation for r in steps)]))
    failed = any(r.mismatches for r in steps) or final
    verdict = Verdict.ERROR if error else Verdict.FAILED if failed else Verdict.PASSED
    return ScenarioResult(
        **_base(s, engine_name),
        verdict=verdict,
        reason=error or note,
        setup=setup,
        steps=tuple(steps),
        final=final,
        seconds=time.monotonic() - began,
    )
