"""Real MTAs against the world, in network namespaces: one batch per profile.

Each test is one engine lifetime over a representative subset of
``tests/blackbox/scenarios`` (RFC 8461 enforce with a bad mx1, DANE-EE, and the
divergences the matrix documents in docs/conformance.md). They skip, with the
reason, where black-box runs cannot happen: not root, no ``ip netns`` or ``nft``,
or the MTA not installed (``scripts/install-blackbox.sh``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.adapters.blackbox_child import run_engine, unavailable
from harness.runner import Verdict

pytestmark = pytest.mark.netns
SCENARIOS = Path(__file__).parent / "scenarios"


def _run(engine: str, *names: str) -> dict[str, object]:
    reason = unavailable(engine)
    if reason:
        pytest.skip(f"{engine}: {reason}")
    results = run_engine(engine, [SCENARIOS / f"{n}.toml" for n in names])
    return {r.id: r for r in results}


def _explain(r: object) -> str:
    steps = getattr(r, "steps", ())
    lines = [m.render() for s in steps for m in s.mismatches]
    return f"{r.verdict}: {r.reason[-2000:]}\n" + "\n".join(lines)  # type: ignore[attr-defined]


def test_postfix_mta_sts_resolver_enforce_delivers_to_mx2_when_mx1_is_bad():
    got = _run(
        "postfix-sts",
        "bb-sts-enforce-mx1-bad",
        "bb-sts-enforce-no-starttls",
        "bb-sts-mx-not-listed",
        "bb-sts-wildcard-one-label",
    )
    for name in ("bb-sts-enforce-mx1-bad", "bb-sts-enforce-no-starttls"):
        assert got[name].verdict is Verdict.PASSED, _explain(got[name])
    # docs/conformance.md: Postfix 3.7 + PMSR checks certificates, not MX names (MX-1, MX-3).
    for name in ("bb-sts-mx-not-listed", "bb-sts-wildcard-one-label"):
        assert got[name].verdict is Verdict.FAILED, _explain(got[name])


def test_postfix_dane_ee_delivers_and_a_digest_mismatch_defers():
    got = _run("postfix-dane", "bb-dane-ee", "bb-dane-ee-mismatch", "bb-sts-enforce-mx1-bad")
    assert got["bb-dane-ee"].verdict is Verdict.PASSED, _explain(got["bb-dane-ee"])
    assert got["bb-dane-ee-mismatch"].verdict is Verdict.PASSED, _explain(
        got["bb-dane-ee-mismatch"]
    )
    assert got["bb-sts-enforce-mx1-bad"].verdict is Verdict.SKIPPED
    assert "needs sts" in got["bb-sts-enforce-mx1-bad"].reason


def test_chasquid_enforces_mta_sts():
    got = _run("chasquid", "bb-sts-enforce-mx1-bad", "bb-sts-enforce-all-bad")
    for r in got.values():
        assert r.verdict is Verdict.PASSED, _explain(r)
