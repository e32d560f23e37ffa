"""Replays the corpora of docs/conformance.md's parser-fuzzing run (tests/parserfuzz/corpus).

Each finding file keeps both verdicts. Our reader must still give ours (the oracle's
verdict and rule id on these edge inputs are pinned); where the target's package is
installed, the target must still give its own, so an upstream change shows here and the
figures in docs/conformance.md can be re-measured.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.parserfuzz import CallableTarget, Kind, judge, load_callable, read_input

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(p for p in CORPUS.glob("*/*.json") if p.name != "index.json")
_PACKAGES = {"postfix_mta_sts_resolver": "postfix_mta_sts_resolver", "checkdmarc": "checkdmarc"}


def _target(path: Path) -> str:
    return str(json.loads((path.parent / "index.json").read_text())["target"])


def test_the_corpora_are_there() -> None:
    assert {p.parent.name for p in FILES} == {
        "postfix_mta_sts_resolver_policy",
        "postfix_mta_sts_resolver_txt",
        "checkdmarc_policy",
        "checkdmarc_txt",
    }


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name[:24]}" for p in FILES])
def test_our_verdict_is_unchanged(path: Path) -> None:
    record = json.loads(path.read_text())
    verdict = judge(Kind(record["kind"]), read_input(path))
    assert (verdict.accept, verdict.rule, verdict.reason) == (
        record["ours"]["accept"],
        record["rule"],
        record["reason"],
    )


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name[:24]}" for p in FILES])
def test_the_target_still_disagrees(path: Path) -> None:
    spec = _target(path)
    package = next(m for name, m in _PACKAGES.items() if name in spec)
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed (pip install -e '.[parsers]')")
    record = json.loads(path.read_text())
    verdict = CallableTarget(load_callable(spec))(read_input(path))
    assert verdict.accept == record["target"]["accept"], verdict.detail
