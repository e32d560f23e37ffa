"""MX host names and policy ``mx`` patterns (RFC 8461 §3.2, §4.1).

Strategy: a pattern is validated once, with one compiled regex built from the
RFC 5321 ``Domain`` ABNF, and stored as lower-case A-labels without a root
dot. A host (an MX RR target, or the domain itself for an implicit MX) is
normalised the same way before comparing: root dot removed, U-labels turned
into A-labels, ASCII case folded. Matching is then plain string work: equality
for an exact pattern, and "drop exactly the leftmost label, then equality" for
a ``*.`` pattern, so a pattern can never act as a suffix match (MX-3, MX-4).

A-label conversion uses the ``idna`` package (IDNA 2008 with UTS #46 mapping),
which httpx already depends on; the stdlib ``encodings.idna`` codec implements
IDNA 2003 (it maps ``ß`` to ``ss`` instead of encoding it) and is used only as
a fallback when ``idna`` is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.core.errors import MxPatternError

try:
    import idna as _idna
except ImportError:  # pragma: no cover - idna ships with httpx
    _idna = None  # type: ignore[assignment]

__all__ = [
    "MAX_DOMAIN_LENGTH",
    "MxPattern",
    "is_domain",
    "mx_matches",
    "normalize_host",
    "parse_mx_pattern",
    "policy_permits",
]

# RFC 1035 §2.3.4: 255 octets on the wire, i.e. 253 characters in text form.
MAX_DOMAIN_LENGTH = 253

# RFC 5321 §4.1.2: sub-domain = Let-dig [Ldh-str]; Ldh-str = *(ALPHA / DIGIT / "-") Let-dig.
# RFC 1035 §2.3.4: a label is at most 63 octets. No underscore (POL-6: ``mx_1`` is invalid).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain). The grammar as written; the
# checks use _is_ldh_domain, which a property test holds to this regex.
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True, slots=True)
class MxPattern:
    """One ``mx`` pattern: an optional ``*.`` and a domain (lower-case A-labels, no root dot)."""

    domain: str
    wildcard: bool = False

    def __str__(self) -> str:
        return f"*.{self.domain}" if self.wildcard else self.domain


def is_domain(text: str) -> bool:
    """Whether ``text`` is an RFC 5321 ``Domain`` in ASCII (no root dot, no wildcard).

    Args:
        text: the candidate name.

    Returns:
        True when every label is LDH, 1–63 characters, and the name is at most 253 characters.
    """
    return _is_ldh_domain(text)


def parse_mx_pattern(text: str, *, source: str | None = None, line: int | None = None) -> MxPattern:
    """Parse one ``mx`` pattern value.

    Args:
        text: the value after ``mx:``, without surrounding whitespace.
        source: where the text came from, for the error.
        line: the policy line, for the error.

    Returns:
        The pattern, lower-cased.

    Raises:
        MxPatternError: the value is not ``["*."] Domain`` in ASCII (rule ``POL-6``).
    """
    # RFC 8461 §3.2: mx = ["*."] Domain; only the whole leftmost label may be "*".
    wildcard = text.startswith("*.")
    domain = text[2:] if wildcard else text
    if not _is_ldh_domain(domain):
        raise MxPatternError(
            _why_invalid(text), source=source, line=line, field="mx", value=text, rule="POL-6"
        )
    # RFC 8461 §4.1 (via RFC 6125 §6.4.1): comparison is ASCII case-insensitive.
    pattern: MxPattern = _object_new(MxPattern)
    _SET_DOMAIN(pattern, domain.lower())
    _SET_WILDCARD(pattern, wildcard)
    return pattern


# The frozen dataclass's __init__ costs as much as the check; these set its two slots
# directly (tests/core/test_mx.py checks the result equals MxPattern(...)).
_object_new = object.__new__
_SET_DOMAIN = MxPattern.__dict__["domain"].__set__
_SET_WILDCARD = MxPattern.__dict__["wildcard"].__set__


def _is_ldh_domain(name: str) -> bool:
    """Whether ``name`` fullmatches :data:`_DOMAIN_RE` and fits MAX_DOMAIN_LENGTH.

    The same test as the regex, done with ``str`` methods (several times faster, and
    the parser runs it for every mx line it has not seen before); a property test
    checks the two agree.
    """
    return (
        0 < len(name) <= MAX_DOMAIN_LENGTH
        and name.isascii()
        # RFC 5321 §4.1.2: letters, digits, hyphens and the dots between labels only.
        and name.replace("-", "a").replace(".", "a").isalnum()
        # No empty label, and no label that starts or ends with a hyphen.
        and name[0] not in ".-"
        and name[-1] not in ".-"
        and ".." not in name
        and ".-" not in name
        and "-." not in name
        # RFC 1035 §2.3.4: a label is at most 63 octets.
        and (len(name) <= 63 or max(map(len, name.split("."))) <= 63)
    )


def _why_invalid(text: str) -> str:
    """One sentence naming what makes ``text`` an invalid pattern (error path only)."""
    if not text:
        return "empty mx pattern"
    if not text.isascii():
        # POL-16, AMB-7: IDNs must be written as A-labels in the policy.
        return "mx pattern contains non-ASCII characters; IDNs must be A-labels (xn--...)"
    if text.endswith("."):
        # AMB-7: the root dot is not part of an RFC 5321 Domain.
        return "mx pattern ends with a dot; write it without the root dot"
    if text.startswith("."):
        # AMB-32: ``.example.com`` is the draft-era suffix syntax.
        return "mx pattern starts with a dot (draft-era suffix syntax); use '*.'"
    if "*" in text:
        return "'*' is allowed only as the whole leftmost label, followed by '.'"
    if any(c in text for c in " \t,;"):
        return "one mx pattern per 'mx:' line; lists are not allowed"
    if len(text) > MAX_DOMAIN_LENGTH:
        return f"domain longer than {MAX_DOMAIN_LENGTH} characters"
    for label in text.split("."):
        if not label:
            return "empty label"
        if len(label) > 63:
            return f"label {label!r} is longer than 63 characters"
        if label.startswith("-") or label.endswith("-"):
            return f"label {label!r} starts or ends with a hyphen"
    return "not a domain: labels are letters, digits and inner hyphens"


def normalize_host(name: str) -> str:
    """A DNS host name as compared: A-labels, lower case, root dot removed.

    Args:
        name: an MX RR target or a domain, with or without the root dot, in any case,
            with U-labels or A-labels.

    Returns:
        The name in lower-case A-labels without the trailing dot.

    Raises:
        MxPatternError: the name is empty, has empty labels, or cannot be turned into
            A-labels (rule ``MX-2``).
    """
    # RFC 8461 §4.1 / AMB-7: the root dot is ignored when comparing.
    host = name[:-1] if name.endswith(".") else name
    if not host.isascii():
        # RFC 8461 §3.2, POL-16: compare on A-labels.
        host = _to_alabels(host)
    if not host or ".." in host or host.startswith("."):
        raise MxPatternError("empty label in host name", value=name, rule="MX-2")
    # RFC 8461 §4.1: ASCII case-insensitive (the name is ASCII by now).
    return host.lower()


def _to_alabels(host: str) -> str:
    try:
        if _idna is not None:
            return _idna.encode(host, uts46=True).decode("ascii")
        return host.encode("idna").decode("ascii")  # pragma: no cover - fallback only
    except (UnicodeError, ValueError) as exc:  # idna.IDNAError is a UnicodeError
        raise MxPatternError(
            f"cannot convert host name to A-labels: {exc}", value=host, rule="MX-2"
        ) from exc


def mx_matches(pattern: MxPattern, host: str) -> bool:
    """Whether ``host`` (an MX RR target) matches ``pattern``.

    Args:
        pattern: a parsed policy pattern.
        host: the MX RR target (not a CNAME expansion, MX-5), in any case, with or
            without the root dot.

    Returns:
        True on a match. A host that cannot be normalised matches nothing.
    """
    try:
        name = normalize_host(host)
    except MxPatternError:
        return False
    return _match_normalized(pattern, name)


def _match_normalized(pattern: MxPattern, name: str) -> bool:
    if not pattern.wildcard:
        # MX-4: exact comparison, never a suffix match.
        return name == pattern.domain
    # RFC 8461 §4.1 / MX-3: "*." matches exactly one extra leftmost label.
    first, dot, rest = name.partition(".")
    return bool(first) and bool(dot) and rest == pattern.domain


def policy_permits(patterns: Iterable[MxPattern], host: str) -> bool:
    """Whether any pattern matches ``host``.

    Args:
        patterns: the policy's ``mx`` patterns (cumulative, POL-9).
        host: the MX RR target.

    Returns:
        True when at least one pattern matches (MX-1).
    """
    try:
        name = normalize_host(host)
    except MxPatternError:
        return False
    return any(_match_normalized(p, name) for p in patterns)
