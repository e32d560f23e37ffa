"""The differential fuzzing loop: generate, judge twice, shrink each new finding.

Theory of operation
-------------------
Hypothesis's :func:`hypothesis.find` drives everything, one *round* at a time.
Its condition judges each generated input with the oracle and the target and
counts it in the :class:`~harness.parserfuzz.compare.Tally`. While no new finding
has turned up, the condition returns False, so generation goes on. The first
disagreement whose key (direction, rule, reason) is new makes it return True;
from then on hypothesis is shrinking, and the condition returns True only for a
candidate with that same key (and counts nothing). ``find`` returns the smallest
such input; the next round starts with the next seed and the inputs left.

So every distinct disagreement is shrunk once and every generated input is
counted once. A *valid* input the target rejects is different: which of its features
(:attr:`~harness.parserfuzz.oracle.OracleVerdict.features`) upsets the target is not
known, so shrinking keeps only the direction and lets features go (a candidate's
features must be a subset of the first input's); the smallest input's first feature
names the finding, and later inputs with an already blamed feature are not hunted.

A round that the input count, the time budget or ``shrink_seconds`` ends while
shrinking keeps the smallest input found so far (``shrunk=False`` then). The target
is any callable from bytes to :class:`~harness.parserfuzz.compare.TargetVerdict`
(:mod:`harness.parserfuzz.adapters`); time comes from the injected ``clock``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hypothesis import HealthCheck, Verbosity, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from harness.parserfuzz.adapters import TargetError
from harness.parserfuzz.compare import Disagreement, Tally, TargetVerdict, compare
from harness.parserfuzz.oracle import Kind, judge
from harness.parserfuzz.policy_inputs import policy_inputs
from harness.parserfuzz.txt_inputs import txt_inputs

__all__ = ["Finding", "FuzzOptions", "FuzzResult", "Target", "fuzz", "inputs_for"]


class Target(Protocol):
    """A parser under test: the input bytes in, its verdict out (never raises)."""

    def __call__(self, data: bytes, /) -> TargetVerdict: ...


@dataclass(frozen=True, slots=True)
class FuzzOptions:
    """What one run does.

    Attributes:
        kind: policy bodies or TXT records.
        inputs: generated inputs to judge (shrinking replays not counted).
        seed: the first round's seed; round ``n`` uses ``seed + n``.
        time_budget: seconds after which no new input is started, or None.
        max_findings: distinct disagreements to shrink; later ones are only counted.
        shrink_seconds: time one finding may spend shrinking; then its smallest input
            so far is kept (``shrunk=False``).
    """

    kind: Kind
    inputs: int = 1000
    seed: int = 0
    time_budget: float | None = None
    max_findings: int = 25
    shrink_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One distinct disagreement, shrunk.

    Attributes:
        disagreement: the (smallest) input and both verdicts.
        label: the generator family or mutation that produced it.
        instances: generated inputs with the same key.
        shrunk: False when the run ended before shrinking finished.
    """

    disagreement: Disagreement
    label: str
    instances: int
    shrunk: bool


@dataclass(slots=True)
class FuzzResult:
    """A finished run: the counts, the findings, and why it stopped."""

    tally: Tally
    findings: list[Finding] = field(default_factory=list)
    stopped: str = "inputs"  # "inputs", "time" or "exhausted"
    elapsed: float = 0.0


class _ShrinkDone(BaseException):
    """Ends one finding's shrinking when its time is up (the run goes on)."""


class _Stop(BaseException):
    """Ends a round from inside hypothesis (a BaseException: not a test failure)."""


class _Abort(BaseException):
    """Carries a :class:`TargetError` out of hypothesis, which would shrink an Exception."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(str(error))
        self.error = error


def inputs_for(kind: Kind) -> st.SearchStrategy[tuple[str, bytes]]:
    """The ``(label, bytes)`` strategy for ``kind``."""
    return policy_inputs() if kind is Kind.POLICY else txt_inputs()


Key = tuple[str, str, str]


@dataclass(slots=True)
class _Run:
    """The state one :func:`fuzz` call shares with hypothesis's condition."""

    target: Target
    options: FuzzOptions
    clock: Callable[[], float]
    on_input: Callable[[Tally], None] | None
    start: float
    tally: Tally = field(default_factory=Tally)
    instances: Counter[Key] = field(default_factory=Counter)
    findings: dict[Key, Finding] = field(default_factory=dict)
    hunting: Key | None = None  # the finding being shrunk in this round
    scope: frozenset[str] | None = None  # an accepted input's features, when hunting one
    best: tuple[str, Disagreement] | None = None  # its smallest input so far
    blamed: set[str] = field(default_factory=set)  # features found to upset the target
    hunt_start: float = 0.0  # when the current finding's shrinking began

    def over_budget(self) -> bool:
        budget = self.options.time_budget
        return budget is not None and self.clock() - self.start >= budget

    def judged(self, data: bytes) -> Disagreement | None:
        try:
            theirs = self.target(data)
        except TargetError as exc:
            raise _Abort(exc) from None
        kind = self.options.kind
        return compare(kind, data, judge(kind, data), theirs)

    def _same(self, found: Disagreement | None) -> bool:
        """Whether a shrinking candidate is still an instance of the hunted finding."""
        if found is None or self.hunting is None:
            return False
        if self.scope is None:
            return found.key == self.hunting
        return found.direction.name == self.hunting[0] and set(found.ours.features) <= self.scope

    def condition(self, case: tuple[str, bytes]) -> bool:
        label, data = case
        if self.hunting is not None:  # shrinking: the same finding, smaller; nothing counted
            if self.over_budget():
                raise _Stop
            if self.clock() - self.hunt_start >= self.options.shrink_seconds:
                raise _ShrinkDone
            found = self.judged(data)
            if found is None or not self._same(found):
                return False
            self.best = (label, found)
            return True
        if self.tally.inputs >= self.options.inputs or self.over_budget():
            raise _Stop
        found = self.judged(data)
        self.tally.add(found)
        if self.on_input is not None:
            self.on_input(self.tally)
        if found is None:
            return False
        if found.ours.accept:  # every feature of a valid input may be the cause
            for feature in found.ours.features:
                self.instances[(found.direction.name, "", feature)] += 1
        else:
            self.instances[found.key] += 1
        if len(self.findings) >= self.options.max_findings:
            return False
        if found.ours.accept:
            # A valid input: which of its features upsets the target is not known yet.
            # Shrinking keeps the direction and drops features; the smallest input's
            # first feature names the finding. Inputs with a feature already blamed
            # are not hunted again.
            if self.blamed.intersection(found.ours.features):
                return False
            self.scope = frozenset(found.ours.features)
        elif found.key in self.findings:
            return False
        self.hunting, self.best = found.key, (label, found)
        self.hunt_start = self.clock()
        return True

    def round(self, seed: int) -> str | None:
        """One ``find``: returns why the run must stop, or None to go on."""
        self.hunting, self.scope, self.best = None, None, None
        before = self.tally.inputs
        config = settings(
            max_examples=self.options.inputs - before,
            database=None,
            deadline=None,
            verbosity=Verbosity.quiet,
            suppress_health_check=list(HealthCheck),
        )
        stop: str | None = None
        finished = False
        try:
            label, data = find(
                inputs_for(self.options.kind),
                self.condition,
                settings=config,
                random=random.Random(seed),
            )
            final = self.judged(data)
            if self._same(final):
                assert final is not None  # _same says so
                self.best = (label, final)
            finished = True
        except NoSuchExample:
            stop = "exhausted" if self.tally.inputs == before else None
        except _ShrinkDone:
            pass
        except _Stop:
            stop = "time" if self.over_budget() else "inputs"
        except _Abort as abort:
            raise abort.error from None
        if self.hunting is not None and self.best is not None:
            label, smallest = self.best
            if smallest.ours.accept:
                self.blamed.add(smallest.ours.features[0])
            if smallest.key not in self.findings:
                self.findings[smallest.key] = Finding(smallest, label, 0, shrunk=finished)
        return stop

    def instances_of(self, found: Disagreement) -> int:
        """Generated inputs of the finding: its key, or (valid input) its first feature."""
        if found.ours.accept:
            return self.instances[(found.direction.name, "", found.ours.features[0])]
        return self.instances[found.key]


def fuzz(
    target: Target,
    options: FuzzOptions,
    *,
    clock: Callable[[], float],
    on_input: Callable[[Tally], None] | None = None,
) -> FuzzResult:
    """Fuzz ``target`` against the oracle.

    Args:
        target: the parser under test.
        options: kind, input count, seed, time budget, findings cap.
        clock: monotonic seconds (injected; tests pass a fake).
        on_input: called after each counted input (a progress bar).

    Returns:
        The tally, the shrunk findings in the order found, and why the run stopped.

    Raises:
        TargetError: the target cannot run at all (raised by the target itself).
    """
    run = _Run(target, options, clock, on_input, start=clock())
    stopped = "inputs"
    seed = options.seed
    while run.tally.inputs < options.inputs:
        if run.over_budget():
            stopped = "time"
            break
        why = run.round(seed)
        seed += 1
        if why in ("time", "exhausted"):
            stopped = why
            break
    findings = [
        Finding(f.disagreement, f.label, run.instances_of(f.disagreement), f.shrunk)
        for f in run.findings.values()
    ]
    return FuzzResult(run.tally, findings, stopped, clock() - run.start)
