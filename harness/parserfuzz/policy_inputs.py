"""Hypothesis strategies for policy bodies: valid, one mutation away, and the AMB classes.

Theory of operation
-------------------
A body is drawn as a list of lines, each ``[name, after-colon WSP, value, trailing
WSP, line end]``, from the RFC 8461 §3.2 ABNF (the same ground as the property
tests' tests/core/strategies.py, which the installed harness cannot import). Then
:func:`policy_inputs` draws one of three families:

* ``valid``: the body as drawn (field order, LF / CRLF, leading zeros, extensions,
  wildcards, UTF-8 extension values, an optional final line end);
* a near-miss: one :data:`MUTATIONS` entry applied once (case, whitespace, line
  ends, duplicate keys, max_age bounds, mx pattern forms, version, mode values,
  extension keys and values, size); the result may or may not still be valid,
  which is the point: the oracle decides;
* ``amb-N``: a body built to sit on one ambiguity of docs/decisions.md that concerns
  parsing (AMB-1, 3, 4, 5, 6, 7, 13, 35).

Each draw is ``(label, bytes)``; the label names the family or mutation and ends up
in the corpus. Everything is built from ``draw`` calls, so hypothesis shrinks it.
"""

from __future__ import annotations

import string
from collections.abc import Callable

from hypothesis import strategies as st

from harness.parserfuzz._pieces import ALNUM, pick_from, word

__all__ = ["MUTATIONS", "RAW", "policy_inputs", "render"]

_VCHAR = "".join(map(chr, range(0x21, 0x7F)))
Lines = list[list[str]]
# The name of a line written as its value alone (no colon): an empty line, a broken one.
RAW = "\x00raw"
_LOWER = string.ascii_lowercase + string.digits
_LABEL = word(_LOWER, _LOWER + "-", 10, last=_LOWER)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_WSP = pick_from(["", " ", "\t", "  "])
_EXT_NAME = word(ALNUM, ALNUM + "_.-", 31)
_EXT_VALUE = st.one_of(
    word(_VCHAR, _VCHAR + " ", 10, last=_VCHAR),
    pick_from(["é", "v\u00e9rsion 2", "\u2603", "a:b", "https://x.example/"]),
)
_KNOWN = ("version", "mode", "max_age", "mx")
_EXT_NAME_NEW = _EXT_NAME.filter(lambda n: n not in _KNOWN)


@st.composite
def _mx_value(draw: st.DrawFn) -> str:
    domain = draw(_DOMAIN)
    if draw(st.booleans()):
        domain = domain.upper() if draw(st.booleans()) else domain.capitalize()
    return ("*." if draw(st.booleans()) else "") + domain


@st.composite
def _valid_lines(draw: st.DrawFn) -> Lines:
    mode = draw(pick_from(["enforce", "testing", "none"]))
    n_mx = draw(st.integers(1 if mode != "none" else 0, 4))
    age = draw(pick_from(["86400", "604800", "31557600", "1209600", "0604800"]))
    fields = [("version", "STSv1"), ("mode", mode), ("max_age", age)]
    fields += [("mx", draw(_mx_value())) for _ in range(n_mx)]
    fields += [(draw(_EXT_NAME_NEW), draw(_EXT_VALUE)) for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        fields = draw(st.permutations(fields))  # POL-13: any order
    ws = draw(pick_from([(" ", ""), (" ", ""), None]))
    lines = []
    for name, value in fields:
        pre, post = ws if ws is not None else (draw(_WSP), draw(_WSP))
        lines.append(
            [name, pre, value, post, "\r\n" if draw(st.booleans()) and ws is None else "\n"]
        )
    if draw(st.booleans()):
        lines[-1][4] = ""  # POL-10: the last terminator is optional
    return lines


def render(lines: Lines) -> bytes:
    """The body the lines spell, UTF-8 encoded (bytes in a line are kept as Latin-1)."""
    text = "".join(
        v + end if n == RAW else f"{n}:{pre}{v}{post}{end}" for n, pre, v, post, end in lines
    )
    return text.encode("utf-8", "surrogateescape")


def _pick(draw: st.DrawFn, lines: Lines, name: str | None = None) -> list[str]:
    choices = [ln for ln in lines if name is None or ln[0] == name]
    if not choices:
        line = [name or "mx", " ", "mail.example.com", "", "\n"]
        lines.insert(0, line)
        return line
    return choices[draw(st.integers(0, len(choices) - 1))]


def _m_case(draw: st.DrawFn, lines: Lines) -> None:
    line = _pick(draw, lines)
    part = draw(pick_from([0, 2]))
    line[part] = draw(pick_from([str.upper, str.capitalize, str.swapcase]))(line[part])


def _m_whitespace(draw: st.DrawFn, lines: Lines) -> None:
    line = _pick(draw, lines)
    where = draw(pick_from(["before-name", "before-colon", "inside-value", "after", "none"]))
    ws = draw(pick_from([" ", "\t", "\u00a0", "\x0b", "\x0c"]))
    if where == "before-name":
        line[0] = ws + line[0]
    elif where == "before-colon":
        line[0] += ws
    elif where == "inside-value":
        cut = draw(st.integers(0, len(line[2])))
        line[2] = line[2][:cut] + ws + line[2][cut:]
    elif where == "after":
        line[3] += ws
    else:
        line[1] = ""


def _m_line_end(draw: st.DrawFn, lines: Lines) -> None:
    i = draw(st.integers(0, len(lines) - 1))
    end = draw(pick_from(["\r", "\r\r\n", "\n\n", "\r\n", "\n", "\n\r\n", "\x85", "\u2028"]))
    lines[i][4] = end
    if draw(st.booleans()):
        lines.insert(0, [RAW, "", "", "", draw(pick_from(["\n", "\r\n", " \n"]))])


def _m_duplicate(draw: st.DrawFn, lines: Lines) -> None:
    name = draw(pick_from(["version", "mode", "max_age", "mx"]))
    value = draw(
        pick_from(
            [
                "STSv1",
                "enforce",
                "testing",
                "none",
                "86400",
                "abc",
                "-1",
                "STSv2",
                "",
                "mx.example.net",
            ]
        )
    )
    i = draw(st.integers(0, len(lines)))
    lines.insert(i, [name, " ", value, "", "\n"])


_AGES = ["0", "1", "86399", "86400", "31557600", "31557601", "2147483647", "2147483648",
         "4294967296", "9999999999", "10000000000", "00000000001", "-1", "+86400", "1_000",
         "1e6", "0x10", "86400s", "", "86400.0", "\u0663", "\uff11", "86 400"]  # fmt: skip


def _m_max_age(draw: st.DrawFn, lines: Lines) -> None:
    _pick(draw, lines, "max_age")[2] = draw(pick_from(_AGES))


_MX_FORMS = [
    "mail.example.com.", "*", "*.", ".example.com", "*.*.example.com", "a*.example.com",
    "mail.*.com", "mx1.example.com, mx2.example.com", "mx1.example.com mx2.example.com",
    "b\u00fccher.de", "xn--bcher-kva.de", "_mx.example.com", "192.0.2.1", "[192.0.2.1]",
    "a" * 64 + ".example.com", "a" * 63 + ".example.com", "-a.example.com", "a-.example.com",
    "a..example.com", "EXAMPLE.COM", "localhost", "mx_1.example.com", "*.com", "*example.com",
    ".".join(["abcdefghij"] * 25), "mail.example.com:25",
]  # fmt: skip


def _m_mx_form(draw: st.DrawFn, lines: Lines) -> None:
    if draw(st.integers(0, 5)) == 0:
        lines[:] = [ln for ln in lines if ln[0] != "mx"] or lines  # POL-2
        return
    _pick(draw, lines, "mx")[2] = draw(pick_from(_MX_FORMS))


def _m_version(draw: st.DrawFn, lines: Lines) -> None:
    values = ["STSv2", "stsv1", "STSV1", "STSv1;", "STSv1 x", "STSv10", "STSv1.0", "v1", ""]
    if draw(st.integers(0, 4)) == 0:
        lines[:] = [ln for ln in lines if ln[0] != "version"]
        return
    _pick(draw, lines, "version")[2] = draw(pick_from(values))


def _m_mode(draw: st.DrawFn, lines: Lines) -> None:
    values = ["Enforce", "ENFORCE", "report", "enforce;", "enforce testing", "", "reject",
              "test", "none ", "enforcing", "Testing", "NONE", "\"enforce\""]  # fmt: skip
    if draw(st.integers(0, 4)) == 0:
        lines[:] = [ln for ln in lines if ln[0] != "mode"]
        return
    _pick(draw, lines, "mode")[2] = draw(pick_from(values))


# A lone surrogate is written as its byte by surrogateescape: 0xE9, not UTF-8.
_EXT_VALUES = [
    "ok",
    "a\tb",
    "",
    "a\x01b",
    "a\x7fb",
    "\u00e9t\u00e9",
    "a b",
    "\udce9",
    "\x00",
    "a:b",
]


def _m_extension(draw: st.DrawFn, lines: Lines) -> None:
    name = draw(
        pick_from(["x y", "x@y", "_x", "-x", "a" * 32, "a" * 33, "x", "ext.v-1_b", ""]) | _EXT_NAME
    )
    value = draw(pick_from(_EXT_VALUES))
    lines.insert(draw(st.integers(0, len(lines))), [name, " ", value, "", "\n"])


def _m_size(draw: st.DrawFn, lines: Lines) -> None:
    n = draw(pick_from([100, 1000, 3000]))
    what = draw(pick_from(["mx", "ext", "long-value"]))
    if what == "mx":
        lines.extend(["mx", " ", f"mx{i}.example.com", "", "\n"] for i in range(n))
    elif what == "ext":
        lines.extend([f"x{i}", " ", "v" * 20, "", "\n"] for i in range(n))
    else:
        lines.append(["comment", " ", "v" * (n * 30), "", "\n"])


def _m_no_colon(draw: st.DrawFn, lines: Lines) -> None:
    line = _pick(draw, lines)
    line[:] = [
        RAW,
        "",
        draw(
            pick_from(
                [
                    line[0] + " " + line[2],
                    line[0],
                    "\ufeff" + line[0] + ": " + line[2],
                    line[0] + "=" + line[2],
                ]
            )
        ),
        "",
        line[4],
    ]


MUTATIONS: dict[str, Callable[[st.DrawFn, Lines], None]] = {
    "case": _m_case,
    "whitespace": _m_whitespace,
    "line-end": _m_line_end,
    "duplicate": _m_duplicate,
    "max-age": _m_max_age,
    "mx-form": _m_mx_form,
    "version": _m_version,
    "mode": _m_mode,
    "extension": _m_extension,
    "size": _m_size,
    "no-colon": _m_no_colon,
}


def _line(name: str, value: str, end: str = "\n") -> list[str]:
    return [name, " ", value, "", end]


def _amb(draw: st.DrawFn, lines: Lines) -> str:
    """Turn a valid body into one on an AMB class; returns its label."""
    amb = draw(pick_from(["1", "3", "4", "5", "6", "7", "13", "35"]))
    age = _pick(draw, lines, "max_age")
    mx = [ln for ln in lines if ln[0] == "mx"] or [_pick(draw, lines, "mx")]
    if amb == "1":
        age[2] = draw(st.integers(31_557_601, 9_999_999_999).map(str))
    elif amb == "3":
        lines[draw(st.integers(0, len(lines) - 1))][4] = draw(pick_from(["\r\n", "\r"]))
    elif amb == "4":
        lines.insert(draw(st.integers(0, len(lines))), [RAW, "", "", "", "\n"])
    elif amb == "5":
        lines.insert(draw(st.integers(0, len(lines))), _line("mx", draw(pick_from(_MX_FORMS))))
    elif amb == "6":
        name = draw(pick_from(["version", "mode", "max_age"]))
        bad = draw(pick_from(["abc", "STSv2", "report", "-1", "Enforce", "\u2603"]))
        if draw(st.booleans()):
            lines.append(_line(name, bad))
        else:
            lines.append(_line(name.capitalize(), bad))  # POL-12: an extension
    elif amb == "7":
        mx[0][2] = draw(pick_from(["mail.example.com.", "b\u00fccher.de", "MAIL.Example.COM"]))
    elif amb == "13":
        age[2] = "0"
    else:
        age[2] = str(draw(st.integers(1, 86399)))
    return f"amb-{amb}"


@st.composite
def _policy_case(draw: st.DrawFn) -> tuple[str, bytes]:
    lines = draw(_valid_lines())
    family = draw(pick_from(["valid", "mutation", "mutation", "amb"]))
    if family == "valid":
        return "valid", render(lines)
    if family == "amb":
        return _amb(draw, lines), render(lines)
    name = draw(pick_from(sorted(MUTATIONS)))
    MUTATIONS[name](draw, lines)
    return name, render(lines)


def policy_inputs() -> st.SearchStrategy[tuple[str, bytes]]:
    """``(label, body)`` pairs: valid bodies, near-misses and AMB-class bodies."""
    return _policy_case()
