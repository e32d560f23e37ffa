"""Properties of the core parsers: no crashes, round trips, ABNF-generated input parses."""

from __future__ import annotations

import contextlib

from hypothesis import assume, given, note
from hypothesis import strategies as st

from engine.core import mx as mx_module
from engine.core import policy as policy_module
from engine.core.errors import MxPatternError, PolicyError, TxtRecordError
from engine.core.mx import MxPattern, mx_matches, normalize_host, parse_mx_pattern
from engine.core.policy import Policy, parse_policy, render_policy
from engine.core.txt import (
    NoStsRecord,
    NoTlsRptRecord,
    parse_sts_record,
    parse_tlsrpt_record,
    select_sts_record,
    select_tlsrpt_record,
)
from tests.core.strategies import (
    domains,
    labels,
    mx_pattern_texts,
    policy_bodies,
    policy_documents,
    rendered_policies,
    sts_record_documents,
    tlsrpt_record_documents,
    txt_rr_strings,
)

# Text that looks like a policy often enough to reach the deep branches.
_POLICYISH = st.text(
    st.sampled_from(list("versionmdaxgfoe_:*.-\t \r\n19Sv;é\x00")) | st.characters(), max_size=200
)


@given(st.one_of(st.text(), st.binary(), _POLICYISH))
def test_parse_policy_raises_only_policy_error(body: str | bytes) -> None:
    try:
        policy = parse_policy(body)
    except PolicyError as exc:
        assert exc.rule is not None
        return
    assert parse_policy(render_policy(policy)) == policy


@given(st.one_of(st.text(), st.text(st.sampled_from(list("v=STSv1;id= \tA_.-x")))))
def test_parse_sts_record_raises_only_txt_error(text: str) -> None:
    try:
        parse_sts_record(text)
    except TxtRecordError as exc:
        assert exc.rule is not None
    try:
        parse_tlsrpt_record(text)
    except TxtRecordError as exc:
        assert exc.rule is not None


@given(st.lists(st.lists(st.binary(max_size=40), max_size=3), max_size=3))
def test_select_never_raises(rrset: list[list[bytes]]) -> None:
    select_sts_record(rrset)
    select_tlsrpt_record(rrset)


@given(st.text())
def test_mx_functions_raise_only_mx_error(text: str) -> None:
    with contextlib.suppress(MxPatternError):
        parse_mx_pattern(text)
    with contextlib.suppress(MxPatternError):
        normalize_host(text)


@given(policy_documents())
def test_abnf_generated_policy_parses_to_its_meaning(doc: tuple[str, Policy]) -> None:
    body, expected = doc
    assert parse_policy(body) == expected
    assert parse_policy(body.encode("utf-8")) == expected


@given(policy_documents())
def test_render_then_parse_is_identity(doc: tuple[str, Policy]) -> None:
    policy = parse_policy(doc[0])
    rendered = render_policy(policy)
    assert parse_policy(rendered) == policy
    assert render_policy(parse_policy(rendered)) == rendered


_MUTATION_CHARS = st.sampled_from(list(":*. \t\r\n-_;é\x00aZ09"))


@given(policy_bodies(), st.data())
def test_one_character_mutation_parses_or_names_line(body: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(body) - 1), label="index")
    kind = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="kind")
    c = data.draw(_MUTATION_CHARS, label="char")
    mutated = {
        "replace": body[:i] + c + body[i + 1 :],
        "insert": body[:i] + c + body[i:],
        "delete": body[:i] + body[i + 1 :],
    }[kind]
    note(repr(mutated))
    try:
        parse_policy(mutated)
    except PolicyError as exc:
        assert exc.rule is not None
        # Only a missing required field has no line to point at (POL-1); it names the field.
        if exc.rule == "POL-1":
            assert exc.field in {"version", "mode", "max_age"}
        else:
            assert exc.line is not None and 1 <= exc.line <= mutated.count("\n") + 1


@given(domains(max_labels=3), labels(max_size=20), st.data())
def test_wildcard_matches_exactly_one_more_label(
    domain: str, label: str, data: st.DataObject
) -> None:
    pattern = MxPattern(domain=domain.lower(), wildcard=True)
    assert mx_matches(pattern, f"{label}.{domain}")
    assert mx_matches(pattern, f"{label.upper()}.{domain.upper()}.")
    assert not mx_matches(pattern, domain)
    extra = data.draw(labels(max_size=10), label="extra")
    assert not mx_matches(pattern, f"{extra}.{label}.{domain}")
    assert not mx_matches(pattern, f"{label}.{domain}.{extra}")
    host = data.draw(domains(max_labels=5), label="host")
    one_more = host.count(".") == domain.count(".") + 1
    assert mx_matches(pattern, host) == (one_more and host.lower().endswith("." + domain.lower()))


@given(mx_pattern_texts())
def test_pattern_text_round_trips(text: str) -> None:
    pattern = parse_mx_pattern(text)
    assert str(pattern) == text.lower()
    assert parse_mx_pattern(str(pattern)) == pattern


@given(sts_record_documents(), st.data())
def test_abnf_generated_sts_record_parses(doc: tuple[str, object], data: st.DataObject) -> None:
    text, expected = doc
    assert parse_sts_record(text) == expected
    strings = data.draw(txt_rr_strings(text), label="strings")
    assume(strings and strings[0].startswith(b"v=STSv1"))
    result = select_sts_record([[b"v=spf1 -all"], strings])
    assert not isinstance(result, NoStsRecord)
    assert result == expected


@given(tlsrpt_record_documents(), st.data())
def test_abnf_generated_tlsrpt_record_parses(doc: tuple[str, object], data: st.DataObject) -> None:
    text, expected = doc
    assert parse_tlsrpt_record(text) == expected
    strings = data.draw(txt_rr_strings(text), label="strings")
    result = select_tlsrpt_record([strings])
    assert not isinstance(result, NoTlsRptRecord)
    assert result == expected


def _fast_agrees_with_reference(text: str) -> None:
    # The first call may go through _parse_any_order and teach the line caches; the
    # second then takes _parse_usual's lookups. Both must agree with the reference.
    fast = policy_module._parse_fast(text)
    again = policy_module._parse_fast(text)
    try:
        slow = policy_module._parse_lines(text, None)
    except PolicyError:
        assert fast is None, "fast path accepted a body the reference rejects"
        assert again is None, "fast path (warm caches) accepted a body the reference rejects"
        return
    assert fast is None or fast == slow
    assert again is None or again == slow


@given(policy_bodies(), st.data())
def test_fast_path_agrees_with_line_reader(body: str, data: st.DataObject) -> None:
    _fast_agrees_with_reference(body)
    i = data.draw(st.integers(0, len(body)), label="index")
    c = data.draw(_MUTATION_CHARS, label="char")
    _fast_agrees_with_reference(body[:i] + c + body[i:])
    _fast_agrees_with_reference(body[:i] + body[i + 1 :])


@given(_POLICYISH)
def test_fast_path_agrees_on_arbitrary_text(text: str) -> None:
    _fast_agrees_with_reference(text)


@given(rendered_policies(), st.data())
def test_usual_layout_agrees_with_line_reader(doc: tuple[str, Policy], data: st.DataObject) -> None:
    # render_policy writes the layout _parse_usual is built for (version, mode, mx lines,
    # max_age, extensions), so these bodies exercise its lookups rather than the
    # any-order loop; then one character is inserted or removed anywhere.
    body = doc[0]
    _fast_agrees_with_reference(body)
    assert policy_module._parse_usual(body.replace("\r\n", "\n")) in (None, doc[1])
    i = data.draw(st.integers(0, len(body)), label="index")
    c = data.draw(_MUTATION_CHARS, label="char")
    _fast_agrees_with_reference(body[:i] + c + body[i:])
    _fast_agrees_with_reference(body[:i] + body[i + 1 :])


_DOMAINISH = st.text(st.sampled_from(list("ab-.0Z*é_ ")), max_size=70) | st.from_regex(
    r"[a-z0-9-]{0,66}(\.[a-z0-9-]{0,66}){0,5}", fullmatch=True
)


@given(_DOMAINISH | st.integers(60, 260).map(lambda n: ("a" * 62 + ".") * (n // 63) + "b"))
def test_ldh_domain_check_agrees_with_the_grammar_regex(name: str) -> None:
    expected = len(name) <= mx_module.MAX_DOMAIN_LENGTH and bool(
        mx_module._DOMAIN_RE.fullmatch(name)
    )
    assert mx_module._is_ldh_domain(name) == expected


@given(mx_pattern_texts())
def test_fast_pattern_constructor_equals_the_dataclass(text: str) -> None:
    pattern = parse_mx_pattern(text)
    built = MxPattern(domain=text.removeprefix("*.").lower(), wildcard=text.startswith("*."))
    assert pattern == built and hash(pattern) == hash(built) and repr(pattern) == repr(built)
