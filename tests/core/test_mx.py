"""MX pattern parsing and matching (RFC 8461 §3.2, §4.1): the MX and POL-6/16 rows."""

from __future__ import annotations

import pytest

from engine.core.errors import MxPatternError
from engine.core.mx import (
    MxPattern,
    is_domain,
    mx_matches,
    normalize_host,
    parse_mx_pattern,
    policy_permits,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mx1.example.com", MxPattern("mx1.example.com")),
        ("*.example.com", MxPattern("example.com", wildcard=True)),
        ("MX1.Example.COM", MxPattern("mx1.example.com")),
        ("xn--mx-xyz.example", MxPattern("xn--mx-xyz.example")),
        ("localhost", MxPattern("localhost")),
        ("*.com", MxPattern("com", wildcard=True)),
        ("a-b.c0.example", MxPattern("a-b.c0.example")),
        ("1.2.3.4", MxPattern("1.2.3.4")),
        ("a" * 63 + ".example", MxPattern("a" * 63 + ".example")),
    ],
)
def test_pol_6_valid_patterns_parse(text: str, expected: MxPattern) -> None:
    assert parse_mx_pattern(text) == expected
    assert str(parse_mx_pattern(text)) == str(expected)


@pytest.mark.parametrize(
    "text",
    [
        "a.example.com, b.example.com",
        "a.example.com b.example.com",
        "bücher.example",
        "*example.com",
        "mail.*.example.com",
        "*.*.example.com",
        "*",
        "*.",
        ".example.com",
        "mx_1.example.com",
        "mail.example.com.",  # AMB-7: the root dot is not part of Domain
        "-mx.example.com",
        "mx-.example.com",
        "a..example.com",
        "",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4),  # 255 characters
    ],
)
def test_pol_6_invalid_patterns_rejected(text: str) -> None:
    with pytest.raises(MxPatternError) as info:
        parse_mx_pattern(text, source="t", line=7)
    assert info.value.rule == "POL-6"
    assert info.value.line == 7
    assert info.value.field == "mx"
    assert info.value.value == text


def test_pol_16_u_label_pattern_names_a_labels() -> None:
    with pytest.raises(MxPatternError, match="A-labels"):
        parse_mx_pattern("bücher.example")


def test_pol_16_a_label_pattern_matches_a_label_host() -> None:
    assert mx_matches(parse_mx_pattern("xn--mx-xyz.example"), "xn--mx-xyz.example.")


def test_disc_2_u_label_host_becomes_a_labels() -> None:
    assert normalize_host("bücher.example") == "xn--bcher-kva.example"
    assert normalize_host("Bücher.Example.") == "xn--bcher-kva.example"
    assert mx_matches(parse_mx_pattern("xn--bcher-kva.example"), "bücher.example")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mx1.example.com.", "mx1.example.com"),
        ("MX1.EXAMPLE.COM", "mx1.example.com"),
        ("mx1.example.com", "mx1.example.com"),
    ],
)
def test_mx_2_normalize_strips_root_dot_and_case(name: str, expected: str) -> None:
    assert normalize_host(name) == expected


@pytest.mark.parametrize("name", ["", ".", "a..b", ".a", "xn--\u00e9..x"])
def test_mx_2_normalize_rejects_empty_labels(name: str) -> None:
    with pytest.raises(MxPatternError):
        normalize_host(name)


def test_mx_2_case_insensitive_and_root_dot_ignored() -> None:
    assert mx_matches(parse_mx_pattern("MX1.Example.COM"), "mx1.example.com.")


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("mail.example.com", True),
        ("MAIL.example.com.", True),
        ("example.com", False),
        ("a.b.example.com", False),
        ("x.example.com.evil.net", False),
        ("xexample.com", False),
        (".example.com", False),
    ],
)
def test_mx_3_wildcard_matches_exactly_one_label(host: str, matches: bool) -> None:
    assert mx_matches(parse_mx_pattern("*.example.com"), host) is matches


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("mail.example.com", "mail.example.com.evil.net"),
        ("mail.example.com", "evil-mail.example.com"),
        ("example.com", "mail.example.com"),
        ("*.example.com", "x.example.com.evil.net"),
    ],
)
def test_mx_4_no_suffix_match(pattern: str, host: str) -> None:
    assert not mx_matches(parse_mx_pattern(pattern), host)


def test_mx_1_policy_permits_any_pattern() -> None:
    patterns = [parse_mx_pattern("mx1.example.com"), parse_mx_pattern("*.hoster.example")]
    assert policy_permits(patterns, "mx1.example.com.")
    assert policy_permits(patterns, "eu.hoster.example")
    assert not policy_permits(patterns, "mx2.example.com")
    assert not policy_permits([], "mx1.example.com")


def test_pol_9_third_pattern_counts() -> None:
    patterns = [parse_mx_pattern(p) for p in ("a.example", "b.example", "c.example")]
    assert policy_permits(patterns, "c.example")


def test_mx_9_implicit_mx_is_the_domain_itself() -> None:
    assert policy_permits([parse_mx_pattern("example.com")], "example.com")
    assert not policy_permits([parse_mx_pattern("mail.example.com")], "example.com")


def test_mx_5_matches_the_rr_target_only() -> None:
    # The matcher sees the name it is given; the caller passes the MX RR target, so a
    # CNAME target listed in the policy does not help (MX-5, AMB-8).
    assert not policy_permits([parse_mx_pattern("mx.hoster.example")], "mx1.example.com")


def test_unconvertible_host_matches_nothing() -> None:
    assert not mx_matches(parse_mx_pattern("*.example"), "a..example")


def test_is_domain() -> None:
    assert is_domain("a.example")
    assert not is_domain("a.example.")
    assert not is_domain("*.example")
