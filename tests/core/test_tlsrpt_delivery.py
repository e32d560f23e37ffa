"""Report destinations from ``rua`` (RFC 8460 §3) and report timing (§4.1)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.tlsrpt import day_bounds
from engine.core.tlsrpt_delivery import (
    ReportDestination,
    ReportScheme,
    report_destinations,
    report_due,
    report_send_time,
)
from engine.core.txt import parse_tlsrpt_record

MAILTO = ReportScheme.MAILTO
HTTPS = ReportScheme.HTTPS
DAY = date(2026, 1, 1)


def targets(rua: list[str]) -> list[tuple[str, str]]:
    return [(d.scheme.value, d.target) for d in report_destinations(rua).targets]


def test_mailto_and_https_are_kept_in_record_order() -> None:
    rua = ["https://c.rpt.example/r", "mailto:r@rpt.example"]
    assert targets(rua) == [
        ("https", "https://c.rpt.example/r"),
        ("mailto", "r@rpt.example"),
    ]


def test_rpt7_plain_http_and_other_schemes_are_skipped_with_a_reason() -> None:
    result = report_destinations(
        ["http://c.rpt.example/r", "ftp://x.example/", "mailto:r@x.example"]
    )
    assert result.targets == (ReportDestination(MAILTO, "r@x.example"),)
    assert [s.uri for s in result.skipped] == ["http://c.rpt.example/r", "ftp://x.example/"]
    assert all("RPT-7" in s.reason for s in result.skipped)


def test_rua_without_mailto_is_skipped_not_fatal() -> None:
    # tlsrpt-reporter #54: a bare address in rua must not crash the reporter.
    result = report_destinations(["r@rpt.example", "mailto:ok@rpt.example"])
    assert result.targets == (ReportDestination(MAILTO, "ok@rpt.example"),)
    [skipped] = result.skipped
    assert skipped.uri == "r@rpt.example"
    assert "scheme" in skipped.reason


def test_schemes_are_case_insensitive() -> None:
    assert targets(["MAILTO:r@rpt.example", "HTTPS://c.rpt.example/r"]) == [
        ("mailto", "r@rpt.example"),
        ("https", "https://c.rpt.example/r"),
    ]


def test_mailto_is_percent_decoded_and_header_fields_dropped() -> None:
    # RFC 8460 §3: "," "!" ";" are percent-encoded inside a rua URI.
    assert targets(["mailto:tls%21rpt@rpt.example?subject=hi"]) == [
        ("mailto", "tls!rpt@rpt.example")
    ]


def test_mailto_domain_is_written_in_alabels() -> None:
    assert targets(["mailto:r@B%C3%BCcher.example"]) == [("mailto", "r@xn--bcher-kva.example")]


@pytest.mark.parametrize(
    "uri",
    [
        "mailto:",
        "mailto:rpt.example",
        "mailto:@rpt.example",
        "mailto:a b@rpt.example",
        "mailto:r@",
        "mailto:r@bad..example",
        "mailto:a@x.example%2Cb@y.example",
        "mailto:r@x.example%FF",
        "https:",
        "https://",
        "https:/c.rpt.example/r",
        "https://c.rpt.example:99999/r",
        "https://bad..example/r",
        ":nothing",
        "",
    ],
)
def test_malformed_entries_are_skipped_with_a_reason(uri: str) -> None:
    result = report_destinations([uri])
    assert result.targets == ()
    [skipped] = result.skipped
    assert skipped.uri == uri and skipped.reason


def test_https_with_port_and_ipv6_literal_is_accepted() -> None:
    assert targets(["https://c.rpt.example:8443/r?x=1", "https://[::1]/r"]) == [
        ("https", "https://c.rpt.example:8443/r?x=1"),
        ("https", "https://[::1]/r"),
    ]


def test_duplicates_are_skipped() -> None:
    result = report_destinations(["mailto:r@rpt.example", "mailto:r@RPT.example"])
    assert len(result.targets) == 1
    assert result.skipped[0].reason == "duplicate destination"
    result = report_destinations(["https://C.rpt.example/R", "HTTPS://c.rpt.example/R"])
    assert result.targets == (ReportDestination(HTTPS, "https://c.rpt.example/R"),)


def test_works_on_a_parsed_record() -> None:
    record = parse_tlsrpt_record("v=TLSRPTv1; rua=mailto:r@rpt.example,https://c.rpt.example/r")
    assert targets(list(record.rua)) == [
        ("mailto", "r@rpt.example"),
        ("https", "https://c.rpt.example/r"),
    ]


@given(st.lists(st.text(max_size=40), max_size=6))
def test_never_raises_and_accounts_for_every_entry(rua: list[str]) -> None:
    result = report_destinations(rua)
    assert len(result.targets) + len(result.skipped) == len(rua)
    assert all(d.scheme in (MAILTO, HTTPS) for d in result.targets)


@given(st.from_regex(r"mailto:[a-z]{1,8}@[a-z]{1,8}\.example", fullmatch=True))
def test_well_formed_mailto_is_always_accepted(uri: str) -> None:
    assert targets([uri]) == [("mailto", uri.removeprefix("mailto:"))]


# --- timing (RFC 8460 §4.1, RPT-17) ----------------------------------------------------------


def test_rpt17_report_is_sent_after_the_day_plus_delay_and_jitter() -> None:
    end_of_day = day_bounds(DAY)[1] + 1  # 2026-01-02T00:00:00Z
    when = report_send_time(DAY, delay_seconds=4 * 3600, jitter_value=123.5)
    assert when == end_of_day + 4 * 3600 + 123.5
    assert not report_due(DAY, when - 0.001, delay_seconds=4 * 3600, jitter_value=123.5)
    assert report_due(DAY, when, delay_seconds=4 * 3600, jitter_value=123.5)


def test_rpt17_never_due_during_the_day_itself() -> None:
    last_second = float(day_bounds(DAY)[1])
    assert not report_due(DAY, last_second, delay_seconds=0, jitter_value=0)
    assert report_due(DAY, last_second + 1, delay_seconds=0, jitter_value=0)


@pytest.mark.parametrize(("delay", "jitter"), [(-1, 0), (0, -0.5)])
def test_negative_delay_or_jitter_is_rejected(delay: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        report_send_time(DAY, delay_seconds=delay, jitter_value=jitter)
