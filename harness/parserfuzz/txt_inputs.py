"""Hypothesis strategies for ``_mta-sts`` TXT records: valid, near-misses, AMB-2.

Theory of operation
-------------------
A record is drawn as its fields after the version tag, each ``[name, value]``, with
a delimiter drawn per field from the RFC 8461 §3.1 ABNF (``*WSP ";" *WSP``), an
optional trailing delimiter, an id of 1-32 letters and digits, and extensions
(``ext-name "=" ext-value``). A near-miss applies one :data:`MUTATIONS` entry (case,
whitespace, delimiters, the id's length and characters, duplicate or missing id,
extension names and values, the version tag, non-ASCII bytes, quoting, size); the
``amb-2`` family puts whitespace before the first ``;`` (docs/decisions.md AMB-2).
The input is the joined record (DISC-8: a target that reads DNS joins the
character-strings itself), as ``(label, bytes)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from harness.parserfuzz._pieces import ALNUM, pick_from, word

__all__ = ["MUTATIONS", "txt_inputs"]

_ID = word(ALNUM, ALNUM, 31)
_EXT_NAME = word(ALNUM, ALNUM + "_.-", 31)
_EXT_NAME_NEW = _EXT_NAME.filter(lambda n: n != "id")
_EXT_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "=;")
_EXT_VALUE = word(_EXT_CHARS, _EXT_CHARS, 11)
_WSP = pick_from(["", "", " ", "\t", "  "])
# A field value meaning "the field has no '=' at all".
_NO_EQ = "\x00no-eq"


@dataclass(slots=True)
class _Record:
    """A record under construction (mutable, private to the strategies)."""

    tag: str = "v=STSv1"
    fields: list[list[str]] = field(default_factory=list)
    delims: list[str] = field(default_factory=list)
    tail: str = ""
    wrap: tuple[str, str] = ("", "")

    def render(self) -> bytes:
        pairs = zip(self.delims, self.fields, strict=True)
        body = "".join(d + (n if v == _NO_EQ else f"{n}={v}") for d, (n, v) in pairs)
        text = self.wrap[0] + self.tag + body + self.tail + self.wrap[1]
        return text.encode("utf-8", "surrogateescape")


@st.composite
def _valid(draw: st.DrawFn) -> _Record:
    rec = _Record(fields=[["id", draw(_ID)]])
    for _ in range(draw(st.integers(0, 2))):
        rec.fields.append([draw(_EXT_NAME_NEW), draw(_EXT_VALUE)])
    if draw(st.booleans()):
        rec.fields = draw(st.permutations(rec.fields))  # DISC-10: any order
    plain = draw(st.booleans())
    rec.delims = [";" if plain else f"{draw(_WSP)};{draw(_WSP)}" for _ in rec.fields]
    if plain:
        rec.delims = [d + " " for d in rec.delims]
    if draw(st.booleans()):
        rec.tail = ";" if plain else f"{draw(_WSP)};{draw(_WSP)}"  # a trailing delimiter
    return rec


def _id(rec: _Record) -> list[str]:
    return next(f for f in rec.fields if f[0] == "id")


def _m_case(draw: st.DrawFn, rec: _Record) -> None:
    which = draw(pick_from(["tag", "id-name", "id-value"]))
    if which == "tag":
        rec.tag = draw(pick_from(["V=STSv1", "v=stsv1", "v=STSV1", "V=stsV1"]))
    elif which == "id-name":
        _id(rec)[0] = "ID"
    else:
        _id(rec)[1] = _id(rec)[1].swapcase()  # still valid: the id is opaque


def _m_whitespace(draw: st.DrawFn, rec: _Record) -> None:
    ws = draw(pick_from([" ", "\t", "\u00a0", "\r\n"]))
    where = draw(pick_from(["lead", "tail", "tag", "in-value", "around-eq", "first"]))
    if where == "lead":
        rec.wrap = (ws, rec.wrap[1])
    elif where == "tail":
        rec.wrap = (rec.wrap[0], ws)
    elif where == "tag":
        rec.tag = "v =STSv1" if ws == " " else f"v={ws}STSv1"
    elif where == "in-value":
        _id(rec)[1] = _id(rec)[1][:1] + ws + _id(rec)[1][1:]
    elif where == "around-eq":
        _id(rec)[0] = "id" + ws
    else:
        rec.delims[0] = ws + ";" + rec.delims[0].lstrip(" \t;")  # AMB-2


def _m_delimiter(draw: st.DrawFn, rec: _Record) -> None:
    i = draw(st.integers(0, len(rec.delims) - 1))
    rec.delims[i] = draw(pick_from([";;", "", ",", " ", "; ;", ":", ";\x00"]))
    if draw(st.booleans()):
        rec.tail = draw(pick_from([";;", "; ;", ",", ";\n"]))


def _m_id(draw: st.DrawFn, rec: _Record) -> None:
    values = ["", "a" * 32, "a" * 33, "2024-01-01", "a_b", "a.b", "\u00e9", "a+b", "0", "a=b"]
    _id(rec)[1] = draw(pick_from(values))


def _m_id_count(draw: st.DrawFn, rec: _Record) -> None:
    if draw(st.booleans()) and len(rec.fields) > 1:
        rec.fields = [f for f in rec.fields if f[0] != "id"] or rec.fields
        rec.delims = rec.delims[: len(rec.fields)]
    else:
        rec.fields.append(["id", draw(pick_from([_id(rec)[1], "other1", ""]))])
        rec.delims.append(";")


def _m_extension(draw: st.DrawFn, rec: _Record) -> None:
    name = draw(pick_from(["_x", "-x", "a" * 32, "a" * 33, "x y", "", "x"]) | _EXT_NAME)
    value = draw(pick_from(["v", "", "a=b", "a b", "a;b", "\u00e9", "\x7f", "a,b", _NO_EQ]))
    rec.fields.insert(draw(st.integers(0, len(rec.fields))), [name, value])
    rec.delims.append(";")


def _m_version(draw: st.DrawFn, rec: _Record) -> None:
    rec.tag = draw(
        pick_from(["v=STSv10", "v=STSv2", "v=STSv1x", "v=STSv", "v=STSv1.0", "v=spf1", "id=1", ""])
    )


def _m_bytes(draw: st.DrawFn, rec: _Record) -> None:
    bad = draw(pick_from(["\udce9", "\u00e9", "\x00", "\x7f", "\x01"]))
    f = rec.fields[draw(st.integers(0, len(rec.fields) - 1))]
    f[1] = f[1].replace(_NO_EQ, "") + bad


def _m_quote(draw: st.DrawFn, rec: _Record) -> None:
    rec.wrap = draw(pick_from([('"', '"'), ('"', ""), ("'", "'")]))


def _m_size(draw: st.DrawFn, rec: _Record) -> None:
    n = draw(pick_from([50, 500]))
    rec.fields += [[f"x{i}", "v" * 10] for i in range(n)]
    rec.delims += ["; "] * n


MUTATIONS: dict[str, Callable[[st.DrawFn, _Record], None]] = {
    "case": _m_case,
    "whitespace": _m_whitespace,
    "delimiter": _m_delimiter,
    "id": _m_id,
    "id-count": _m_id_count,
    "extension": _m_extension,
    "version": _m_version,
    "bytes": _m_bytes,
    "quote": _m_quote,
    "size": _m_size,
}


@st.composite
def _txt_case(draw: st.DrawFn) -> tuple[str, bytes]:
    rec = draw(_valid())
    family = draw(pick_from(["valid", "mutation", "mutation", "amb-2"]))
    if family == "amb-2":
        # docs/decisions.md AMB-2: WSP between the tag and the first ';'.
        rec.delims[0] = draw(pick_from([" ", "\t", "  "])) + ";" + draw(_WSP)
        return family, rec.render()
    if family == "mutation":
        family = draw(pick_from(sorted(MUTATIONS)))
        MUTATIONS[family](draw, rec)
    return family, rec.render()


def txt_inputs() -> st.SearchStrategy[tuple[str, bytes]]:
    """``(label, record)`` pairs: valid records, near-misses and AMB-2 records."""
    return _txt_case()
