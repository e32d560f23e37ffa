"""What a run produces: a scenario's :class:`ScenarioResult`, its :class:`StepResult` s.

Everything here is plain data, so results cross process boundaries (``sts-harness
run -j N``, the black-box child's pickle) and become JSON, JUnit and HTML reports
without special cases. :func:`result_header` and :func:`judged` are the one place the
single runner (:mod:`harness.run.single`) and the batch runner
(:mod:`harness.run.batch.runner`) turn a scenario and its steps into a result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from harness.scenario.assertions import Mismatch, check
from harness.scenario.model import Expect, Scenario
from harness.scenario.observation import StepObservation

__all__ = ["ScenarioResult", "ScenarioVerdict", "StepResult", "judged", "result_header"]


class ScenarioVerdict(StrEnum):
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
    verdict: ScenarioVerdict
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
        return self.verdict in (ScenarioVerdict.PASSED, ScenarioVerdict.SKIPPED)

    @property
    def observations(self) -> list[StepObservation]:
        """The set-up's and every step's observation, in order."""
        return [self.setup, *(s.observation for s in self.steps)]


def result_header(scenario: Scenario, engine: str, **extra: Any) -> dict[str, Any]:
    """The fields of a :class:`ScenarioResult` that come from the scenario itself."""
    return {
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
        **extra,
    }


def judged(
    header: Mapping[str, Any],
    scenario: Scenario,
    setup: StepObservation,
    steps: Sequence[StepResult],
    seconds: float,
    note: str = "",
) -> ScenarioResult:
    """The verdict over a run's steps and the final ``[expect]``, as a result.

    A step that raised makes it ERROR (its traceback the reason); a step's or the final
    expectation's mismatch makes it FAILED; else PASSED. ``note`` is the reason when
    there is no error (what a batch dropped of the scenario).
    """
    error = next((s.observation.error for s in steps if s.observation.error), None)
    final = tuple(check(scenario.expect, [setup, *(s.observation for s in steps)]))
    failed = any(s.mismatches for s in steps) or final
    verdict = (
        ScenarioVerdict.ERROR
        if error
        else ScenarioVerdict.FAILED
        if failed
        else ScenarioVerdict.PASSED
    )
    return ScenarioResult(
        **header,
        verdict=verdict,
        reason=error or note,
        setup=setup,
        steps=tuple(steps),
        final=final,
        seconds=seconds,
    )
