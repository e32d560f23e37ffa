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
3. for each step: act, let the world settle (SMTP session records are final when
   no session is live), take the step's slice of the world and of the engine's
   events, and check the step's expectations; a step that raises ends the run as
   ERROR with the traceback;
4. check the final ``[expect]`` over everything, the set-up included.

A scenario with ``[expect] config_error`` runs no step: with the world up, the
engine must refuse to start on the ``[sender]`` configuration, with a message that
matches (:func:`_refusal`); starting fine, or refusing for another reason, fails it.

Everything in a :class:`ScenarioResult` is plain data, so results cross process
boundaries (``sts-harness run -j N``) and become JSON, JUnit and HTML reports
without special cases. Scenarios run one after another in a process; parallelism
comes from pytest-xdist or the ``-j`` process pool, never from sharing a loop.

Each scenario runs in a new event loop, by default the standard library's;
``loop="uvloop"`` runs the world and an in-process engine on uvloop instead
(:mod:`engine.eventloop`), as ``sts-engine`` commands run in production.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine import eventloop
from engine.core.errors import MxPatternError
from engine.core.mx import normalize_host
from harness.adapters.base import AdapterError, EngineUnderTest, make_adapter
from harness.assertions import Mismatch, check
from harness.scenario.loader import config_error_matches
from harness.scenario.model import Capability, Expect, Scenario, SendSpec, Step, StepKind
from harness.scenario.observation import DeliveryRecord, StepObservation, WorldWatcher
from harness.world.world import World, shared_cert_factory

__all__ = [
    "DEFAULT_WAYS",
    "ScenarioResult",
    "StepResult",
    "Verdict",
    "lacks",
    "required_capabilities",
    "run_file",
    "run_scenario",
    "run_scenario_async",
    "select_engine",
    "way",
]


class Verdict(StrEnum):
    """How a scenario ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: what it was, what it saw, what did not hold."""

    index: int
    kind: str
    label: str
    expect: Expect
    observation: StepObservation
    mismatches: tuple[Mismatch, ...] = ()


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario's run (plain data; see the module docstring).

    Attributes:
        id, title, path, topic, covers, description: from the scenario.
        engine: the adapter name.
        loop: the event loop the runner, the world and an in-process engine ran on.
        verdict: how it ended.
        reason: why it was skipped, or the error's traceback.
        world: the ``[world]`` table as written.
        sender: the ``[sender]`` table.
        setup: what happened before the first step (engine start-up events).
        steps: the steps that ran.
        expect: the final ``[expect]``.
        final: its mismatches.
        seconds: wall time.
    """

    id: str
    title: str
    path: str
    topic: str
    covers: tuple[str, ...]
    engine: str
    verdict: Verdict
    reason: str = ""
    loop: str = "asyncio"
    description: str = ""
    world: Mapping[str, Any] = field(default_factory=dict)
    sender: Mapping[str, Any] = field(default_factory=dict)
    setup: StepObservation = field(default_factory=lambda: StepObservation(-1, "set-up"))
    steps: tuple[StepResult, ...] = ()
    expect: Expect = field(default_factory=Expect)
    final: tuple[Mismatch, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Passed or skipped."""
        return self.verdict in (Verdict.PASSED, Verdict.SKIPPED)

    @property
    def observations(self) -> list[StepObservation]:
        """The set-up's and every step's observation, in order."""
        return [self.setup, *(s.observation for s in self.steps)]


_STEP_NEEDS = {StepKind.ADVANCE: Capability.CLOCK, StepKind.RESTART_ENGINE: Capability.RESTART}
_EXPECT_NEEDS = {
    "events": Capability.EVENTS,
    "no_events": Capability.EVENTS,
    "logs": Capability.LOGS,
    "outcome": Capability.REPORT,
    "verified": Capability.REPORT,
    "reports": Capability.TLSRPT,
    "dsn": Capability.TLSRPT,
}
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


def required_capabilities(scenario: Scenario) -> frozenset[Capability]:
    """``requires`` plus what the steps and expectations imply."""
    need = set(scenario.requires)
    for step in scenario.steps:
        if step.kind in _STEP_NEEDS:
            need.add(_STEP_NEEDS[step.kind])
        if step.kind is StepKind.SEND and step.args.final:
            need.add(Capability.FINAL)
    for expect in (*(s.expect for s in scenario.steps), scenario.expect):
        need |= {cap for key, cap in _EXPECT_NEEDS.items() if getattr(expect, key)}
        if expect.no_reports is not None:
            need.add(Capability.TLSRPT)
    return frozenset(need)


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


def _header_address(address: str) -> str:
    # What an ASCII-only writer puts in To: the domain in A-labels (RFC 5890). A U-label
    # there makes the message an internationalised one (RFC 6532), which a relay must
    # not send to a server without SMTPUTF8 (RFC 6531 §3.2; engine/core/transfer.py).
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{normalize_host(domain)}"
    except MxPatternError:
        return address  # not a name IDNA can write: the scenario meant it as it is


def _message(scenario: Scenario, step: Step, send: SendSpec) -> bytes:
    if send.data is not None:
        return send.data
    to = ", ".join(f"<{_header_address(r)}>" for r in send.rcpts)
    return (
        f"From: <{send.mail_from}>\r\nTo: {to}\r\n"
        f"Subject: {scenario.id} step {step.index}\r\n"
        f"Message-ID: <{scenario.id}.{step.index}@harness.invalid>\r\n\r\n"
        "Sent by the mta-sts-harness conformance catalog.\r\n"
    ).encode()


async def _act(
    scenario: Scenario, step: Step, world: World, engine: EngineUnderTest
) -> tuple[DeliveryRecord, ...]:
    a = step.args
    if step.kind is StepKind.SEND:
        data = _message(scenario, step, a)
        return tuple(await engine.send(a.mail_from, a.rcpts, data, final=a.final))
    if step.kind is StepKind.ADVANCE:
        await engine.advance(a)
    elif step.kind is StepKind.RESTART_ENGINE:
        await engine.restart()
    elif step.kind is StepKind.UPDATE_DOMAIN:
        await world.update_domain(a["domain"], **{k: v for k, v in a.items() if k != "domain"})
    elif step.kind is StepKind.UPDATE_POLICY:
        kw = {k: v for k, v in a.items() if k not in ("domain", "body")}
        await world.update_policy(a["domain"], a.get("body"), **kw)
    elif step.kind is StepKind.SET_DNS:
        await world.set_dns(a["name"], a["rrtype"], a["behaviour"], delay_ms=a["delay_ms"])
    else:
        await world.rotate_cert(
            a["host"], a["profile"], names=a["names"], update_tlsa=a["update_tlsa"]
        )
    return ()


class _Recorder:
    """Cuts the world's logs and the engine's events into per-step observations."""

    def __init__(self, world: World, engine: EngineUnderTest) -> None:
        self.world, self.engine, self.watcher, self.seen = world, engine, WorldWatcher(), 0

    def take(
        self, index: int, label: str, clock: float, began: float, **kw: Any
    ) -> StepObservation:
        events = tuple(self.engine.events()[self.seen :])
        self.seen += len(events)
        return StepObservation(
            index=index,
            label=label,
            events=events,
            lines=tuple(e.line for e in events if e.line),
            world=self.watcher.take(self.world),
            clock=clock,
            seconds=time.monotonic() - began,
            **kw,
        )


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
    base: dict[str, Any] = {
        "loop": eventloop.loop_name(asyncio.get_running_loop()),
        "id": scenario.id,
        "title": scenario.title,
        "path": str(scenario.path),
        "topic": scenario.topic,
        "covers": scenario.covers,
        "engine": engine,
        "description": scenario.description,
        "world": scenario.world_table,
        "sender": scenario.sender,
        "expect": scenario.expect,
    }
    adapter = make_adapter(engine)
    need = required_capabilities(scenario)
    missing = need - adapter.capabilities
    if missing:
        return ScenarioResult(**base, verdict=Verdict.SKIPPED, reason=lacks(engine, missing))
    plan = getattr(adapter, "plan", None)
    if plan is not None:
        plan(need)
    steps: list[StepResult] = []
    setup = StepObservation(-1, "set-up")
    with tempfile.TemporaryDirectory(prefix="scenario-") as tmp:
        try:
            async with World(scenario.world, now=adapter.now, certs=shared_cert_factory()) as w:
                if scenario.config_error is not None:
                    refused = await _refusal(scenario, w, adapter, workdir or Path(tmp))
                    return ScenarioResult(
                        **base,
                        verdict=Verdict.FAILED if refused else Verdict.PASSED,
                        final=refused,
                        seconds=time.monotonic() - began,
                    )
                try:
                    await adapter.start(w, scenario.sender, workdir or Path(tmp))
                    rec = _Recorder(w, adapter)
                    setup = rec.take(-1, "set-up", adapter.now(), began)
                    for step in scenario.steps:
                        steps.append(await _run_step(scenario, step, w, adapter, rec))
                        if steps[-1].observation.error:
                            break
                finally:
                    await adapter.stop()
        except Exception:
            return ScenarioResult(
                **base,
                verdict=Verdict.ERROR,
                reason=traceback.format_exc(),
                setup=setup,
                steps=tuple(steps),
                seconds=time.monotonic() - began,
            )
    error = next((s.observation.error for s in steps if s.observation.error), None)
    final = tuple(check(scenario.expect, [setup, *(s.observation for s in steps)]))
    failed = any(s.mismatches for s in steps) or final
    verdict = Verdict.ERROR if error else Verdict.FAILED if failed else Verdict.PASSED
    return ScenarioResult(
        **base,
        verdict=verdict,
        reason=error or "",
        setup=setup,
        steps=tuple(steps),
        final=final,
        seconds=time.monotonic() - began,
    )


async def _refusal(
    scenario: Scenario, world: World, engine: EngineUnderTest, workdir: Path
) -> tuple[Mismatch, ...]:
    """``[expect] config_error``: the engine must refuse ``[sender]`` at start."""
    pattern = scenario.config_error
    assert pattern is not None
    try:
        await engine.start(world, scenario.sender, workdir)
    except AdapterError as exc:
        if config_error_matches(pattern, str(exc)):
            return ()
        return (Mismatch("config_error", pattern, f"refused otherwise: {exc}"),)
    finally:
        await engine.stop()
    return (Mismatch("config_error", pattern, "the engine accepted the configuration"),)


async def _run_step(
    scenario: Scenario, step: Step, world: World, engine: EngineUnderTest, rec: _Recorder
) -> StepResult:
    began, clock = time.monotonic(), engine.now()
    deliveries: tuple[DeliveryRecord, ...] = ()
    error = None
    try:
        deliveries = await _act(scenario, step, world, engine)
        await world.settle()
    except Exception:
        error = traceback.format_exc()
    obs = rec.take(step.index, step.label, clock, began, deliveries=deliveries, error=error)
    mismatches = () if error else tuple(check(step.expect, [obs]))
    return StepResult(step.index, step.kind.value, step.label, step.expect, obs, mismatches)


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
