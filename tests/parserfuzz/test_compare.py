"""Disagreement classes and counts (harness/parserfuzz/compare.py)."""

from __future__ import annotations

from harness.parserfuzz import Direction, Kind, Tally, TargetVerdict, compare, judge

VALID = b"version: STSv1\nmode: none\nmax_age: 31557601\n"
INVALID = b"version: STSv1\nmode: reject\nmax_age: 1\n"


def test_agreement_is_none() -> None:
    assert compare(Kind.POLICY, VALID, judge(Kind.POLICY, VALID), TargetVerdict(True)) is None
    assert compare(Kind.POLICY, INVALID, judge(Kind.POLICY, INVALID), TargetVerdict(False)) is None


def test_directions_and_defensible() -> None:
    strict = compare(Kind.POLICY, VALID, judge(Kind.POLICY, VALID), TargetVerdict(False, "no"))
    lenient = compare(Kind.POLICY, INVALID, judge(Kind.POLICY, INVALID), TargetVerdict(True))
    silent = compare(Kind.POLICY, INVALID, judge(Kind.POLICY, INVALID), TargetVerdict(None))
    assert strict is not None and lenient is not None and silent is not None
    assert strict.direction is Direction.STRICT
    assert strict.direction.value == "target rejects what RFC 8461 allows"
    assert (strict.ours.rule, strict.defensible) == ("AMB-1", True)  # grammar vs prose
    assert lenient.direction.value == "target accepts what RFC 8461 rejects"
    assert (lenient.ours.rule, lenient.defensible) == ("POL-4", False)
    assert silent.direction is Direction.NO_VERDICT
    assert strict.key != lenient.key


def test_tally_counts_by_direction_and_rule() -> None:
    tally = Tally()
    assert tally.rate == 0.0
    tally.add(None)
    tally.add(compare(Kind.POLICY, INVALID, judge(Kind.POLICY, INVALID), TargetVerdict(True)))
    tally.add(compare(Kind.POLICY, VALID, judge(Kind.POLICY, VALID), TargetVerdict(False)))
    tally.add(None)
    assert (tally.inputs, tally.agreements, tally.disagreements, tally.rate) == (4, 2, 2, 0.5)
    assert tally.by_direction == {Direction.LENIENT: 1, Direction.STRICT: 1}
    assert tally.by_rule == {(Direction.LENIENT, "POL-4"): 1, (Direction.STRICT, "AMB-1"): 1}
