"""The oracle's verdicts, rule ids and features (harness/parserfuzz/oracle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.parserfuzz import BOTH_DEFENSIBLE, Kind, inputs_for, judge

BASE = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"


@pytest.mark.parametrize(
    ("body", "rule", "reason"),
    [
        (BASE.replace("enforce", "Enforce"), "POL-4",
         "mode must be 'enforce', 'testing' or 'none'"),
        (BASE.replace("86400", "10000000000"), "POL-5", "max_age must be 1 to 10 digits"),
        (BASE.replace("mail.example.com", "mail.example.com."), "AMB-7",
         "mx pattern ends with a dot; write it without the root dot"),
        (BASE.replace("\nmode", "\n\nmode"), "AMB-4", "empty line"),
        (BASE.replace("\nmode", "\rmode"), "AMB-3", "bare CR (line ends are LF or CRLF)"),
        (BASE + "x: \udce9\n", "POL-17", "invalid UTF-8 at byte N"),
    ],
)  # fmt: skip
def test_policy_reject_names_the_rule(body: str, rule: str, reason: str) -> None:
    verdict = judge(Kind.POLICY, body.encode("utf-8", "surrogateescape"))
    assert (verdict.accept, verdict.rule, verdict.reason) == (False, rule, reason)
    assert verdict.features == ()


@pytest.mark.parametrize(
    ("body", "first", "also"),
    [
        (BASE, "POL-1: a plain valid policy", ()),
        (BASE.replace("86400", "9999999999"), "AMB-1: max_age above one year (clamped)", ()),
        (BASE + "max_age: abc\n",
         "AMB-6: a later duplicate of a known field differs (ignored)", ()),
        (BASE + "note: caf\u00e9\n", "POL-17: UTF-8 in an extension value", ()),
        (BASE.replace("\n", "\r\n") + "Mode: x",
         "POL-12: a known field name in another case (an extension)",
         ("POL-10: CRLF line ends", "POL-10: no line end after the last line")),
        (BASE.replace("86400", "0"), "AMB-13: max_age 0", ()),
    ],
)  # fmt: skip
def test_policy_accept_lists_features_rarest_first(body: str, first: str, also: tuple) -> None:
    verdict = judge(Kind.POLICY, body.encode())
    assert verdict.accept
    assert verdict.features == (first, *also)
    assert f"{verdict.rule}: {verdict.reason}" == first


@pytest.mark.parametrize(
    ("record", "accept", "rule"),
    [
        (b"v=STSv1; id=20240101", True, "DISC-3"),
        (b"v=STSv1 ;id=1", True, "AMB-2"),
        (b"v=STSv1; id=1; v=2", True, "DISC-10"),
        (b"v=STSv10; id=1", False, "DISC-3"),
        (b"v=STSv1; id=a_b", False, "DISC-7"),
        (b"v=STSv1; id=1; id=2", False, "DISC-6"),
        (b"v=STSv1; id=\xe9", False, "DISC-16"),
    ],
)
def test_txt_verdicts(record: bytes, accept: bool, rule: str) -> None:
    verdict = judge(Kind.TXT, record)
    assert (verdict.accept, verdict.rule) == (accept, rule)


def test_both_defensible_cases_are_documented_decisions() -> None:
    text = Path("docs/decisions.md").read_text(encoding="utf-8")
    for amb in BOTH_DEFENSIBLE:
        assert f"## {amb}:" in text


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(Kind), data=st.binary(max_size=200))
def test_the_oracle_never_raises_on_any_bytes(kind: Kind, data: bytes) -> None:
    verdict = judge(kind, data)
    assert verdict.rule and verdict.reason
    assert bool(verdict.features) == verdict.accept


@pytest.mark.parametrize("kind", list(Kind))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_generated_inputs_get_a_verdict_with_a_rule(kind: Kind, data: st.DataObject) -> None:
    label, body = data.draw(inputs_for(kind))
    verdict = judge(kind, body)
    assert label and verdict.rule.startswith(("POL-", "DISC-", "AMB-")), verdict
