"""The fuzzing loop: counting, shrinking, classes, budget (harness/parserfuzz/fuzz.py)."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from harness.parserfuzz import (
    CallableTarget,
    Direction,
    Finding,
    FuzzOptions,
    FuzzResult,
    Kind,
    Tally,
    TargetError,
    TargetVerdict,
    compare,
    fuzz,
    judge,
    read_input,
    write_corpus,
)
from tests.parserfuzz import planted


@pytest.mark.parametrize(
    ("kind", "function"),
    [(Kind.POLICY, planted.agreeing_policy), (Kind.TXT, planted.agreeing_txt)],
)
def test_agreeing_target_has_no_disagreement(kind: Kind, function) -> None:
    result = fuzz(CallableTarget(function), FuzzOptions(kind, inputs=200), clock=time.monotonic)
    assert result.tally.inputs == 200
    assert result.tally.agreements == 200
    assert result.findings == []
    assert result.stopped == "inputs"


def test_lenient_mode_is_caught_shrunk_and_classified(tmp_path: Path) -> None:
    options = FuzzOptions(Kind.POLICY, inputs=200, seed=3)
    result = fuzz(CallableTarget(planted.any_mode), options, clock=time.monotonic)
    assert result.tally.disagreements > 0
    # Only the planted leniency: every disagreement is POL-4, target accepting.
    assert dict(result.tally.by_rule) == {(Direction.LENIENT, "POL-4"): result.tally.disagreements}
    [finding] = result.findings
    d = finding.disagreement
    assert (d.direction, d.ours.rule, d.ours.accept, d.theirs.accept) == (
        Direction.LENIENT,
        "POL-4",
        False,
        True,
    )
    assert finding.shrunk and finding.instances == result.tally.disagreements
    # Shrunk: nothing left but the four lines a policy needs, with a bad mode.
    lines = d.data.decode().splitlines()
    assert len(lines) <= 4 and any(ln.startswith("mode:") for ln in lines), d.data
    assert judge(Kind.POLICY, d.data).rule == "POL-4"

    [path] = write_corpus(tmp_path, "tests.parserfuzz.planted:any_mode", options, result)
    record = json.loads(path.read_text())
    assert record["class"] == "lenient"
    assert record["direction"] == "target accepts what RFC 8461 rejects"
    assert (record["rule"], record["defensible"]) == ("POL-4", False)
    assert (record["ours"]["accept"], record["target"]["accept"]) == (False, True)
    assert read_input(path) == d.data
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["findings"][0]["file"] == path.name
    assert (index["inputs"], index["disagreements"]) == (200, result.tally.disagreements)


def test_strict_max_age_is_blamed_on_amb_1_and_marked_defensible() -> None:
    options = FuzzOptions(Kind.POLICY, inputs=200, seed=5)
    result = fuzz(CallableTarget(planted.no_long_max_age), options, clock=time.monotonic)
    assert result.findings, result.tally
    [finding] = result.findings
    d = finding.disagreement
    assert (d.direction, d.ours.rule, d.defensible) == (Direction.STRICT, "AMB-1", True)
    # Shrinking dropped every other feature of the valid body.
    assert d.ours.features == ("AMB-1: max_age above one year (clamped)",), d.data


def test_time_budget_stops_the_run() -> None:
    ticks = itertools.count()
    options = FuzzOptions(Kind.TXT, inputs=1000, time_budget=50)
    result = fuzz(CallableTarget(planted.agreeing_txt), options, clock=lambda: next(ticks))
    assert result.stopped == "time"
    assert 0 < result.tally.inputs < 50


def test_shrinking_is_cut_at_its_time_and_the_run_goes_on() -> None:
    ticks = itertools.count()
    options = FuzzOptions(Kind.POLICY, inputs=150, seed=3, shrink_seconds=3)
    result = fuzz(CallableTarget(planted.any_mode), options, clock=lambda: next(ticks))
    assert result.tally.inputs == 150 and result.stopped == "inputs"
    [finding] = result.findings
    assert not finding.shrunk
    assert finding.disagreement.ours.rule == "POL-4"


def test_no_verdict_is_its_own_class() -> None:
    result = fuzz(
        lambda data: TargetVerdict(None, "crashed"),
        FuzzOptions(Kind.TXT, inputs=50, max_findings=1),
        clock=time.monotonic,
    )
    assert result.tally.by_direction == {Direction.NO_VERDICT: 50}
    assert result.findings[0].disagreement.theirs.detail == "crashed"


def test_a_target_that_cannot_run_stops_the_run() -> None:
    def missing(data: bytes) -> bool:
        raise TargetError("frobnicate is not installed")

    with pytest.raises(TargetError, match="frobnicate"):
        fuzz(CallableTarget(missing), FuzzOptions(Kind.POLICY, inputs=10), clock=time.monotonic)


def test_a_previous_corpus_is_replaced(tmp_path: Path) -> None:
    options = FuzzOptions(Kind.POLICY, inputs=1)
    data = b"version: STSv1\nmode: bogus\nmax_age: 1\n"
    found = compare(Kind.POLICY, data, judge(Kind.POLICY, data), TargetVerdict(True))
    assert found is not None
    result = FuzzResult(Tally(), [Finding(found, "mode", 1, shrunk=True)])
    (tmp_path / "mine.txt").write_text("kept")
    first = write_corpus(tmp_path, "t", options, result)
    stale = tmp_path / first[0].name
    result.findings.clear()
    write_corpus(tmp_path, "t", options, result)
    assert not stale.exists() and (tmp_path / "mine.txt").read_text() == "kept"
