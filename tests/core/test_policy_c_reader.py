"""The optional C reader of policy bodies (engine/core/_policyscan.c).

It must never accept a body the reference reader rejects, and whatever it accepts
must equal the reference reader's policy, object for object. Cases it declines
(returns None) fall through to the Python readers, so declining is always safe.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from shutil import which

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core import policy as policy_module
from engine.core.errors import PolicyError
from engine.core.mx import MxPattern, parse_mx_pattern
from engine.core.policy import MAX_AGE_CEILING, Mode, Policy, parse_policy
from tests.core.strategies import mx_pattern_texts, policy_bodies, rendered_policies

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policies"


def _can_build_here() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "").split()
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(compiler) and which(compiler[0]) is not None and headers.is_file()


def test_the_c_reader_is_built_where_it_can_be() -> None:
    # The extension is optional (pyproject.toml), so a broken build would otherwise go
    # unnoticed: the pure-Python path gives the same results, only slower.
    if not _can_build_here():
        pytest.skip("no C compiler or Python headers here: the pure-Python parser is used")
    assert policy_module._c_parse is not None, (
        "a C compiler and Python.h exist but engine/core/_policyscan.c was not built; "
        "reinstall with `pip install -e .` and read the build output"
    )


c_parse = policy_module._c_parse
needs_c = pytest.mark.skipif(c_parse is None, reason="the C reader is not built here")


def _reference(text: str) -> Policy | None:
    try:
        return policy_module._parse_lines(text, None)
    except PolicyError:
        return None


def _agrees(text: str) -> Policy | None:
    assert c_parse is not None
    got = c_parse(text)
    expected = _reference(text)
    if expected is None:
        assert got is None, f"the C reader accepted a body the reference rejects: {text!r}"
    else:
        assert got is None or got == expected
        if got is not None:
            # Same types all the way down, not just equal values.
            assert type(got) is Policy and type(got.mode) is Mode
            assert all(type(p) is MxPattern and type(p.wildcard) is bool for p in got.mx)
            assert type(got.mx) is tuple and type(got.extensions) is tuple
    return got


USUAL = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.Example.NET\nmax_age: 86400\n"


@needs_c
def test_usual_body_is_read_whole() -> None:
    got = _agrees(USUAL)
    assert got == Policy(
        Mode.ENFORCE, 86400, (MxPattern("mx1.example.com"), MxPattern("example.net", True))
    )


@needs_c
@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (USUAL.replace("\n", "\r\n"), True),  # AMB-3: CRLF
        (USUAL[:-1], True),  # POL-10: no final terminator
        (USUAL[:-1] + "\r", False),  # AMB-3: a bare CR at the very end
        (USUAL + "\n", False),  # AMB-4: an empty line
        (USUAL.replace("mode", "mode\r", 1), False),  # a CR inside a line
        ("mode: none\nmax_age: 1\nversion: STSv1", True),  # any order; POL-2(c)
        ("version: STSv1\nmode: testing\nmax_age: 1\n", False),  # POL-2: no mx
        (USUAL.replace("86400", "9999999999"), True),  # AMB-1: clamped
        (USUAL.replace("86400", "00000086400"), False),  # POL-5: 11 digits
        (USUAL.replace("86400", "-1"), False),
        (USUAL.replace("86400", "8640 0"), False),
        (USUAL + "mode: bogus\n", True),  # POL-8 / AMB-6: a late duplicate is ignored
        (USUAL + "mode:\n", False),  # ... but it still needs a value
        (USUAL + "Mode: testing\n", True),  # POL-12: case-sensitive names
        (USUAL + "x: a  b \t \n", True),  # SP inside, WSP after
        (USUAL + "x: a\tb\n", False),  # TAB inside a value
        (USUAL + "x: a\x7fb\n", False),  # DEL
        (USUAL + "x: \n", False),  # an empty value
        (USUAL + "x :1\n", False),  # POL-11: WSP before ':'
        (USUAL + " x: 1\n", False),  # POL-11: WSP before the name
        (USUAL + "a" * 32 + ": 1\n", True),  # a 32-character name
        (USUAL + "a" * 33 + ": 1\n", False),
        (USUAL + "_x: 1\n", False),  # the name starts with a letter or digit
        (USUAL + "x.y-z_1: 1\n", True),
        (USUAL + "x: é\n", False),  # non-ASCII: declined, left to the Python readers
        (USUAL.replace("mx1.example.com", "mx1.example.com."), False),  # AMB-7
        (USUAL.replace("mx1.example.com", "mx_1.example.com"), False),  # POL-6
        (USUAL.replace("mx1.example.com", "-mx1.example.com"), False),
        (USUAL.replace("mx1.example.com", "mx1-.example.com"), False),
        (USUAL.replace("mx1.example.com", "mx1..example.com"), False),
        (USUAL.replace("mx1.example.com", "*.*.example.com"), False),
        (USUAL.replace("mx1.example.com", "*example.com"), False),
        (USUAL.replace("mx1.example.com", "*."), False),
        (USUAL.replace("mx1.example.com", "a" * 63 + ".com"), True),
        (USUAL.replace("mx1.example.com", "a" * 64 + ".com"), False),
        (USUAL.replace("mx1.example.com", ("a" * 62 + ".") * 4 + "b"), True),  # 253
        (USUAL.replace("mx1.example.com", ("a" * 62 + ".") * 4 + "bc"), False),  # 254
        (USUAL.replace("mx1.example.com", "mx1.example.com, mx2.example.com"), False),
        ("", False),  # POL-1
        ("version: STSv1", False),
    ],
)
def test_edges_agree_with_the_reference(body: str, accepted: bool) -> None:
    got = _agrees(body)
    assert (got is not None) == accepted


@needs_c
def test_max_age_is_clamped_as_the_reference_does() -> None:
    got = _agrees(USUAL.replace("86400", "9999999999"))
    assert got is not None and got.max_age == MAX_AGE_CEILING


@needs_c
def test_rejects_what_is_not_a_str() -> None:
    assert c_parse is not None
    with pytest.raises(TypeError):
        c_parse(USUAL.encode())  # type: ignore[arg-type]


@needs_c
def test_pattern_table_stays_bounded_and_shared() -> None:
    table = policy_module._MX_CACHE
    for n in range(policy_module._CACHE_SIZE + 10):
        _agrees(f"version: STSv1\nmode: enforce\nmx: bound{n}.example\nmax_age: 1\n")
        assert len(table) <= policy_module._CACHE_SIZE
    assert table["bound4105.example"] == MxPattern("bound4105.example")


@needs_c
@given(policy_bodies())
def test_generated_bodies_agree(body: str) -> None:
    _agrees(body)


@needs_c
@given(rendered_policies(), st.data())
def test_rendered_bodies_and_their_mutations_agree(
    doc: tuple[str, Policy], data: st.DataObject
) -> None:
    body = doc[0]
    assert _agrees(body) in (None, doc[1])
    i = data.draw(st.integers(0, len(body)), label="index")
    c = data.draw(st.sampled_from(list(":*. \t\r\n-_;é\x00\x7faZ09")), label="char")
    _agrees(body[:i] + c + body[i:])
    _agrees(body[:i] + body[i + 1 :])
    _agrees(body[:i] + c + body[i + 1 :])


@needs_c
@given(st.text(st.sampled_from(list("versionmdaxgfoe_:*.-\t \r\n19Sv;\x00\x7f")), max_size=200))
def test_arbitrary_text_agrees(text: str) -> None:
    _agrees(text)


@needs_c
@given(mx_pattern_texts())
def test_patterns_it_builds_equal_the_parser_s(text: str) -> None:
    # A name seen for the first time is built in C, lower-cased as parse_mx_pattern does.
    policy_module._MX_CACHE.pop(text, None)
    got = _agrees(f"version: STSv1\nmode: enforce\nmx: {text}\nmax_age: 1\n")
    assert got is not None
    (pattern,) = got.mx
    assert pattern == parse_mx_pattern(text) and hash(pattern) == hash(parse_mx_pattern(text))


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*/*.txt")), ids=lambda p: p.name)
def test_fixture_corpus_gives_the_same_result_with_and_without_c(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = path.read_bytes()

    def outcome() -> object:
        try:
            return parse_policy(body)
        except PolicyError as exc:
            return (exc.rule, exc.line, exc.field, exc.value, str(exc))

    with_c = outcome()
    monkeypatch.setattr(policy_module, "_c_parse", None)
    assert outcome() == with_c
