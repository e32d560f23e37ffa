"""The RFC 8460 report document, file name, gzip and email (§4.4, §5.1-§5.3)."""

from __future__ import annotations

import email
import gzip
import json
import re
from datetime import date
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.core.tlsrpt import (
    PolicyIdentity,
    PolicySummary,
    PolicyType,
    SessionResult,
    TlsRptAggregator,
    day_bounds,
)
from engine.core.tlsrpt_report import (
    REPORT_MEDIA_TYPE,
    build_report,
    gzip_report,
    report_email,
    report_filename,
    report_json,
    report_subject,
)

DAY = date(2026, 1, 1)
NOON = 1_767_225_600.0 + 12 * 3600
P_ENF = Policy(
    mode=Mode.ENFORCE,
    max_age=86400,
    mx=(MxPattern("mx1.example.com"), MxPattern("mx2.example.com")),
)
TLSA_HEX = "0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6"
ORG = {"organization_name": "Sender Org", "contact_info": "tlsrpt@sender.example"}


def sts_session(success: bool = True, **kw) -> SessionResult:
    if not success:
        kw.setdefault("result_type", ResultType.CERTIFICATE_HOST_MISMATCH)
        kw.setdefault("sending_mta_ip", "127.0.0.1")
        kw.setdefault("receiving_mx_hostname", "mx1.example.com")
        kw.setdefault("receiving_ip", "127.0.0.10")
    return SessionResult(
        policy_domain="example.com",
        policy_type="sts",
        policy_strings=tuple(P_ENF.lines()),
        mx_host=tuple(str(p) for p in P_ENF.mx),
        success=success,
        at=NOON,
        **kw,
    )


def report_for(results: list[SessionResult], domain: str = "example.com") -> dict:
    agg = TlsRptAggregator()
    agg.add_all(results)
    return build_report(domain, DAY, agg.pop(domain, DAY), report_id="r1", **ORG)


# --- a structural schema for RFC 8460 §4.4 ---------------------------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_RESULT_TYPES = {t.value for t in ResultType}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_report_schema(report: dict) -> None:
    """Assert that ``report`` has the RFC 8460 §4.4 shape, member by member."""
    assert set(report) == {
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    }
    for name in ("organization-name", "contact-info", "report-id"):
        assert isinstance(report[name], str) and report[name]
    assert set(report["date-range"]) == {"start-datetime", "end-datetime"}
    for value in report["date-range"].values():
        assert _RFC3339.fullmatch(value), value  # AMB-21: with a zone
    assert isinstance(report["policies"], list) and report["policies"]  # RPT-19
    for entry in report["policies"]:
        assert set(entry) == {"policy", "summary", "failure-details"}
        policy = entry["policy"]
        assert policy["policy-type"] in {"sts", "tlsa", "no-policy-found"}
        required = {"policy-type", "policy-string", "policy-domain"}
        assert required <= set(policy) <= required | {"mx-host"}
        assert isinstance(policy["policy-string"], list)
        assert all(isinstance(s, str) for s in policy["policy-string"])
        assert policy["policy-domain"].isascii()
        if "mx-host" in policy:  # AMB-19: an array, for sts only
            assert policy["policy-type"] == "sts"
            assert isinstance(policy["mx-host"], list)
        summary = entry["summary"]
        assert set(summary) == {"total-successful-session-count", "total-failure-session-count"}
        assert all(_is_int(v) and v >= 0 for v in summary.values())  # RPT-22
        details = entry["failure-details"]
        assert isinstance(details, list)
        assert (
            sum(d["failed-session-count"] for d in details)
            == summary["total-failure-session-count"]
        )
        for d in details:
            assert d["result-type"] in _RESULT_TYPES  # RPT-26
            assert _is_int(d["failed-session-count"]) and d["failed-session-count"] > 0
            optional = {
                "sending-mta-ip",
                "receiving-mx-hostname",
                "receiving-mx-helo",
                "receiving-ip",
                "additional-information",
                "failure-reason-code",
            }
            assert set(d) - {"result-type", "failed-session-count"} <= optional
            assert all(isinstance(d[k], str) for k in set(d) & optional)
            if d["result-type"] in {"validation-failure", "certificate-not-trusted"}:
                assert d.get("failure-reason-code")  # RPT-23


def test_schema_checker_rejects_a_broken_report() -> None:
    # Negative control: the checker must notice a missing zone and a scalar mx-host.
    report = report_for([sts_session()])
    report["date-range"]["end-datetime"] = "2026-01-01T23:59:59"
    with pytest.raises(AssertionError):
        check_report_schema(report)
    report = report_for([sts_session()])
    report["policies"][0]["policy"]["mx-host"] = "mx1.example.com"
    with pytest.raises(AssertionError):
        check_report_schema(report)


# --- the document ----------------------------------------------------------------------------


def test_rpt18_report_has_the_top_level_members() -> None:
    report = report_for([sts_session()])
    check_report_schema(report)
    assert report["organization-name"] == "Sender Org"
    assert report["contact-info"] == "tlsrpt@sender.example"
    assert report["report-id"] == "r1"


def test_rpt17_amb21_date_range_is_the_whole_utc_day_with_zone() -> None:
    report = report_for([sts_session()])
    assert report["date-range"] == {
        "start-datetime": "2026-01-01T00:00:00Z",
        "end-datetime": "2026-01-01T23:59:59Z",
    }


def test_rpt19_policies_is_an_array_with_one_policy() -> None:
    assert isinstance(report_for([sts_session()])["policies"], list)


def test_rpt21_sts_policy_string_has_one_line_per_element() -> None:
    [entry] = report_for([sts_session()])["policies"]
    assert entry["policy"]["policy-string"] == [
        "version: STSv1",
        "mode: enforce",
        "mx: mx1.example.com",
        "mx: mx2.example.com",
        "max_age: 86400",
    ]


def test_rpt20_amb19_sts_mx_host_is_an_array_of_patterns() -> None:
    [entry] = report_for([sts_session()])["policies"]
    assert entry["policy"]["policy-type"] == "sts"
    assert entry["policy"]["mx-host"] == ["mx1.example.com", "mx2.example.com"]


def test_rpt20_amb20_tlsa_policy_has_rdata_strings_and_no_mx_host() -> None:
    session = SessionResult(
        policy_domain="MX1.example.com",
        policy_type="tlsa",
        policy_strings=(f"3 1 1 {TLSA_HEX}",),
        success=True,
        at=NOON,
    )
    report = report_for([session], domain="mx1.example.com")
    check_report_schema(report)
    policy = report["policies"][0]["policy"]
    assert policy == {
        "policy-type": "tlsa",
        "policy-string": [f"3 1 1 {TLSA_HEX}"],
        "policy-domain": "mx1.example.com",
    }


def test_rpt28_no_policy_found_has_empty_strings_and_no_mx_host() -> None:
    session = SessionResult(
        policy_domain="example.org", policy_type="no-policy-found", success=True, at=NOON
    )
    report = report_for([session], domain="example.org")
    check_report_schema(report)
    assert report["policies"][0]["policy"] == {
        "policy-type": "no-policy-found",
        "policy-string": [],
        "policy-domain": "example.org",
    }


def test_rpt20_policy_domain_is_written_in_alabels() -> None:
    session = SessionResult(
        policy_domain="bücher.example", policy_type="no-policy-found", success=True, at=NOON
    )
    report = report_for([session], domain="Bücher.example")
    assert report["policies"][0]["policy"]["policy-domain"] == "xn--bcher-kva.example"


def test_rpt22_summary_counts_are_integers() -> None:
    report = report_for([sts_session()] * 5 + [sts_session(success=False)] * 2)
    summary = report["policies"][0]["summary"]
    assert summary == {"total-successful-session-count": 5, "total-failure-session-count": 2}
    assert all(_is_int(v) for v in summary.values())


def test_rpt23_failure_details_fields_and_reason_codes() -> None:
    report = report_for(
        [
            sts_session(success=False),
            sts_session(
                success=False,
                result_type=ResultType.VALIDATION_FAILURE,
                failure_reason_code="mx-not-in-policy",
                receiving_mx_helo="mx1.example.com",
            ),
        ]
    )
    check_report_schema(report)
    details = report["policies"][0]["failure-details"]
    assert details == [
        {
            "result-type": "certificate-host-mismatch",
            "sending-mta-ip": "127.0.0.1",
            "receiving-mx-hostname": "mx1.example.com",
            "receiving-ip": "127.0.0.10",
            "failed-session-count": 1,
        },
        {
            "result-type": "validation-failure",
            "sending-mta-ip": "127.0.0.1",
            "receiving-mx-hostname": "mx1.example.com",
            "receiving-mx-helo": "mx1.example.com",
            "receiving-ip": "127.0.0.10",
            "failed-session-count": 1,
            "failure-reason-code": "mx-not-in-policy",
        },
    ]


def test_report_mail_sessions_are_absent_from_the_report() -> None:
    # RPT-9 / AMB-22: the failing report-mail session does not show up.
    report = report_for([sts_session(), sts_session(success=False, is_report_mail=True)])
    entry = report["policies"][0]
    assert entry["summary"]["total-failure-session-count"] == 0
    assert entry["failure-details"] == []


def test_build_report_rejects_another_domains_summary_and_empty_input() -> None:
    summary = PolicySummary("example.net", PolicyIdentity(PolicyType.NO_POLICY_FOUND), 1, 0)
    with pytest.raises(ValueError, match=r"example\.net"):
        build_report("example.com", DAY, [summary], report_id="r", **ORG)
    with pytest.raises(ValueError, match="no policies"):
        build_report("example.com", DAY, [], report_id="r", **ORG)
    with pytest.raises(ValueError, match="report_id"):
        build_report("example.net", DAY, [summary], report_id="", **ORG)


_sessions = st.builds(
    lambda ok, rt, reason: sts_session(
        success=ok, **({} if ok else {"result_type": rt, "failure_reason_code": reason})
    ),
    st.booleans(),
    st.sampled_from(
        [
            ResultType.CERTIFICATE_EXPIRED,
            ResultType.VALIDATION_FAILURE,
            ResultType.CERTIFICATE_NOT_TRUSTED,
            ResultType.STS_POLICY_FETCH_ERROR,
        ]
    ),
    st.sampled_from(["unknown-ca", "handshake-alert"]),
)


@given(st.lists(_sessions, min_size=1, max_size=20))
def test_every_report_fits_the_schema_and_survives_json(sessions: list[SessionResult]) -> None:
    report = report_for(sessions)
    check_report_schema(report)
    assert json.loads(report_json(report)) == report


# --- file name, gzip -------------------------------------------------------------------------

# RFC 8460 §5.1: sender "!" policy-domain "!" begin "!" end [ "!" unique-id ] "." extension
_FILENAME = re.compile(r"([a-z0-9.-]+)!([a-z0-9.-]+)!(\d+)!(\d+)(?:!([A-Za-z0-9]+))?\.json(\.gz)?")


def test_rpt12_filename_follows_the_pattern() -> None:
    name = report_filename("Sender.Example", "example.com", 1_767_225_600, 1_767_311_999, "r1")
    assert name == "sender.example!example.com!1767225600!1767311999!r1.json.gz"
    assert _FILENAME.fullmatch(name)


def test_rpt12_filename_uses_alabels_and_optional_parts() -> None:
    name = report_filename("bücher.example", "example.com", 0, 1, compressed=False)
    assert name == "xn--bcher-kva.example!example.com!0!1.json"
    assert _FILENAME.fullmatch(name)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("s.example", "example.com", 0, 1, "a-b"), "unique_id"),
        (("s.example", "example.com", 5, 1), "time range"),
        (("s.example", "example.com", -1, 1), "time range"),
        (("not a domain", "example.com", 0, 1), "submitter"),
    ],
)
def test_rpt12_filename_rejects_bad_parts(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        report_filename(*args)


def test_rpt13_gzip_is_deterministic_and_decompresses_to_the_report() -> None:
    report = report_for([sts_session(), sts_session(success=False)])
    blob = gzip_report(report)
    assert blob == gzip_report(report)
    assert blob[4:8] == b"\0\0\0\0"  # RFC 1952 §2.3: MTIME 0
    assert json.loads(gzip.decompress(blob)) == report


# --- email -----------------------------------------------------------------------------------


def _mail(report: dict, **kw) -> email.message.EmailMessage:
    kw.setdefault("unique_id", "r1")
    msg = report_email(
        report, sender="tlsrpt@sender.example", recipients=["r@rpt.example"], now=NOON, **kw
    )
    return email.message_from_bytes(msg.as_bytes(), policy=default)


def test_rpt11_email_is_multipart_report_with_tlsrpt_parts() -> None:
    report = report_for([sts_session()])
    parsed = _mail(report, message_id="<r1@sender.example>")
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"
    text, attachment = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert "example.com" in text.get_content()
    assert attachment.get_content_type() == REPORT_MEDIA_TYPE
    assert json.loads(gzip.decompress(attachment.get_content())) == report
    assert parsed["Message-ID"] == "<r1@sender.example>"


def test_rpt11_headers_name_domain_and_contact_info_submitter() -> None:
    parsed = _mail(report_for([sts_session()]))
    assert parsed["TLS-Report-Domain"] == "example.com"
    # RFC 8460 §5.3: TLS-Report-Submitter MUST equal the domain of contact-info.
    assert parsed["TLS-Report-Submitter"] == "sender.example"
    assert parsed["Subject"] == (
        "Report Domain: example.com Submitter: sender.example Report-ID: <r1>"
    )
    assert parsed["Subject"] == report_subject("example.com", "sender.example", "r1")
    assert parsed["From"] == "tlsrpt@sender.example"
    assert parsed["To"] == "r@rpt.example"
    assert parsed["Date"] == "Thu, 01 Jan 2026 12:00:00 +0000"


def test_rpt12_rpt16_attachment_name_agrees_with_the_body() -> None:
    report = report_for([sts_session()])
    _text, attachment = _mail(report).iter_parts()
    name = attachment.get_filename()
    m = _FILENAME.fullmatch(name)
    assert m is not None
    assert m.group(1) == "sender.example"
    assert m.group(2) == "example.com"
    assert (int(m.group(3)), int(m.group(4))) == day_bounds(DAY)
    assert m.group(6) == ".gz"


def test_email_is_byte_identical_for_the_same_input() -> None:
    report = report_for([sts_session()])
    one = report_email(report, sender="a@sender.example", recipients=["r@x.example"], now=NOON)
    two = report_email(report, sender="a@sender.example", recipients=["r@x.example"], now=NOON)
    assert one.as_bytes() == two.as_bytes()


def test_email_needs_an_address_in_contact_info() -> None:
    report = report_for([sts_session()])
    report["contact-info"] = "https://sender.example/contact"
    with pytest.raises(ValueError, match="contact-info"):
        report_email(report, sender="a@sender.example", recipients=["r@x.example"], now=NOON)
