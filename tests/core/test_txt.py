"""TXT record selection and parsing: the DISC rows (RFC 8461 §3.1) and RPT-2..7 (RFC 8460 §3)."""

from __future__ import annotations

import pytest

from engine.core.errors import TxtRecordError
from engine.core.txt import (
    NoStsReason,
    NoStsRecord,
    NoTlsRptRecord,
    StsRecord,
    TlsRptRecord,
    join_strings,
    parse_sts_record,
    parse_tlsrpt_record,
    select_sts_record,
    select_tlsrpt_record,
)


def sole(text: str | bytes) -> list[list[bytes]]:
    return [[text.encode() if isinstance(text, str) else text]]


@pytest.mark.parametrize(
    "text",
    ["id=A1; v=STSv1", "V=STSv1; id=A1", "v=stsv1; id=A1", "v=STSv2; id=A1", "v=STSv10; id=A1"],
)
def test_disc_3_version_first_and_case_sensitive(text: str) -> None:
    result = select_sts_record(sole(text))
    assert isinstance(result, NoStsRecord)
    assert result.reason is NoStsReason.NO_STS_RECORD
    with pytest.raises(TxtRecordError) as info:
        parse_sts_record(text)
    assert info.value.rule == "DISC-3"


def test_disc_4_non_sts_records_discarded() -> None:
    rrset = [[b"v=spf1 -all"], [b"some-verification=xyz"], [b"v=STSv1; id=A1"]]
    assert select_sts_record(rrset) == StsRecord(id="A1")


def test_disc_4_non_ascii_in_unrelated_record_is_ignored() -> None:
    rrset = [["note=café".encode()], [b"v=STSv1; id=A1"]]
    assert select_sts_record(rrset) == StsRecord(id="A1")


def test_disc_5_two_sts_records_yield_no_policy() -> None:
    result = select_sts_record([[b"v=STSv1; id=A1"], [b"v=STSv1; id=B2"]])
    assert isinstance(result, NoStsRecord)
    assert result.reason is NoStsReason.MULTIPLE


def test_disc_5_valid_and_invalid_sts_records_count_two() -> None:
    result = select_sts_record([[b"v=STSv1; id=A1"], [b"v=STSv1;"]])
    assert isinstance(result, NoStsRecord) and result.reason is NoStsReason.MULTIPLE


@pytest.mark.parametrize(
    "rrset",
    [
        [[b"v=STSv1 ;id=A1"]],
        [[b"v=STSv1\t; id=A1"]],
    ],
)
def test_amb_2_wsp_before_semicolon_sole_record_is_valid(rrset: list[list[bytes]]) -> None:
    assert select_sts_record(rrset) == StsRecord(id="A1")


def test_amb_2_wsp_before_semicolon_counts_as_sts_record() -> None:
    # Documented choice (engine/core/txt.py): it counts, so two records -> no policy.
    result = select_sts_record([[b"v=STSv1 ;id=A1"], [b"v=STSv1; id=B2"]])
    assert isinstance(result, NoStsRecord) and result.reason is NoStsReason.MULTIPLE


DISC_6_INVALID = [
    "v=STSv1",
    "v=STSv1;",
    "v=STSv1; id=",
    "v=STSv1; id=" + "a" * 33,
    "v=STSv1; id=ab-12",
    "v=STSv1; id=a.b",
    "v=STSv1;; id=A1",
    "v=STSv1; id=A1; ext=",
    "v=STSv1; id=A1; ext=a=b",
    "v=STSv1; id=A1; _x=1",
    "v=STSv1; id=A1; " + "n" * 33 + "=1",
    "v=STSv1; id=A1;;",
    "v=STSv1; id=A1 ",
    "v=STSv1; id=A1; ext=a b",
    "v=STSv1; foo=bar",  # no id
    "v=STSv1; id=A1; id=B2",
    "v=STSv1; id",
]


@pytest.mark.parametrize("text", DISC_6_INVALID)
def test_disc_6_invalid_records_yield_no_policy(text: str) -> None:
    result = select_sts_record(sole(text), source="_mta-sts.example.com")
    assert isinstance(result, NoStsRecord)
    assert result.reason is NoStsReason.INVALID
    assert result.error is not None
    assert result.error.source == "_mta-sts.example.com"
    assert result.error.rule in {"DISC-6", "DISC-7"}


def test_disc_6_non_ascii_id_yields_no_policy() -> None:
    result = select_sts_record(sole("v=STSv1; id=Aé1".encode()))
    assert isinstance(result, NoStsRecord) and result.reason is NoStsReason.INVALID
    assert result.error is not None and result.error.rule == "DISC-16"


def test_disc_7_id_of_32_alnum_is_valid() -> None:
    assert select_sts_record(sole("v=STSv1; id=" + "Z9" * 16)) == StsRecord(id="Z9" * 16)


@pytest.mark.parametrize(
    ("strings", "record_id"),
    [([b"v=STSv1; id=20", b"24A"], "2024A"), ([b"v=STSv1;", b"id=A1"], "A1")],
)
def test_disc_8_strings_joined_without_spaces(strings: list[bytes], record_id: str) -> None:
    assert join_strings(strings) == b"".join(strings)
    assert select_sts_record([strings]) == StsRecord(id=record_id)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=STSv1; foo=bar; id=A1;", StsRecord("A1", (("foo", "bar"),))),
        ("v=STSv1;id=A1", StsRecord("A1")),
        ("v=STSv1 ; id=A1 ;", StsRecord("A1")),
        ("v=STSv1;\tid=A1", StsRecord("A1")),
        ("v=STSv1; id=A1; x.y-z_1=a:b/c", StsRecord("A1", (("x.y-z_1", "a:b/c"),))),
        ("v=STSv1; ID=x; id=A1", StsRecord("A1", (("ID", "x"),))),
    ],
)
def test_disc_10_valid_variants_accepted(text: str, expected: StsRecord) -> None:
    assert parse_sts_record(text) == expected
    assert select_sts_record(sole(text)) == expected


def test_disc_11_empty_rrset_means_no_records() -> None:
    result = select_sts_record([])
    assert isinstance(result, NoStsRecord) and result.reason is NoStsReason.NO_RECORDS


def test_disc_16_non_ascii_record_is_invalid() -> None:
    result = select_sts_record(sole("v=STSv1; id=A1; note=café".encode()))
    assert isinstance(result, NoStsRecord) and result.reason is NoStsReason.INVALID
    assert result.error is not None and result.error.rule == "DISC-16"
    with pytest.raises(TxtRecordError, match="DISC-16"):
        parse_sts_record("v=STSv1; id=A1; note=café")


# --- RFC 8460 §3: _smtp._tls --------------------------------------------------------------


def test_rpt_2_valid_record() -> None:
    assert parse_tlsrpt_record("v=TLSRPTv1;rua=mailto:r@rpt.example") == TlsRptRecord(
        rua=("mailto:r@rpt.example",)
    )


@pytest.mark.parametrize(
    "text",
    [
        "rua=mailto:r@rpt.example; v=TLSRPTv1",
        "v=TLSRPTv1; foo=x",
        "v=tlsrptv1; rua=mailto:r@rpt.example",
        "v=TLSRPTv1; rua=",
        "v=TLSRPTv1; rua=not a uri",
        "v=TLSRPTv1; rua=mailto:a@x.example; rua=mailto:b@x.example",
        "v=TLSRPTv1",
    ],
)
def test_rpt_2_invalid_records(text: str) -> None:
    assert not isinstance(select_tlsrpt_record(sole(text)), TlsRptRecord)
    with pytest.raises(TxtRecordError):
        parse_tlsrpt_record(text)


def test_rpt_3_two_records_mean_no_tlsrpt() -> None:
    rrset = [[b"v=TLSRPTv1; rua=mailto:a@x.example"], [b"v=TLSRPTv1; rua=mailto:b@x.example"]]
    result = select_tlsrpt_record(rrset)
    assert isinstance(result, NoTlsRptRecord) and result.reason is NoStsReason.MULTIPLE


def test_rpt_3_other_records_discarded() -> None:
    rrset = [[b"v=spf1 -all"], [b"v=TLSRPTv1; rua=mailto:a@x.example"]]
    assert select_tlsrpt_record(rrset) == TlsRptRecord(rua=("mailto:a@x.example",))


def test_rpt_4_strings_joined() -> None:
    rrset = [[b"v=TLSRPTv1; rua=mailto:r", b"@rpt.example"]]
    assert select_tlsrpt_record(rrset) == TlsRptRecord(rua=("mailto:r@rpt.example",))


def test_rpt_5_unknown_fields_ignored() -> None:
    record = parse_tlsrpt_record("v=TLSRPTv1; ext=1; rua=mailto:r@rpt.example")
    assert record.rua == ("mailto:r@rpt.example",)
    assert record.extensions == (("ext", "1"),)


def test_rpt_6_comma_separated_uris() -> None:
    record = parse_tlsrpt_record("v=TLSRPTv1; rua=https://c.rpt.example/r , mailto:r@rpt.example")
    assert record.rua == ("https://c.rpt.example/r", "mailto:r@rpt.example")


def test_rpt_6_percent_encoded_comma_stays_in_uri() -> None:
    record = parse_tlsrpt_record("v=TLSRPTv1; rua=mailto:a%2Cb@rpt.example")
    assert record.rua == ("mailto:a%2Cb@rpt.example",)


def test_rpt_7_only_mailto_and_https_are_report_uris() -> None:
    record = parse_tlsrpt_record("v=TLSRPTv1; rua=http://c.rpt.example/r,MAILTO:r@rpt.example")
    assert record.report_uris() == ("MAILTO:r@rpt.example",)


def test_rpt_non_ascii_record_invalid() -> None:
    result = select_tlsrpt_record(sole("v=TLSRPTv1; rua=mailto:ré@x.example".encode()))
    assert isinstance(result, NoTlsRptRecord) and result.reason is NoStsReason.INVALID
