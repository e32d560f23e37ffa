"""Session results and daily aggregation for TLS reporting (RFC 8460 §4)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.core.tlsa import Tlsa
from engine.core.tlsrpt import (
    FailureKey,
    PolicyIdentity,
    PolicyType,
    SessionResult,
    TlsRptAggregator,
    day_bounds,
    utc_day,
)

DAY = date(2026, 1, 1)
NOON = 1_767_225_600.0 + 12 * 3600  # 2026-01-01T12:00:00Z
ENFORCE = Policy(
    mode=Mode.ENFORCE,
    max_age=86400,
    mx=(MxPattern("mx1.example.com"), MxPattern("mx2.example.com")),
)
STS_STRINGS = tuple(ENFORCE.lines())
STS_MX = tuple(str(p) for p in ENFORCE.mx)


def sts(success: bool = True, **kw) -> SessionResult:
    kw.setdefault("at", NOON)
    kw.setdefault("policy_domain", "example.com")
    if not success:
        kw.setdefault("result_type", ResultType.CERTIFICATE_EXPIRED)
        kw.setdefault("sending_mta_ip", "127.0.0.1")
        kw.setdefault("receiving_mx_hostname", "mx1.example.com")
        kw.setdefault("receiving_ip", "127.0.0.10")
    return SessionResult(
        policy_type=PolicyType.STS,
        policy_strings=STS_STRINGS,
        mx_host=STS_MX,
        success=success,
        **kw,
    )


# --- SessionResult ---------------------------------------------------------------------------


def test_rpt20_policy_domain_is_stored_in_alabels() -> None:
    r = sts(policy_domain="Bücher.Example.")
    assert r.policy_domain == "xn--bcher-kva.example"


def test_session_result_rejects_a_non_domain() -> None:
    with pytest.raises(ValueError, match="not a domain"):
        sts(policy_domain="a..b")


def test_failed_session_needs_a_result_type() -> None:
    with pytest.raises(ValueError, match="result_type"):
        SessionResult(policy_domain="example.com", policy_type="sts", success=False, at=NOON)


def test_successful_session_carries_no_result_type() -> None:
    with pytest.raises(ValueError, match="successful"):
        sts(success=True, result_type=ResultType.CERTIFICATE_EXPIRED)


@pytest.mark.parametrize(
    "result_type", [ResultType.VALIDATION_FAILURE, ResultType.CERTIFICATE_NOT_TRUSTED]
)
def test_rpt23_reason_code_is_required_with_catch_all_types(result_type: ResultType) -> None:
    # RPT-23 / AMB-17: these two types say nothing without a failure-reason-code.
    with pytest.raises(ValueError, match="failure_reason_code"):
        sts(success=False, result_type=result_type)
    ok = sts(success=False, result_type=result_type, failure_reason_code="mx-not-in-policy")
    assert ok.failure_key().failure_reason_code == "mx-not-in-policy"


def test_rpt23_other_types_need_no_reason_code() -> None:
    r = sts(success=False, result_type=ResultType.STARTTLS_NOT_SUPPORTED)
    assert r.failure_key().failure_reason_code is None


@pytest.mark.parametrize(
    ("policy_type", "result_type"),
    [
        (PolicyType.TLSA, ResultType.STS_POLICY_INVALID),
        (PolicyType.NO_POLICY_FOUND, ResultType.STS_POLICY_FETCH_ERROR),
        (PolicyType.STS, ResultType.TLSA_INVALID),
        (PolicyType.STS, ResultType.DANE_REQUIRED),
    ],
)
def test_result_type_must_belong_to_the_policy_type(
    policy_type: PolicyType, result_type: ResultType
) -> None:
    # docs/requirements.md §1.11: sts-policy-* are sts results, tlsa-invalid etc. are tlsa results.
    with pytest.raises(ValueError, match="belongs to"):
        SessionResult(
            policy_domain="example.com",
            policy_type=policy_type,
            success=False,
            at=NOON,
            result_type=result_type,
        )


def test_amb19_mx_host_is_only_for_sts() -> None:
    with pytest.raises(ValueError, match="mx_host"):
        PolicyIdentity(PolicyType.TLSA, ("3 1 1 AB",), ("mx1.example.com",))
    with pytest.raises(ValueError, match="policy_strings"):
        PolicyIdentity(PolicyType.NO_POLICY_FOUND, ("x",))


def test_amb20_tlsa_policy_strings_are_rdata_presentation_strings() -> None:
    record = Tlsa(3, 1, 1, bytes.fromhex("ab" * 32))
    r = SessionResult(
        policy_domain="mx1.example.com",
        policy_type="tlsa",
        policy_strings=(record.to_text(),),
        success=True,
        at=NOON,
    )
    assert r.policy == PolicyIdentity(PolicyType.TLSA, ("3 1 1 " + "AB" * 32,))


def test_failure_key_of_a_success_is_an_error() -> None:
    with pytest.raises(ValueError):
        sts().failure_key()


# --- days ------------------------------------------------------------------------------------


def test_rpt17_utc_day_boundaries() -> None:
    start, end = day_bounds(DAY)
    assert (start, end) == (1_767_225_600, 1_767_311_999)
    assert utc_day(start) == DAY
    assert utc_day(end + 0.999) == DAY
    assert utc_day(end + 1) == date(2026, 1, 2)
    assert utc_day(0) == date(1970, 1, 1)


def test_amb21_consecutive_days_are_contiguous() -> None:
    assert day_bounds(DAY)[1] + 1 == day_bounds(date(2026, 1, 2))[0]


# --- aggregation -----------------------------------------------------------------------------


def test_rpt22_counts_successes_and_failures() -> None:
    agg = TlsRptAggregator()
    agg.add_all([sts()] * 5 + [sts(success=False)] * 2)
    [summary] = agg.summaries("example.com", DAY)
    assert (summary.successes, summary.failures) == (5, 2)
    assert [d.count for d in summary.details] == [2]


def test_rpt9_amb22_report_mail_is_never_counted() -> None:
    agg = TlsRptAggregator()
    assert agg.add(sts(success=False, is_report_mail=True)) is False
    assert agg.add(sts(is_report_mail=True)) is False
    assert agg.days() == []
    assert agg.add(sts()) is True
    [summary] = agg.summaries("example.com", DAY)
    assert (summary.successes, summary.failures) == (1, 0)


def test_failures_are_grouped_by_the_failure_details_key() -> None:
    agg = TlsRptAggregator()
    agg.add(sts(success=False, receiving_ip="127.0.0.10"))
    agg.add(sts(success=False, receiving_ip="127.0.0.10"))
    agg.add(sts(success=False, receiving_ip="127.0.0.11"))
    agg.add(sts(success=False, receiving_ip="127.0.0.11", receiving_mx_helo="mx1"))
    agg.add(
        sts(
            success=False,
            result_type=ResultType.VALIDATION_FAILURE,
            failure_reason_code="mx-not-in-policy",
        )
    )
    [summary] = agg.summaries("example.com", DAY)
    counts = {
        (d.key.result_type, d.key.receiving_ip, d.key.receiving_mx_helo): d.count
        for d in summary.details
    }
    assert counts == {
        (ResultType.CERTIFICATE_EXPIRED, "127.0.0.10", None): 2,
        (ResultType.CERTIFICATE_EXPIRED, "127.0.0.11", None): 1,
        (ResultType.CERTIFICATE_EXPIRED, "127.0.0.11", "mx1"): 1,
        (ResultType.VALIDATION_FAILURE, "127.0.0.10", None): 1,
    }
    assert summary.failures == 5


def test_a_policy_change_during_the_day_gives_a_second_entry() -> None:
    agg = TlsRptAggregator()
    agg.add(sts())
    testing = Policy(mode=Mode.TESTING, max_age=600, mx=(MxPattern("mx1.example.com"),))
    agg.add(
        SessionResult(
            policy_domain="example.com",
            policy_type="sts",
            policy_strings=tuple(testing.lines()),
            mx_host=("mx1.example.com",),
            success=True,
            at=NOON + 60,
        )
    )
    assert len(agg.summaries("example.com", DAY)) == 2


def test_rpt17_sessions_fall_into_their_utc_day() -> None:
    agg = TlsRptAggregator()
    last_second = float(day_bounds(DAY)[1])
    agg.add(sts(at=last_second))
    agg.add(sts(at=last_second + 1))
    assert agg.days() == [("example.com", DAY), ("example.com", date(2026, 1, 2))]


def test_domains_are_kept_apart_and_lookups_normalise() -> None:
    agg = TlsRptAggregator()
    agg.add(sts(policy_domain="example.com"))
    agg.add(sts(policy_domain="example.net"))
    assert [s.policy_domain for s in agg.summaries("EXAMPLE.com.", DAY)] == ["example.com"]
    assert agg.summaries("example.org", DAY) == []


def test_pop_returns_and_forgets_one_day() -> None:
    agg = TlsRptAggregator()
    agg.add(sts())
    agg.add(sts(at=NOON + 86400))
    popped = agg.pop("example.com", DAY)
    assert len(popped) == 1
    assert agg.days() == [("example.com", date(2026, 1, 2))]


def test_aggregator_round_trips_through_json() -> None:
    agg = TlsRptAggregator()
    agg.add_all([sts(), sts(success=False), sts(success=False, receiving_mx_helo="h")])
    agg.add(
        SessionResult(
            policy_domain="mx1.example.com",
            policy_type="tlsa",
            policy_strings=("3 1 1 AB",),
            success=False,
            at=NOON,
            result_type=ResultType.TLSA_INVALID,
            sending_mta_ip="127.0.0.1",
            receiving_ip="127.0.0.10",
        )
    )
    data = json.loads(json.dumps(agg.to_dict()))
    again = TlsRptAggregator.from_dict(data)
    assert again.to_dict() == agg.to_dict()
    assert again.summaries("example.com", DAY) == agg.summaries("example.com", DAY)


def test_restored_aggregator_keeps_counting() -> None:
    agg = TlsRptAggregator()
    agg.add(sts(success=False))
    again = TlsRptAggregator.from_dict(agg.to_dict())
    again.add(sts(success=False))
    [summary] = again.summaries("example.com", DAY)
    assert [d.count for d in summary.details] == [2]


@pytest.mark.parametrize(
    "data",
    [{}, {"version": 2, "buckets": []}, {"version": 1, "buckets": [{"policy_domain": "x"}]}],
)
def test_from_dict_rejects_other_data(data: dict) -> None:
    with pytest.raises(ValueError):
        TlsRptAggregator.from_dict(data)


# --- properties ------------------------------------------------------------------------------

_results = st.builds(
    lambda ok, rt, ip, helo, day, report: sts(
        success=ok,
        result_type=None if ok else rt,
        receiving_ip=None if ok else ip,
        receiving_mx_helo=None if ok else helo,
        at=NOON + day * 86400,
        is_report_mail=report,
    ),
    st.booleans(),
    st.sampled_from([ResultType.CERTIFICATE_EXPIRED, ResultType.STARTTLS_NOT_SUPPORTED]),
    st.sampled_from(["127.0.0.10", "127.0.0.11"]),
    st.none() | st.just("mx1"),
    st.integers(0, 2),
    st.booleans(),
)


@given(st.lists(_results, max_size=30))
def test_aggregation_matches_a_plain_count(results: list[SessionResult]) -> None:
    agg = TlsRptAggregator()
    agg.add_all(results)
    counted = [r for r in results if not r.is_report_mail]
    total_ok = sum(s.successes for d, day in agg.days() for s in agg.summaries(d, day))
    total_bad = sum(s.failures for d, day in agg.days() for s in agg.summaries(d, day))
    assert total_ok == sum(r.success for r in counted)
    assert total_bad == sum(not r.success for r in counted)
    for d, day in agg.days():
        for s in agg.summaries(d, day):
            assert s.failures == sum(x.count for x in s.details)
            keys = [x.key for x in s.details]
            assert len(set(keys)) == len(keys)
    assert TlsRptAggregator.from_dict(agg.to_dict()).to_dict() == agg.to_dict()


def test_failure_key_sort_order_is_total_with_none() -> None:
    a = FailureKey(ResultType.CERTIFICATE_EXPIRED, None)
    b = FailureKey(ResultType.CERTIFICATE_EXPIRED, "")
    c = FailureKey(ResultType.CERTIFICATE_EXPIRED, "127.0.0.1")
    assert sorted([c, b, a], key=FailureKey.sort_key) == [a, b, c]
