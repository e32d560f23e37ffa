"""Running scenarios: world up, engine up, steps, expectations, a result.

Theory of operation
-------------------
:func:`run_scenario_async` runs one scenario in the caller's event loop:

1. choose the adapter (:func:`select_engine`): ``--engine``, except that a scenario
   the ``inprocess`` engine cannot run for lack of a capability that the ``gateway``
   adapter has (``tlsrpt``: reports and DSNs) runs on ``gateway``; make a fresh
   adapter and compare its capabilities with what the scenario needs: its
   ``requires`` plus what its steps and expectations imply (an ``advance`` step
   needs ``clock``, a ``logs`` expectation needs ``logs``, ``reports`` needs
   ``tlsrpt``...). Missing capabilities make the result SKIPPED, with them named.
   An adapter with a ``plan(needs)`` method is told what the scenario needs before
   the world starts (the ``sts-engine`` process takes a manual clock only when a
   scenario moves time);
2. bring the world up at the adapter's clock, with the process's one
   :class:`~certs.CertFactory` (its CAs are made once per process), and start the
   engine in a temporary work directory (the policy cache lives there, and outlives
   ``restart_engine``);
3. run the steps with the step loop the batch runner shares
   (:func:`harness.run.steps.run_steps`): clock, act, let the world settle (SMTP
   session records are final when no session is live), take the step's slice of the
   world and of the engine's events, and check the step's expectations; a step that
   raises ends the run as ERROR with the traceback;
4. check the final ``[expect]`` over everything, the set-up included.

A scenario with ``[expect] config_error`` runs no step: with the world up, the
engine must refuse to start on the ``[sender]`` configuration, with a message that
matches (:func:`harness.run.steps.refusal`); starting fine, or refusing for another
reason, fails it.

The result (:mod:`harness.run.result`) is plain data. Scenarios run one after another
in a process; parallelism comes from pytest-xdist or the ``-j`` process pool, never
from sharing a loop.

Each scenario runs in a new event loop, by default the standard library's;
``loop="uvloop"`` runs the world and an in-process engine on uvloop instead
(:mod:`engine.eventloop`), as ``sts-engine`` commands run in production.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
import traceback
from pathlib import Path

from engine import eventloop
from harness.adapters.base import AdapterError
from harness.adapters.registry import make_adapter
from harness.run.result import ScenarioResult, ScenarioVerdict, StepResult, judged, result_header
from harness.run.steps import Recorder, refusal, run_steps
from harness.scenario.model import Capability, Scenario
from harness.scenario.needs import required_capabilities
from harness.scenario.observation import StepObservation, WorldWatcher
from harness.world.world import World, shared_cert_factory

__all__ = [
    "DEFAULT_WAYS",
    "lacks",
    "run_file",
    "run_scenario",
    "run_scenario_async",
    "select_engine",
    "way",
]


#: ``--engine`` name -> the adapter that runs the scenarios it lacks capabilities for.
ENGINE_FALLBACK = {"inprocess": "gateway"}
#: The ways the test suite runs every scenario (README): way -> (engine, runner loop).
#: ``sts-engine`` runs the gateway as a process on its own default loop (uvloop); the
#: runner's loop only carries the world there.
DEFAULT_WAYS = {
    "inprocess": ("inprocess", "asyncio"),
    "inprocess-uvloop": ("inprocess", "uvloop"),
    "sts-engine": ("sts-engine", "asyncio"),
}


def way(name: str) -> tuple[str, str]:
    """``--engine NAME`` -> (adapter, runner loop): a :data:`DEFAULT_WAYS` name, or an
    adapter name run on the standard loop."""
    return DEFAULT_WAYS.get(name, (name, "asyncio"))


def lacks(engine: str, missing: frozenset[Capability] | set[Capability]) -> str:
    """The skip reason for ``missing`` capabilities, with the adapter's why for each
    (``EngineUnderTest.missing_why``, when it has one)."""
    why = getattr(make_adapter(engine), "missing_why", {})
    named = [f"{c} ({why[c]})" if c in why else str(c) for c in sorted(missing)]
    return f"engine {engine!r} lacks {', '.join(named)}"


def select_engine(scenario: Scenario, engine: str) -> str:
    """The adapter a scenario runs on: ``engine``, or its fallback when only that fits.

    ``--engine inprocess`` (the default) runs the engine alone, without the gateway's
    queue and TLS reporter; a scenario that needs what only the ``gateway`` adapter
    has (``tlsrpt``) runs there instead, so the default run covers it too. Any other
    ``--engine`` is used as given (a black-box engine is never swapped for ours).
    """
    fallback = ENGINE_FALLBACK.get(engine)
    if fallback is None:
        return engine
    need = required_capabilities(scenario)
    if need <= make_adapter(engine).capabilities:
        return engine
    return fallback if need <= make_adapter(fallback).capabilities else engine


async def run_scenario_async(
    scenario: Scenario, engine: str = "inprocess", *, workdir: Path | None = None
) -> ScenarioResult:
    """Run one scenario in the running event loop (see the module docstring).

    Args:
        scenario: the scenario.
        engine: the adapter name (``--engine``).
        workdir: where the engine keeps files (default: a fresh temporary directory).
    """
    began = time.monotonic()
    engine = select_engine(scenario, engine)
    header = result_header(scenario, engine, loop=eventloop.loop_name(asyncio.get_running_loop()))
    adapter = make_adapter(engine)
    need = required_capabilities(scenario)
    missing = need - adapter.capabilities
    if missing:
        return ScenarioResult(
            **header, verdict=ScenarioVerdict.SKIPPED, reason=lacks(engine, missing)
        )
    plan = getattr(adapter, "plan", None)
    if plan is not None:
        plan(need)
    steps: list[StepResult] = []
    setup = StepObservation(-1, "set-up")
    with tempfile.TemporaryDirectory(prefix="scenario-") as tmp:
        try:
            async with World(scenario.world, now=adapter.now, certs=shared_cert_factory()) as w:
                if scenario.config_error is not None:
                    refused = await refusal(scenario, w, adapter, workdir or Path(tmp))
                    return ScenarioResult(
                        **header,
                        verdict=ScenarioVerdict.FAILED if refused else ScenarioVerdict.PASSED,
                        final=refused,
                        seconds=time.monotonic() - began,
                    )
                try:
                    await adapter.start(w, scenario.sender, workdir or Path(tmp))
                    rec = Recorder(adapter, functools.partial(WorldWatcher().take, w))
                    setup = rec.take(-1, "set-up", adapter.now(), began)
                    steps = await run_steps(scenario, w, adapter, rec)
                finally:
                    await adapter.stop()
        except Exception:
            return ScenarioResult(
                **header,
                verdict=ScenarioVerdict.ERROR,
                reason=traceback.format_exc(),
                setup=setup,
                steps=tuple(steps),
                seconds=time.monotonic() - began,
            )
    return judged(header, scenario, setup, steps, time.monotonic() - began)


def run_scenario(
    scenario: Scenario, engine: str = "inprocess", *, loop: str = "asyncio"
) -> ScenarioResult:
    """Run one scenario in a new event loop (for pytest items, the CLI and workers).

    Args:
        scenario: the scenario.
        engine: the adapter name.
        loop: ``"asyncio"`` or ``"uvloop"`` (see the module docstring).

    Raises:
        AdapterError: ``loop`` is not a loop this machine has.
    """
    if not eventloop.loop_available(loop):
        raise AdapterError(f"event loop {loop!r} is not available here")
    return eventloop.run(run_scenario_async(scenario, engine), loop=loop)


def run_file(path: str | Path, engine: str = "inprocess", loop: str = "asyncio") -> ScenarioResult:
    """Load and run one scenario file (picklable entry point for worker processes)."""
    from harness.scenario.loader import load_scenario

    return run_scenario(load_scenario(path), engine, loop=loop)
