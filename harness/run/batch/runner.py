"""Running a :class:`~harness.run.batch.plan.Batch`: one world, one engine lifetime.

Theory of operation
-------------------
:func:`run_batch` brings up one world from the batch's merged ``[world]`` tables,
starts the engine once, and runs each scenario's steps in turn with one
:class:`~harness.scenario.observation.WorldWatcher`, so each step sees only its own
slice of the shared world. The engine's start-up is every scenario's set-up
observation. The steps run in the single runner's step loop
(:func:`harness.run.steps.run_steps`) and are judged into the same plain-data results
(:func:`harness.run.result.judged`). A scenario
with ``[expect] config_error`` runs alone: the engine must refuse its ``[sender]``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from harness.adapters.base import EngineUnderTest
from harness.run.batch.plan import Batch
from harness.run.result import ScenarioResult, ScenarioVerdict, judged, result_header
from harness.run.steps import Recorder, refusal, run_steps
from harness.scenario.model import Scenario
from harness.scenario.observation import StepObservation, WorldSlice, WorldWatcher
from harness.world.world import World, shared_cert_factory

__all__ = ["run_batch"]


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
                watcher = WorldWatcher()
                # The engine's start-up is every scenario's set-up (they share it).
                setup = StepObservation(
                    -1, "set-up", events=tuple(engine.events()), world=watcher.take(w)
                )
                owners = _owners(batch.scenarios)
                for s in batch.scenarios:
                    note = notes.get(s.id, "")

                    def take(sid: str = s.id) -> WorldSlice:
                        return _own(watcher.take(w), sid, owners)

                    rec = Recorder(engine, take, seen=len(engine.events()))
                    results.append(await _run_one(s, engine_name, w, engine, rec, note, setup))
            finally:
                await engine.stop()
    except Exception:
        tb = traceback.format_exc()
        done = {r.id for r in results}
        results += [
            ScenarioResult(
                **result_header(s, engine_name),
                verdict=ScenarioVerdict.ERROR,
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
    began = time.monotonic()
    async with World(s.world_table, now=engine.now, certs=shared_cert_factory()) as w:
        final = await refusal(s, w, engine, workdir)
    verdict = ScenarioVerdict.FAILED if final else ScenarioVerdict.PASSED
    return ScenarioResult(
        **result_header(s, engine_name),
        verdict=verdict,
        final=final,
        seconds=time.monotonic() - began,
    )


async def _run_one(
    s: Scenario,
    engine_name: str,
    w: World,
    engine: EngineUnderTest,
    rec: Recorder,
    note: str,
    setup: StepObservation,
) -> ScenarioResult:
    """One scenario of the batch: the shared step loop, judged against the shared set-up."""
    began = time.monotonic()
    steps = await run_steps(s, w, engine, rec)
    header = result_header(s, engine_name)
    return judged(header, s, setup, steps, time.monotonic() - began, note=note)
