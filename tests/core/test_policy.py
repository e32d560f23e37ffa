"""Policy bodies (RFC 8461 §3.2): the POL rows and AMB-1, 3, 4, 5, 6."""

from __future__ import annotations

import pytest

from engine.core.errors import PolicyError
from engine.core.mx import MxPattern
from engine.core.policy import MAX_AGE_CEILING, Mode, Policy, parse_policy, render_policy

P_ENF = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 86400\n"
P_ENF_POLICY = Policy(
    mode=Mode.ENFORCE,
    max_age=86400,
    mx=(MxPattern("mx1.example.com"), MxPattern("mx2.example.com")),
)


def with_line(body: str, line: str) -> str:
    return body + line + "\n"


def replace(body: str, old: str, new: str) -> str:
    assert old in body
    return body.replace(old, new, 1)


def error_of(body: str | bytes) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(body, source="test")
    assert info.value.source == "test"
    return info.value


def test_p_enf_parses() -> None:
    assert parse_policy(P_ENF) == P_ENF_POLICY


@pytest.mark.parametrize("missing", ["version: STSv1\n", "mode: enforce\n", "max_age: 86400\n"])
def test_pol_1_required_fields(missing: str) -> None:
    err = error_of(replace(P_ENF, missing, ""))
    assert err.rule == "POL-1"
    assert err.field == missing.split(":")[0]


@pytest.mark.parametrize("mode", ["enforce", "testing"])
def test_pol_2_mx_required_unless_none(mode: str) -> None:
    err = error_of(f"version: STSv1\nmode: {mode}\nmax_age: 86400\n")
    assert (err.rule, err.field, err.line) == ("POL-2", "mx", 2)


def test_pol_2c_mode_none_without_mx_is_valid() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n") == Policy(Mode.NONE, 86400)


@pytest.mark.parametrize("value", ["stsv1", "STSv2", "STSv1.0", "STSv1 x", "STSV1"])
def test_pol_3_version_exactly_stsv1(value: str) -> None:
    err = error_of(replace(P_ENF, "version: STSv1", f"version: {value}"))
    assert (err.rule, err.line, err.field, err.value) == ("POL-3", 1, "version", value)


@pytest.mark.parametrize("value", ["Enforce", "ENFORCE", "report", "enforced", "enforce;"])
def test_pol_4_mode_exact(value: str) -> None:
    err = error_of(replace(P_ENF, "mode: enforce", f"mode: {value}"))
    assert (err.rule, err.line, err.field, err.value) == ("POL-4", 2, "mode", value)


@pytest.mark.parametrize(
    "value", ["-1", "+86400", "8.64e4", "86400s", "0x15180", "12345678901", "86 400", "８６４００"]
)
def test_pol_5_max_age_invalid(value: str) -> None:
    err = error_of(replace(P_ENF, "max_age: 86400", f"max_age: {value}"))
    assert (err.rule, err.line, err.field, err.value) == ("POL-5", 5, "max_age", value)


def test_pol_5_max_age_empty_invalid() -> None:
    err = error_of(replace(P_ENF, "max_age: 86400", "max_age:"))
    assert (err.rule, err.line, err.field) == ("POL-5", 5, "max_age")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0), ("0000086400", 86400), ("31557600", 31557600), ("1", 1)],
)
def test_pol_5_max_age_valid(value: str, seconds: int) -> None:
    assert parse_policy(replace(P_ENF, "86400", value)).max_age == seconds


@pytest.mark.parametrize("value", ["31557601", "9999999999", "2147483648", "4294967296"])
def test_amb_1_max_age_clamped(value: str) -> None:
    assert parse_policy(replace(P_ENF, "86400", value)).max_age == MAX_AGE_CEILING


POL_6_BAD_MX = [
    "a.example.com, b.example.com",
    "a.example.com b.example.com",
    "bücher.example",
    "*example.com",
    "mail.*.example.com",
    "*.*.example.com",
    "*",
    ".example.com",
    "mx_1.example.com",
    "mail.example.com.",
]


@pytest.mark.parametrize("value", POL_6_BAD_MX)
def test_pol_6_one_bad_mx_line_invalidates_policy(value: str) -> None:
    err = error_of(with_line(P_ENF, f"mx: {value}"))
    assert (err.rule, err.line, err.field, err.value) == ("POL-6", 6, "mx", value)


@pytest.mark.parametrize("line", ["foo: bar baz", "policy_id: 7", "x.y: z"])
def test_pol_7_unknown_fields_ignored(line: str) -> None:
    policy = parse_policy(with_line(P_ENF, line))
    assert policy.mode is Mode.ENFORCE and policy.mx == P_ENF_POLICY.mx
    name, _, value = line.partition(": ")
    assert policy.extensions == ((name, value),)


@pytest.mark.parametrize(
    ("extra", "attr", "expected"),
    [
        ("mode: enforce", "mode", Mode.TESTING),
        ("max_age: 604800", "max_age", 60),
        ("version: STSv2", "version", "STSv1"),
    ],
)
def test_pol_8_first_occurrence_wins(extra: str, attr: str, expected: object) -> None:
    body = "version: STSv1\nmode: testing\nmax_age: 60\nmx: a.example\n" + extra + "\n"
    assert getattr(parse_policy(body), attr) == expected


@pytest.mark.parametrize("extra", ["max_age: abc", "mode: Enforce", "version: 2 x"])
def test_amb_6_malformed_later_duplicate_is_valid(extra: str) -> None:
    policy = parse_policy(with_line(P_ENF, extra))
    assert policy == P_ENF_POLICY


@pytest.mark.parametrize("extra", ["max_age:", "mode:   ", "version: a\tb"])
def test_amb_6_later_duplicate_must_still_have_extension_shape(extra: str) -> None:
    assert error_of(with_line(P_ENF, extra)).line == 6


def test_amb_6_malformed_first_occurrence_is_invalid() -> None:
    err = error_of("version: STSv1\nmode: none\nmax_age: abc\nmax_age: 60\n")
    assert (err.rule, err.line) == ("POL-5", 3)


def test_pol_9_mx_lines_cumulative() -> None:
    body = (
        "version: STSv1\nmode: enforce\nmx: a.example\nmx: *.b.example\nmx: c.example\nmax_age: 1\n"
    )
    assert parse_policy(body).mx == (
        MxPattern("a.example"),
        MxPattern("b.example", wildcard=True),
        MxPattern("c.example"),
    )


@pytest.mark.parametrize(
    "body",
    [
        P_ENF.replace("\n", "\r\n"),
        P_ENF,
        P_ENF.replace("\n", "\r\n", 2),
        P_ENF.rstrip("\n"),
        P_ENF.replace("\n", "\r\n").rstrip("\r\n"),
        P_ENF.encode(),
    ],
)
def test_pol_10_line_endings_equivalent(body: str | bytes) -> None:
    assert parse_policy(body) == P_ENF_POLICY


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (P_ENF.replace("\n", "\r", 1), 1),
        (P_ENF.rstrip("\n") + "\r", 5),
        (P_ENF.replace("\n", "\r\r\n", 1), 1),
        (replace(P_ENF, "mode: enforce", "mode: en\rforce"), 2),
    ],
)
def test_amb_3_bare_cr_invalid(body: str, line: int) -> None:
    err = error_of(body)
    assert (err.rule, err.line) == ("AMB-3", line)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (P_ENF + "\n", 6),
        ("\n" + P_ENF, 1),
        (P_ENF.replace("\n", "\n\n", 1), 2),
        (P_ENF + "\r\n", 6),
    ],
)
def test_amb_4_blank_lines_invalid(body: str, line: int) -> None:
    err = error_of(body)
    assert (err.rule, err.line) == ("AMB-4", line)


def test_empty_body_invalid() -> None:
    assert error_of("").rule == "POL-1"
    assert error_of(b"").rule == "POL-1"


@pytest.mark.parametrize(
    "line", ["mode:enforce", "mode:\t enforce", "mode: enforce  ", "mode: enforce\t"]
)
def test_pol_11_wsp_after_colon_and_value_ok(line: str) -> None:
    assert parse_policy(replace(P_ENF, "mode: enforce", line)).mode is Mode.ENFORCE


@pytest.mark.parametrize(
    "line", ["mode : enforce", " mode: enforce", "\tmode: enforce", "mode enforce"]
)
def test_pol_11_wsp_before_colon_or_key_invalid(line: str) -> None:
    err = error_of(replace(P_ENF, "mode: enforce", line))
    assert (err.rule, err.line) == ("POL-11", 2)


def test_pol_12_field_names_case_sensitive() -> None:
    body = "Version: STSv1\nMode: enforce\nMX: mx1.example.com\nMax_age: 86400\n"
    err = error_of(body)
    assert err.rule == "POL-1"


def test_pol_12_capitalised_name_is_an_extension() -> None:
    policy = parse_policy(with_line(P_ENF, "Mode: none"))
    assert policy.mode is Mode.ENFORCE
    assert policy.extensions == (("Mode", "none"),)


def test_pol_13_field_order_irrelevant() -> None:
    body = "mx: mx1.example.com\nmx: mx2.example.com\nmax_age: 86400\nmode: enforce\nversion: STSv1"
    assert parse_policy(body) == P_ENF_POLICY


def test_pol_14_no_id_needed() -> None:
    assert parse_policy(P_ENF).version == "STSv1"


def test_pol_16_a_label_mx_accepted() -> None:
    policy = parse_policy(replace(P_ENF, "mx1.example.com", "xn--mx-xyz.example"))
    assert MxPattern("xn--mx-xyz.example") in policy.mx


@pytest.mark.parametrize(
    "line", ["note: hello world", "note: café", "n" * 32 + ": 1", "note: a  b", "n.-_9: ∀x"]
)
def test_pol_17_extension_values_valid(line: str) -> None:
    name, _, value = line.partition(": ")
    assert parse_policy(with_line(P_ENF, line)).extensions == ((name, value),)


@pytest.mark.parametrize(
    "line", ["foo:", "foo:   ", "note: a\tb", "_x: 1", "n" * 33 + ": 1", "no te: x", "note: a\x00b"]
)
def test_pol_17_extension_values_invalid(line: str) -> None:
    err = error_of(with_line(P_ENF, line))
    assert err.line == 6
    assert err.rule in {"POL-17", "POL-11"}


def test_pol_17_invalid_utf8_bytes() -> None:
    err = error_of(P_ENF.encode() + b"note: caf\xe9\n")
    assert (err.rule, err.line) == ("POL-17", 6)


def test_amb_5_error_names_line_field_value_and_rule() -> None:
    err = error_of(with_line(P_ENF, "mx: *example.com"))
    assert err.as_dict() == {
        "error": "PolicyError",
        "reason": err.reason,
        "source": "test",
        "line": 6,
        "field": "mx",
        "value": "*example.com",
        "rule": "POL-6",
    }
    assert "line 6" in str(err) and "'*example.com'" in str(err) and "[POL-6]" in str(err)


def test_render_round_trip_and_lines() -> None:
    policy = parse_policy(with_line(P_ENF, "note: café au lait"))
    assert parse_policy(render_policy(policy)) == policy
    assert policy.lines() == [
        "version: STSv1",
        "mode: enforce",
        "mx: mx1.example.com",
        "mx: mx2.example.com",
        "max_age: 86400",
        "note: café au lait",
    ]


def test_lines_skip_known_names_among_extensions() -> None:
    policy = Policy(Mode.NONE, 5, extensions=(("mode", "x"), ("k", "v")))
    assert policy.lines()[-1] == "k: v"
    assert len(policy.lines()) == 4


def test_fast_constructor_builds_the_same_frozen_policy() -> None:
    from engine.core.mx import MxPattern
    from engine.core.policy import Mode, Policy, _new_policy

    args = (Mode.ENFORCE, 86400, (MxPattern("mx1.example.com"),), "STSv1", (("a", "b"),))
    fast = _new_policy(*args)
    assert fast == Policy(*args) and hash(fast) == hash(Policy(*args))
    with pytest.raises(AttributeError):
        fast.mode = Mode.NONE  # type: ignore[misc]
