"""Comparing a target's verdict with the oracle's, and counting (sans-IO).

Theory of operation
-------------------
A target says accept, reject, or nothing usable (it crashed in JSON mode, timed
out, printed no verdict): :class:`TargetVerdict`. :func:`compare` puts it next to
:class:`~harness.parserfuzz.oracle.OracleVerdict` and returns a
:class:`Disagreement`, or None when they agree. A disagreement's :attr:`~Disagreement.key`
(direction, rule, reason) says which finding it is an instance of: the fuzzer
shrinks one input per key and writes one corpus file per key.

:class:`Tally` counts every input judged during generation (never the shrinker's
replays), by direction and by rule id.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from harness.parserfuzz.oracle import BOTH_DEFENSIBLE, Kind, OracleVerdict

__all__ = ["Direction", "Disagreement", "Tally", "TargetVerdict", "compare"]


class Direction(StrEnum):
    """Which way a target departs from RFC 8461 (as the oracle reads it)."""

    LENIENT = "target accepts what RFC 8461 rejects"
    STRICT = "target rejects what RFC 8461 allows"
    NO_VERDICT = "target gave no verdict"


@dataclass(frozen=True, slots=True)
class TargetVerdict:
    """What the target said about one input.

    Attributes:
        accept: True / False, or None when it gave no usable verdict.
        detail: its exit status, JSON line, return value or exception, in one line.
    """

    accept: bool | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One input on which the target and the oracle differ.

    Attributes:
        kind: policy body or TXT record.
        data: the input bytes.
        ours: the oracle's verdict (with the rule id).
        theirs: the target's verdict.
        direction: which way the target departs.
    """

    kind: Kind
    data: bytes
    ours: OracleVerdict
    theirs: TargetVerdict
    direction: Direction

    @property
    def key(self) -> tuple[str, str, str]:
        """(direction, rule, reason): the finding this input is an instance of."""
        return (self.direction.name, self.ours.rule, self.ours.reason)

    @property
    def defensible(self) -> bool:
        """True on an AMB case where docs/decisions.md allows both readings."""
        return self.ours.rule in BOTH_DEFENSIBLE and self.direction is not Direction.NO_VERDICT


def compare(
    kind: Kind, data: bytes, ours: OracleVerdict, theirs: TargetVerdict
) -> Disagreement | None:
    """The disagreement between ``ours`` and ``theirs`` on ``data``, or None.

    Args:
        kind: what ``data`` is.
        data: the input both judged.
        ours: the oracle's verdict.
        theirs: the target's verdict.

    Returns:
        None when both accept or both reject; else the classified disagreement.
    """
    if theirs.accept is None:
        direction = Direction.NO_VERDICT
    elif theirs.accept == ours.accept:
        return None
    else:
        direction = Direction.LENIENT if theirs.accept else Direction.STRICT
    return Disagreement(kind=kind, data=data, ours=ours, theirs=theirs, direction=direction)


@dataclass(slots=True)
class Tally:
    """Counts over the generated inputs (mutable; one per run).

    Attributes:
        inputs: inputs judged.
        agreements: inputs on which both verdicts agree.
        by_direction: disagreements per :class:`Direction`.
        by_rule: disagreements per (direction, rule id).
    """

    inputs: int = 0
    agreements: int = 0
    by_direction: Counter[Direction] = field(default_factory=Counter)
    by_rule: Counter[tuple[Direction, str]] = field(default_factory=Counter)

    def add(self, outcome: Disagreement | None) -> None:
        """Count one judged input."""
        self.inputs += 1
        if outcome is None:
            self.agreements += 1
            return
        self.by_direction[outcome.direction] += 1
        self.by_rule[(outcome.direction, outcome.ours.rule)] += 1

    @property
    def disagreements(self) -> int:
        """Inputs judged differently."""
        return self.inputs - self.agreements

    @property
    def rate(self) -> float:
        """Disagreements per input (0.0 before any input)."""
        return self.disagreements / self.inputs if self.inputs else 0.0
