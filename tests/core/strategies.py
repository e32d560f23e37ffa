"""Hypothesis strategies for the core parsers, built from the RFC ABNF.

Each public function validates its arguments when it is called (not when an
example is drawn), as Hypothesis' own strategies do, and returns a strategy.
The ``*_documents`` strategies draw the text *and* the value a correct parser
must produce from it, so a property can compare the two.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from engine.core.mx import MxPattern
from engine.core.policy import MAX_AGE_CEILING, Mode, Policy, render_policy
from engine.core.txt import StsRecord, TlsRptRecord

__all__ = [
    "domains",
    "ext_names",
    "labels",
    "mx_pattern_texts",
    "policy_bodies",
    "policy_documents",
    "sts_record_documents",
    "tlsrpt_record_documents",
    "txt_rr_strings",
]

_KNOWN = ("version", "mode", "max_age", "mx")
_WSP = st.sampled_from(["", " ", "\t", "  ", " \t"])


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(message)


def labels(*, max_size: int = 63) -> st.SearchStrategy[str]:
    """RFC 5321 sub-domain labels: letter/digit, then LDH, ending letter/digit."""
    _check(1 <= max_size <= 63, f"max_size={max_size!r} must be in 1..63")
    inner = max(0, max_size - 2)
    pattern = rf"[A-Za-z0-9](?:[A-Za-z0-9-]{{0,{inner}}}[A-Za-z0-9])?"
    edge = st.sampled_from(["a", "0", "xn--bcher-kva", "a-b", "a" * max_size, "z9"])
    return st.one_of(
        edge.filter(lambda s: len(s) <= max_size), st.from_regex(pattern, fullmatch=True)
    )


def domains(*, min_labels: int = 1, max_labels: int = 4) -> st.SearchStrategy[str]:
    """ASCII domain names (RFC 5321 ``Domain``) of at most 253 characters."""
    _check(
        1 <= min_labels <= max_labels,
        f"need 1 <= min_labels <= max_labels, got {min_labels}, {max_labels}",
    )
    return st.lists(labels(max_size=20), min_size=min_labels, max_size=max_labels).map(".".join)


@st.composite
def _mx_pattern_text(draw: st.DrawFn, wildcard: bool | None) -> str:
    w = draw(st.booleans()) if wildcard is None else wildcard
    return ("*." if w else "") + draw(domains(min_labels=1, max_labels=4))


def mx_pattern_texts(*, wildcard: bool | None = None) -> st.SearchStrategy[str]:
    """``mx`` values: an optional ``*.`` and a domain, in mixed case."""
    _check(wildcard in (None, True, False), f"wildcard={wildcard!r} must be None or a bool")
    return _mx_pattern_text(wildcard)


def ext_names(*, exclude: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Extension names: (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")."""
    _check(all(isinstance(e, str) for e in exclude), "exclude must be a tuple of str")
    names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}", fullmatch=True)
    return names.filter(lambda n: n not in exclude)


_VCHAR = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_UTF8 = st.characters(min_codepoint=0x80, exclude_categories=("Cs",))


def _policy_ext_values() -> st.SearchStrategy[str]:
    # sts-policy-ext-value = vchar [*(SP / vchar) vchar], vchar = VCHAR / UTF-8.
    char = st.one_of(_VCHAR, _UTF8)
    middle = st.text(st.one_of(char, st.just(" ")), max_size=12)
    return st.tuples(char, middle, char).map("".join) | char


@st.composite
def _policy_document(
    draw: st.DrawFn, min_mx: int, max_mx: int, modes: tuple[Mode, ...], duplicates: bool
) -> tuple[str, Policy]:
    mode = draw(st.sampled_from(modes))
    n_mx = draw(st.integers(max(min_mx, 1 if mode is not Mode.NONE else 0), max_mx))
    mx_texts = draw(st.lists(mx_pattern_texts(), min_size=n_mx, max_size=n_mx))
    age = draw(st.integers(0, 9_999_999_999))
    width = draw(st.integers(len(str(age)), 10))
    age_text = str(age).zfill(width)  # POL-5: leading zeros are fine
    exts = draw(st.lists(st.tuples(ext_names(exclude=_KNOWN), _policy_ext_values()), max_size=4))
    fields: list[tuple[str, str]] = [("version", "STSv1"), ("mode", mode.value)]
    fields += [("max_age", age_text)] + [("mx", t) for t in mx_texts] + exts
    order = draw(st.permutations(range(len(fields))))  # POL-13: order is free
    lines = [fields[i] for i in order]
    if duplicates:
        # POL-8 / AMB-6: later duplicates of known fields are ignored, even when malformed.
        for name in draw(st.lists(st.sampled_from(("version", "mode", "max_age")), max_size=3)):
            lines.append((name, draw(_policy_ext_values())))
    parts = []
    for name, value in lines:
        parts.append(f"{name}:{draw(_WSP)}{value}{draw(_WSP)}")
    ends = [draw(st.sampled_from(["\n", "\r\n"])) for _ in parts]
    if not draw(st.booleans()):
        ends[-1] = ""  # POL-10: the final terminator is optional
    body = "".join(p + e for p, e in zip(parts, ends, strict=True))
    ext_order = [(k, v) for k, v in lines if k not in _KNOWN]
    expected = Policy(
        mode=mode,
        max_age=min(age, MAX_AGE_CEILING),
        mx=tuple(
            MxPattern(domain=t.removeprefix("*.").lower(), wildcard=t.startswith("*."))
            for name, t in lines
            if name == "mx"
        ),
        extensions=tuple(ext_order),
    )
    return body, expected


def policy_documents(
    *,
    min_mx: int = 0,
    max_mx: int = 8,
    modes: tuple[Mode, ...] = tuple(Mode),
    duplicates: bool = True,
) -> st.SearchStrategy[tuple[str, Policy]]:
    """Valid policy bodies from the RFC 8461 §3.2 ABNF, with the policy they mean.

    Bodies mix LF and CRLF, may omit the final terminator, shuffle field order, pad
    ``max_age`` with leading zeros, add extension lines (UTF-8 values with inner
    spaces), wildcard patterns, and later duplicates of known fields.
    """
    _check(0 <= min_mx <= max_mx <= 32, f"need 0 <= min_mx <= max_mx <= 32, got {min_mx}, {max_mx}")
    _check(bool(modes) and all(isinstance(m, Mode) for m in modes), "modes must be Mode values")
    _check(min_mx > 0 or Mode.NONE in modes or max_mx > 0, "no mx allowed, but mode needs one")
    return _policy_document(min_mx, max_mx, tuple(modes), duplicates)


def policy_bodies(**kwargs: object) -> st.SearchStrategy[str]:
    """Valid policy bodies only (see :func:`policy_documents` for the arguments)."""
    return policy_documents(**kwargs).map(lambda doc: doc[0])  # type: ignore[arg-type]


@st.composite
def _rendered_policy(draw: st.DrawFn) -> tuple[str, Policy]:
    policy = draw(policy_documents(duplicates=False))[1]
    body = render_policy(policy)
    if not draw(st.booleans(), label="terminated"):
        body = body[:-1]  # POL-10: the final terminator is optional
    if draw(st.booleans(), label="crlf"):
        body = body.replace("\n", "\r\n")
    return body, policy


def rendered_policies() -> st.SearchStrategy[tuple[str, Policy]]:
    """Bodies in the usual layout :func:`render_policy` writes (version, mode, mx lines,
    max_age, extensions), LF or CRLF, with or without the final terminator, and the
    policy each one means."""
    return _rendered_policy()


_TXT_EXT_VALUE = st.text(
    st.characters(codec="ascii", min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="=;"),
    min_size=1,
    max_size=12,
)
_DELIM = st.tuples(_WSP, _WSP).map(lambda t: f"{t[0]};{t[1]}")


@st.composite
def _sts_record_document(draw: st.DrawFn) -> tuple[str, StsRecord]:
    record_id = draw(st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True))
    exts = draw(st.lists(st.tuples(ext_names(exclude=("id",)), _TXT_EXT_VALUE), max_size=4))
    fields = [f"id={record_id}"] + [f"{k}={v}" for k, v in exts]
    order = draw(st.permutations(range(len(fields))))
    text = "v=STSv1" + "".join(draw(_DELIM) + fields[i] for i in order)
    if draw(st.booleans()):
        text += draw(_DELIM)  # trailing delimiter allowed
    kept = tuple(exts[i - 1] for i in order if i > 0)
    return text, StsRecord(id=record_id, extensions=kept)


def sts_record_documents() -> st.SearchStrategy[tuple[str, StsRecord]]:
    """Valid ``_mta-sts`` records from the RFC 8461 §3.1 ABNF, with their parse."""
    return _sts_record_document()


_URI = st.one_of(
    domains(min_labels=2).map(lambda d: f"mailto:tlsrpt@{d}"),
    domains(min_labels=2).map(lambda d: f"https://{d}/tlsrpt"),
)


@st.composite
def _tlsrpt_record_document(draw: st.DrawFn) -> tuple[str, TlsRptRecord]:
    uris = draw(st.lists(_URI, min_size=1, max_size=3))
    seps = [draw(_WSP) + "," + draw(_WSP) for _ in uris[1:]]
    rua = uris[0] + "".join(s + u for s, u in zip(seps, uris[1:], strict=True))
    exts = draw(st.lists(st.tuples(ext_names(exclude=("rua",)), _TXT_EXT_VALUE), max_size=3))
    fields = [f"rua={rua}"] + [f"{k}={v}" for k, v in exts]
    order = draw(st.permutations(range(len(fields))))
    text = "v=TLSRPTv1" + "".join(draw(_DELIM) + fields[i] for i in order)
    kept = tuple(exts[i - 1] for i in order if i > 0)
    return text, TlsRptRecord(rua=tuple(uris), extensions=kept)


def tlsrpt_record_documents() -> st.SearchStrategy[tuple[str, TlsRptRecord]]:
    """Valid ``_smtp._tls`` records from the RFC 8460 §3 ABNF, with their parse."""
    return _tlsrpt_record_document()


@st.composite
def _split(draw: st.DrawFn, text: str) -> list[bytes]:
    raw = text.encode("ascii")
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def txt_rr_strings(text: str) -> st.SearchStrategy[list[bytes]]:
    """``text`` cut into character-strings at arbitrary places (DISC-8, RPT-4)."""
    _check(isinstance(text, str) and text.isascii(), f"text={text!r} must be ASCII str")
    return _split(text)
