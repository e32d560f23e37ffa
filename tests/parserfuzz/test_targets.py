"""The worked-example targets (harness/parserfuzz/targets.py), where the packages exist."""

from __future__ import annotations

import importlib.util

import pytest

from harness.parserfuzz import CallableTarget, Kind, TargetError, judge
from harness.parserfuzz import targets as t

VALID = b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"


def _needs(module: str, package: str) -> pytest.MarkDecorator:
    missing = importlib.util.find_spec(module) is None
    return pytest.mark.skipif(
        missing, reason=f"{package} not installed (pip install -e '.[parsers]')"
    )


postfix = _needs("postfix_mta_sts_resolver", "postfix-mta-sts-resolver")
checkdmarc = _needs("checkdmarc", "checkdmarc")


@postfix
def test_postfix_resolver_policy_known_differences() -> None:
    assert t.postfix_mta_sts_resolver_policy(VALID) is True
    assert t.postfix_mta_sts_resolver_policy(VALID.replace(b"enforce", b"Enforce")) is False
    # AMB-4: empty lines are skipped (we reject); RFC 8461 §3.2 UTF-8 values are refused.
    assert t.postfix_mta_sts_resolver_policy(VALID.replace(b"\nmode", b"\n\nmode")) is True
    verdict = CallableTarget(t.postfix_mta_sts_resolver_policy)(VALID + "x: caf\u00e9\n".encode())
    assert verdict.accept is False and "UnicodeDecodeError" in verdict.detail


@postfix
def test_postfix_resolver_txt() -> None:
    assert t.postfix_mta_sts_resolver_txt(b"v=STSv1; id=1") is True
    assert t.postfix_mta_sts_resolver_txt(b"v=STSv1; id=1; id=2") is True  # we reject: DISC-6
    assert t.postfix_mta_sts_resolver_txt(b"v=STSv1; x=1") is False


@checkdmarc
def test_checkdmarc_policy_and_txt() -> None:
    assert t.checkdmarc_policy(VALID)
    with pytest.raises(Exception, match="max_age"):
        t.checkdmarc_policy(VALID.replace(b"86400", b"31557601"))  # AMB-1: we clamp
    assert judge(Kind.POLICY, VALID.replace(b"86400", b"31557601")).accept
    assert t.checkdmarc_txt(b"v=STSv1; id=1")
    with pytest.raises(Exception, match="STSv1"):
        t.checkdmarc_txt(b"v=STSv10; id=1")


def test_a_missing_package_is_a_target_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "checkdmarc.mta_sts", None)
    with pytest.raises(TargetError, match=r"checkdmarc is not installed: pip install"):
        t.checkdmarc_policy(VALID)


def test_targets_table_names_real_functions() -> None:
    for spec, kind, _ in t.TARGETS:
        assert callable(getattr(t, spec.partition(":")[2]))
        assert Kind(kind)
