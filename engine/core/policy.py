"""MTA-STS policy bodies: parse and render (RFC 8461 §3.2).

Strategy: the body is decoded strictly as UTF-8 and split on LF; one CR is
allowed right before each LF and nowhere else (AMB-3). Every line must then
fullmatch one compiled regex, the ABNF's generic shape shared by every field::

    name ":" *WSP value *WSP      name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
                                  value = vchar [*(SP / vchar) vchar]   (vchar: %x21-7E / UTF-8)

That one regex does the grammar work of the extension production for every
line; the four known fields then check their own value on top (version,
mode, max_age, mx). The first occurrence of a known non-mx field is the one
that counts and must be well-formed; a later duplicate only has to have the
generic shape, because the ABNF reads it as an extension and §3.2 says it is
ignored (POL-8, AMB-6). ``mx`` lines are all kept (POL-9).

Strictness: any line that breaks the grammar invalidates the whole body
(AMB-5), blank lines included (AMB-4).

Three readers, one grammar. Where the optional C extension is built
(engine/core/_policyscan.c), it reads an ASCII body in one pass and builds the
policy, or declines. The fast path (:func:`_parse_fast`) reads the usual
layout (version, mode, mx lines, max_age, extensions) with whole-line dictionary
lookups against small bounded tables of lines already found valid, and any
other order with one ``str.partition`` per line; it returns None for anything
unusual. The reference reader (:func:`_parse_lines`) walks the lines, and on
the first bad one :func:`_diagnose` works out which rule it breaks. Every body
the faster readers do not accept goes to the reference reader, so errors always
come from one place; property tests and the atheris harness check that the
readers agree, with the tables empty and filled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from engine.core.errors import MxPatternError, PolicyError
from engine.core.fastpaths import FAST_PATHS
from engine.core.mx import MxPattern, parse_mx_pattern

try:  # The optional C reader (engine/core/_policyscan.c), built when a compiler exists.
    from engine.core import _policyscan
except ImportError:  # pragma: no cover - the pure-Python install
    _policyscan = None  # type: ignore[assignment]

__all__ = ["MAX_AGE_CEILING", "Mode", "Policy", "parse_policy", "render_policy"]

MAX_AGE_CEILING = 31_557_600  # RFC 8461 §3.2: max_age up to 31557600 (one year); AMB-1

# A policy value character: VCHAR or any non-ASCII code point except surrogates
# (RFC 8461 §3.2 sts-policy-vchar = %x21-7E / UTF8-2 / UTF8-3 / UTF8-4; DEL and CTLs excluded).
_VCHAR = r"[\x21-\x7e\x80-\ud7ff\ue000-\U0010ffff]"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}"
# RFC 8461 §3.2: field ":" *WSP value, plus the record's trailing *WSP after a field.
# Possessive repeats: a line is read once, never re-tried, so time stays linear.
_LINE_RE = re.compile(rf"({_NAME}):[ \t]*+({_VCHAR}(?: *+{_VCHAR})*+)[ \t]*+")
# What has been read valid before, bounded: bodies repeat the same few provider names,
# max_age values and extension names, so most lines are recognised by one lookup.
_CACHE_SIZE = 4096
# Parsed patterns by their value, and by their whole line (``"mx: mail.example.com"``);
# the C reader shares _MX_CACHE (the same keys: the value as written).
_MX_CACHE: dict[str, MxPattern] = {}
_MX_LINES: dict[str, MxPattern] = {}
# max_age lines (``"max_age: 86400"``) and their clamped value.
_AGES: dict[str, int] = {}
# Extension field names that matched the ext-name grammar.
_EXT_NAMES: set[str] = set()
# RFC 8461 §3.2: sts-policy-max-age-value = 1*10(DIGIT).
_MAX_AGE_RE = re.compile(r"[0-9]{1,10}")
_KNOWN = frozenset(("version", "mode", "max_age", "mx"))


class Mode(StrEnum):
    """The policy mode (case-sensitive on the wire)."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


_MODES = {m.value: m for m in Mode}
# The C reader's mode numbers (engine/core/_policyscan.c).
_MODE_ORDER = (Mode.ENFORCE, Mode.TESTING, Mode.NONE)
# RFC 8461 §3.2: the mode line in its usual spelling, compared whole by _parse_usual.
_MODE_LINES = {f"mode: {m.value}": m for m in Mode}


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy.

    Attributes:
        mode: enforce / testing / none.
        max_age: seconds, already clamped to MAX_AGE_CEILING (AMB-1).
        mx: the mx patterns, in body order (cumulative, POL-9).
        version: always ``"STSv1"``.
        extensions: unknown fields kept as (name, value), in body order.
    """

    mode: Mode
    max_age: int
    mx: tuple[MxPattern, ...] = ()
    version: str = "STSv1"
    extensions: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        """RFC 8460 §4.5 ``policy-string``: one string per policy line.

        Returns:
            ``version``, ``mode``, each ``mx`` and ``max_age`` as ``"key: value"``, then the
            extensions, in the order :func:`render_policy` writes them.
        """
        out = [f"version: {self.version}", f"mode: {self.mode.value}"]
        out.extend(f"mx: {p}" for p in self.mx)
        out.append(f"max_age: {self.max_age}")
        # A known name among the extensions would be read back as a duplicate and ignored
        # (POL-8), so it is not part of the policy; parse_policy never produces one.
        out.extend(f"{k}: {v}" for k, v in self.extensions if k not in _KNOWN)
        return out


def _fail(
    reason: str,
    line: int | None,
    field: str | None,
    value: str | None,
    rule: str,
    source: str | None,
) -> PolicyError:
    return PolicyError(reason, source=source, line=line, field=field, value=value, rule=rule)


def _decode(body: bytes, source: str | None) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # RFC 8461 §3.2: the body is UTF-8 text; AMB-5: one bad byte spoils the whole body.
        line = body.count(b"\n", 0, exc.start) + 1
        bad = body[exc.start : exc.end]
        raise _fail(
            f"invalid UTF-8 at byte {exc.start}", line, None, repr(bad), "POL-17", source
        ) from None


def _diagnose(text: str, n: int, source: str | None) -> PolicyError:
    """Explain why line ``n`` does not have the generic field shape (error path only)."""
    name, colon, value = text.partition(":")
    if not text:
        # AMB-4: the ABNF has no empty lines (nor a second trailing newline).
        return _fail("empty line", n, None, text, "AMB-4", source)
    if "\r" in text:
        # AMB-3: CR only as part of CRLF.
        return _fail("bare CR (line ends are LF or CRLF)", n, None, text, "AMB-3", source)
    if not colon:
        return _fail("line is not 'key: value'", n, None, text, "POL-11", source)
    if name != name.strip(" \t"):
        # POL-11: no WSP before the key, none between the key and ':'.
        return _fail(
            "whitespace around the field name", n, name.strip(" \t"), text, "POL-11", source
        )
    field = name if name in _KNOWN else None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}", name):
        # POL-17: ext-name = 1-32 of [A-Za-z0-9_.-], starting with a letter or digit.
        return _fail("invalid field name", n, name, name, "POL-17", source)
    shown = value.strip(" \t")
    rule = {"version": "POL-3", "mode": "POL-4", "max_age": "POL-5", "mx": "POL-6"}.get(
        name, "POL-17"
    )
    if not shown:
        return _fail("empty value", n, field or name, shown, rule, source)
    if field == "mx":
        try:
            parse_mx_pattern(shown, source=source, line=n)
        except MxPatternError as exc:
            return _fail(exc.reason, n, "mx", shown, "POL-6", source)
    if "\t" in shown:
        return _fail("TAB inside a value", n, field or name, shown, rule, source)
    return _fail("control character in value", n, field or name, shown, rule, source)


def parse_policy(body: bytes | str, *, source: str | None = None) -> Policy:
    """Parse a policy body (RFC 8461 §3.2).

    Args:
        body: the HTTP response body, as bytes (decoded strictly as UTF-8) or str.
        source: where the body came from (URL or file name), for errors.

    Returns:
        The policy, with max_age clamped to :data:`MAX_AGE_CEILING`.

    Raises:
        PolicyError: the body breaks the grammar or misses a required field. The error
            names the line (when there is one), the field, the offending value and the
            requirement ID in ``rule``.
    """
    text = _decode(body, source) if isinstance(body, bytes) else body
    if _c_parse is not None:
        policy = _c_parse(text)
        if policy is not None:
            return policy
    # STS_ENGINE_NO_FAST_PATHS=1 (engine.core.fastpaths): the reference reader alone.
    policy = _parse_fast(text) if FAST_PATHS else None
    # Anything the fast path does not accept is re-read line by line, which either
    # raises the precise error or (never, if both agree) returns the same policy.
    return policy if policy is not None else _parse_lines(text, source)


def _parse_fast(text: str) -> Policy | None:
    """The common cases without the reference reader; None when anything is off.

    CRLF is turned into LF first (AMB-3: any other CR is left to the reader's error).
    A body in the usual order is read by :func:`_parse_usual`; any other order by
    :func:`_parse_any_order`. Both teach the tables of known lines as they go.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    policy = _parse_usual(text)
    return policy if policy is not None else _parse_any_order(text)


def _parse_usual(text: str) -> Policy | None:
    """``version``, ``mode``, the ``mx`` lines, ``max_age``, then any extensions.

    Written for speed, since it is what almost every published policy looks like:

    * the body is cut at its first ``"\\nmax_age: "``; the part before must be the exact
      version line, an exact mode line (:data:`_MODE_LINES`), then only ``mx`` lines;
    * each ``mx`` line is looked up whole in :data:`_MX_LINES` by ``map`` (the loop runs
      in C). That table only ever holds lines the pattern grammar accepted, so a hit is
      a complete check; on a miss (a new name, odd spacing) :func:`_learn_mx_lines`
      checks the new lines and adds them;
    * the max_age digits are checked, or found among those seen before (:data:`_AGES`);
    * each extension line is checked by ``str`` methods when its name has been seen
      valid before and its value is printable ASCII, and by :data:`_LINE_RE` otherwise.

    Returns None for any other shape.
    """
    cut = text.find("\nmax_age: ")
    if cut < 0:
        return None
    head = text[:cut].split("\n")
    if len(head) < 2 or head[0] != "version: STSv1":
        return None
    mode = _MODE_LINES.get(head[1])
    if mode is None:
        return None
    try:
        mx = tuple(map(_MX_LINES.__getitem__, head[2:]))
    except KeyError:
        learned = _learn_mx_lines(head[2:])
        if learned is None:
            return None
        mx = learned
    if not mx and mode is not Mode.NONE:
        return None  # POL-2: the reference reader reports the missing mx
    age_line, _, rest = text[cut + 1 :].partition("\n")
    age = _AGES.get(age_line)
    if age is None:
        digits = age_line[9:]
        # RFC 8461 §3.2 / POL-5: sts-policy-max-age-value = 1*10(DIGIT).
        if not (len(digits) <= 10 and digits.isdigit() and digits.isascii()):
            return None
        # AMB-1: a 10-digit max_age is clamped to one year, not rejected.
        age = min(int(digits), MAX_AGE_CEILING)
        if len(_AGES) < _CACHE_SIZE:
            _AGES[age_line] = age
    extensions: tuple[tuple[str, str], ...] = ()
    if rest:
        kept = _extensions(rest[:-1] if rest[-1] == "\n" else rest)
        if kept is None:
            return None
        extensions = kept
    return _new_policy(mode, age, mx, "STSv1", extensions)


def _learn_mx_lines(lines: list[str]) -> tuple[MxPattern, ...] | None:
    """The patterns of ``lines``, each an ``mx`` line; new ones are checked and remembered."""
    patterns = []
    for line in lines:
        pattern = _MX_LINES.get(line)
        if pattern is None:
            name, _, value = line.partition(":")
            if name != "mx":
                return None
            # RFC 8461 §3.2 / POL-6: one ["*."] Domain per mx line, WSP around it allowed.
            pattern = _cache_pattern(line, value.strip(" \t"))
            if pattern is None:
                return None
        patterns.append(pattern)
    return tuple(patterns)


def _extensions(tail: str) -> tuple[tuple[str, str], ...] | None:
    """The lines after ``max_age`` in :func:`_parse_usual`; None when one is not plain."""
    kept: list[tuple[str, str]] = []
    for line in tail.split("\n"):
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        # A name already seen valid, and a value of printable ASCII (SP allowed, TAB not)
        # that starts and ends with a VCHAR, is exactly the generic field shape.
        if not (name in _EXT_NAMES and value and value.isascii() and value.isprintable()):
            match = _LINE_RE.fullmatch(line)
            if match is None:
                return None
            value = match.group(2)
            if name not in _KNOWN and len(_EXT_NAMES) < _CACHE_SIZE:
                _EXT_NAMES.add(name)
        if name == "mx":
            return None  # POL-9: a late mx line still counts; _parse_any_order keeps it
        if name not in _KNOWN:
            # POL-7: unknown fields are kept; POL-8: a late duplicate of a known one is ignored.
            kept.append((name, value))
    return tuple(kept)


def _parse_any_order(text: str) -> Policy | None:
    """Fields in any order: each line split at its first ``:`` (``str.partition``).

    The three first-occurrence fields are checked by exact comparison, mx values through
    the pattern cache (which also learns the whole line for :func:`_parse_usual`), and
    only extension and duplicate lines go through :data:`_LINE_RE`.
    """
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # POL-10: the final terminator is optional
    first: dict[str, str] = {}
    mx: list[MxPattern] = []
    extensions: list[tuple[str, str]] = []
    for line in lines:
        name, _, value = line.partition(":")
        if name == "mx":
            pattern = _cache_pattern(line, value.strip(" \t"))
            if pattern is None:
                return None
            mx.append(pattern)
        elif name in _FIRST and name not in first:
            first[name] = value.strip(" \t")
        else:
            match = _LINE_RE.fullmatch(line)
            if match is None:
                return None
            if name not in _KNOWN:
                extensions.append((name, match.group(2)))
    mode = _MODES.get(first.get("mode", ""))
    age = first.get("max_age", "")
    if (
        first.get("version") != "STSv1"
        or mode is None
        or not (len(age) <= 10 and age.isdigit() and age.isascii())
        or (not mx and mode is not Mode.NONE)
    ):
        return None
    return _new_policy(mode, min(int(age), MAX_AGE_CEILING), tuple(mx), "STSv1", tuple(extensions))


_FIRST = frozenset(("version", "mode", "max_age"))
# Each slot's own setter: calling it skips the frozen class's __setattr__ and the
# attribute lookup that object.__setattr__ would do.
_SET_MODE, _SET_MAX_AGE, _SET_MX, _SET_VERSION, _SET_EXTENSIONS = (
    Policy.__dict__[name].__set__ for name in ("mode", "max_age", "mx", "version", "extensions")
)
_object_new = object.__new__


def _new_policy(
    mode: Mode,
    max_age: int,
    mx: tuple[MxPattern, ...],
    version: str,
    extensions: tuple[tuple[str, str], ...],
) -> Policy:
    # The frozen dataclass's own __init__ costs a third of a parse; this sets the same
    # five slots directly. tests/core/test_policy.py checks it equals Policy(...).
    policy: Policy = _object_new(Policy)
    _SET_MODE(policy, mode)
    _SET_MAX_AGE(policy, max_age)
    _SET_MX(policy, mx)
    _SET_VERSION(policy, version)
    _SET_EXTENSIONS(policy, extensions)
    return policy


# The C reader, when built: it checks a body against the same grammar and builds the
# Policy as _new_policy does, its patterns as parse_mx_pattern does (remembered in
# _MX_CACHE), or returns None.
_c_parse: Callable[[str], Policy | None] | None = None
if _policyscan is not None and FAST_PATHS:
    _policyscan.configure(Policy, _MODE_ORDER, _MX_CACHE, MxPattern)
    _c_parse = _policyscan.parse


def _cache_pattern(line: str, value: str) -> MxPattern | None:
    """The pattern for one ``mx`` line, remembered by its value and by the whole line."""
    pattern = _MX_CACHE.get(value)
    if pattern is None:
        try:
            pattern = parse_mx_pattern(value)
        except MxPatternError:
            return None
        if len(_MX_CACHE) >= _CACHE_SIZE:
            _MX_CACHE.clear()
        _MX_CACHE[value] = pattern
    if line not in _MX_LINES:
        # Only a line whose value passed the grammar is ever stored, so a hit in
        # _parse_usual is a complete check of that line.
        if len(_MX_LINES) >= _CACHE_SIZE:
            _MX_LINES.clear()
        _MX_LINES[line] = pattern
    return pattern


def _parse_lines(text: str, source: str | None) -> Policy:
    """The reference reading, one line at a time, with a precise error for each rule."""
    if not text:
        raise _fail("empty policy body", None, None, None, "POL-1", source)
    lines = text.split("\n")
    if lines[-1] == "":
        # RFC 8461 §3.2 / POL-10: the final terminator is optional.
        lines.pop()
    elif lines[-1].endswith("\r"):
        # AMB-3: a CR with no LF after it is a bare CR, even on the last line.
        raise _fail(
            "bare CR (line ends are LF or CRLF)", len(lines), None, lines[-1], "AMB-3", source
        )
    first: dict[str, tuple[str, int]] = {}
    mx: list[MxPattern] = []
    extensions: list[tuple[str, str]] = []
    match = _LINE_RE.fullmatch
    for n, line in enumerate(lines, 1):
        # RFC 8461 §3.2 sts-policy-term = LF / CRLF (erratum 6253, AMB-3): strip one CR.
        m = match(line, 0, len(line) - 1) if line.endswith("\r") else match(line)
        if m is None:
            raise _diagnose(line[:-1] if line.endswith("\r") else line, n, source)
        name, value = m.groups()
        if name == "mx":
            # POL-6: one pattern per line; POL-9: all mx lines are cumulative.
            try:
                mx.append(parse_mx_pattern(value, source=source, line=n))
            except MxPatternError as exc:
                raise _fail(exc.reason, n, "mx", value, "POL-6", source) from None
        elif name in _KNOWN:
            # POL-8 / AMB-6: the first occurrence wins; a later one is an ignored extension.
            if name not in first:
                first[name] = (value, n)
        else:
            # POL-7 / POL-12: unknown (and differently cased) names are extensions, kept.
            extensions.append((name, value))
    return _build(first, mx, extensions, source)


def _build(
    first: dict[str, tuple[str, int]],
    mx: list[MxPattern],
    extensions: list[tuple[str, str]],
    source: str | None,
) -> Policy:
    for name in ("version", "mode", "max_age"):
        if name not in first:
            # POL-1: version, mode and max_age are required.
            raise _fail(f"required field {name!r} is missing", None, name, None, "POL-1", source)
    version, n = first["version"]
    if version != "STSv1":
        # RFC 8461 §3.2 / POL-3: sts-policy-version-value = %s"STSv1".
        raise _fail("version must be exactly 'STSv1'", n, "version", version, "POL-3", source)
    raw_mode, n = first["mode"]
    mode = _MODES.get(raw_mode)
    if mode is None:
        # RFC 8461 §3.2 / POL-4: %s"testing" / %s"enforce" / %s"none", case-sensitive.
        raise _fail(
            "mode must be 'enforce', 'testing' or 'none'", n, "mode", raw_mode, "POL-4", source
        )
    raw_age, age_line = first["max_age"]
    if _MAX_AGE_RE.fullmatch(raw_age) is None:
        # RFC 8461 §3.2 / POL-5: 1*10(DIGIT); leading zeros allowed.
        raise _fail("max_age must be 1 to 10 digits", age_line, "max_age", raw_age, "POL-5", source)
    # AMB-1 (erratum 7282): parse all 10 digits, then clamp to one year instead of rejecting.
    max_age = min(int(raw_age), MAX_AGE_CEILING)
    if not mx and mode is not Mode.NONE:
        # RFC 8461 §3.2 / POL-2: at least one mx unless mode is none (reported at the mode line).
        n = first["mode"][1]
        raise _fail(
            f"mode {mode.value!r} needs at least one mx line", n, "mx", None, "POL-2", source
        )
    # POL-2(c), decided: ``mode: none`` without any mx line is VALID. The RFC requires mx
    # only for the other modes, and a none policy never checks MX hosts; the strict reading
    # of the grammar plus POL-2(c) is "valid, domain treated as having no policy".
    return Policy(
        mode=mode, max_age=max_age, mx=tuple(mx), version=version, extensions=tuple(extensions)
    )


def render_policy(policy: Policy) -> str:
    """Render ``policy`` as a body that :func:`parse_policy` reads back equal.

    Args:
        policy: the policy to write.

    Returns:
        LF-terminated lines in the order of :meth:`Policy.lines`. Extensions whose name is
        a known field are not written, since they would be read back as ignored duplicates.
    """
    return "".join(line + "\n" for line in policy.lines())
