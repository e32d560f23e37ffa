"""Every body in fixtures/policies/ against its sidecar verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.errors import PolicyError
from engine.core.policy import parse_policy

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "policies"
BODIES = sorted(CORPUS.glob("*/*.txt"))


def test_corpus_is_present() -> None:
    assert len(BODIES) >= 40
    assert (CORPUS / "valid" / "enforce-basic.txt").is_file()
    for body in BODIES:
        assert body.with_suffix(".verdict.json").is_file(), body


@pytest.mark.parametrize("path", BODIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_body_matches_verdict(path: Path) -> None:
    verdict = json.loads(path.with_suffix(".verdict.json").read_text(encoding="utf-8"))
    assert verdict["valid"] == (path.parent.name == "valid")
    body = path.read_bytes()
    if verdict["valid"]:
        policy = parse_policy(body, source=path.name)
        assert policy.mode.value == verdict["mode"]
        assert policy.max_age == verdict["max_age"]
        assert [str(p) for p in policy.mx] == verdict["mx"]
    else:
        with pytest.raises(PolicyError) as info:
            parse_policy(body, source=path.name)
        err = info.value
        assert (err.line, err.field, err.rule) == (
            verdict["line"],
            verdict["field"],
            verdict["rule"],
        )
        assert err.source == path.name
