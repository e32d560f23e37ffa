"""The oracle: our strict readers' verdict on one input, with the rule behind it.

Theory of operation
-------------------
A verdict says *accept* or *reject* and names one rule id (docs/requirements.md
``POL-n`` / ``DISC-n``, docs/decisions.md ``AMB-n``) and a one-line reason without
the input's own values, so that two inputs that fail the same way get the same
(rule, reason) pair. That pair is what makes two disagreements "the same".

* A rejected input gets the rule of the error our reader raised
  (:func:`engine.core.policy.parse_policy`, :func:`engine.core.txt.select_sts_record`
  on a one-record RRset). One refinement: an ``mx`` pattern ending in a root dot is
  reported as AMB-7, since docs/decisions.md calls stripping the dot a tolerated
  leniency.
* An accepted input has no error to name, so :func:`_policy_features` and
  :func:`_txt_features` list what the input exercises (UTF-8 in a value is POL-17,
  a ``max_age`` above one year AMB-1, a malformed later duplicate AMB-6, a
  capitalised field name POL-12, CRLF POL-10 ...), rarest first, and the first one
  names the verdict. The fuzzer shrinks a disagreement on a valid input by dropping
  features (:mod:`harness.parserfuzz.fuzz`), so the smallest input's first feature
  is the one the target tripped over; the corpus keeps the whole list.

:data:`BOTH_DEFENSIBLE` lists the AMB cases where docs/decisions.md holds that a
reader taking the other side is still defensible; a disagreement on one of them is
marked so, the others are plain deviations.

Nothing here does I/O; the C reader, where built, is used by ``parse_policy`` itself
and is held to the Python reference reader by tests/core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from engine.core.errors import PolicyError
from engine.core.policy import MAX_AGE_CEILING, Mode, Policy, parse_policy
from engine.core.txt import NoStsReason, StsRecord, select_sts_record

_KNOWN = ("version", "mode", "max_age", "mx")

__all__ = ["BOTH_DEFENSIBLE", "Kind", "OracleVerdict", "judge"]


class Kind(StrEnum):
    """What a target parses."""

    POLICY = "policy"  # an RFC 8461 §3.2 policy body
    TXT = "txt"  # one joined RFC 8461 §3.1 ``_mta-sts`` TXT record


# AMB cases where docs/decisions.md says the other reading is defensible too.
BOTH_DEFENSIBLE: dict[str, str] = {
    "AMB-1": "the grammar allows 10 digits, the prose a one-year maximum (erratum 7282)",
    "AMB-2": "the ABNF allows WSP before ';', the discard rule keys on 'v=STSv1;'",
    "AMB-4": "a lenient reader may skip empty lines if nothing else changes",
    "AMB-7": "stripping the root dot of an mx pattern is a tolerated leniency",
}


@dataclass(frozen=True, slots=True)
class OracleVerdict:
    """Our strict reader's verdict on one input.

    Attributes:
        accept: True when RFC 8461 (as this project reads it) allows the input.
        rule: the requirement or decision id: the rule broken (reject) or the one that
            allows what the input exercises (accept).
        reason: one line without the input's values; with ``rule`` it keys a finding.
        detail: our reader's full message (reject) or what it read (accept).
        features: on accept, every particular thing the input exercises, rarest first
            (``reason`` is the first; a plain valid input has just that); empty on reject.
            Each is ``"RULE: reason"``.
    """

    accept: bool
    rule: str
    reason: str
    detail: str
    features: tuple[str, ...] = ()


def judge(kind: Kind, data: bytes) -> OracleVerdict:
    """Our verdict on ``data`` read as ``kind``.

    Args:
        kind: a policy body or a TXT record.
        data: the input bytes, exactly as a target gets them.

    Returns:
        The verdict with its rule id.
    """
    if kind is Kind.POLICY:
        return _judge_policy(data)
    return _judge_txt(data)


def _generic(reason: str) -> str:
    # Values inside reasons (byte offsets, quoted characters) would split one finding
    # into many: keep the words.
    reason = re.sub(r"character '.*' in", "character in", reason)
    reason = re.sub(r"0x[0-9a-f]{2}", "0xNN", reason)
    reason = re.sub(r"label '[^']*'", "label", reason)
    return re.sub(r"(byte|offset) \d+\b", r"\1 N", reason)


def _judge_policy(data: bytes) -> OracleVerdict:
    try:
        policy = parse_policy(data)
    except PolicyError as exc:
        rule = exc.rule or "POL-1"
        if rule == "POL-6" and exc.reason.startswith("mx pattern ends with a dot"):
            rule = "AMB-7"  # docs/decisions.md AMB-7: the root dot
        return OracleVerdict(False, rule, _generic(exc.reason), str(exc))
    features = _policy_features(data.decode("utf-8"), policy)
    detail = f"valid: mode {policy.mode.value}, {len(policy.mx)} mx, max_age {policy.max_age}"
    return OracleVerdict(True, *features[0], detail, _listed(features))


def _listed(features: list[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(f"{rule}: {reason}" for rule, reason in features)


def _fields(text: str) -> list[tuple[str, str]]:
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()
    out = []
    for line in lines:
        name, _, value = line.removesuffix("\r").partition(":")
        out.append((name, value))
    return out


def _policy_features(text: str, policy: Policy) -> list[tuple[str, str]]:
    """Every particular thing a valid body exercises, as (rule, reason), rarest first."""
    fields = _fields(text)
    names = [n for n, _ in fields]
    firsts: dict[str, str] = {}
    for name, value in fields:
        firsts.setdefault(name, value.strip(" \t"))
    age = firsts["max_age"]
    later = [(n, v.strip(" \t")) for i, (n, v) in enumerate(fields) if n in names[:i]]
    known_dups = [(n, v) for n, v in later if n in ("version", "mode", "max_age")]
    differs = any(v != firsts[n] for n, v in known_dups)
    recased = [n for n in names if n.lower() in _KNOWN and n not in _KNOWN]
    plain_exts = [n for n, v in policy.extensions if n.lower() not in _KNOWN and v.isascii()]
    found = [
        (not text.isascii(), "POL-17", "UTF-8 in an extension value"),
        (int(age) > MAX_AGE_CEILING, "AMB-1", "max_age above one year (clamped)"),
        (differs, "AMB-6", "a later duplicate of a known field differs (ignored)"),
        (bool(known_dups) and not differs, "POL-8", "a known field repeated (the first counts)"),
        (bool(recased), "POL-12", "a known field name in another case (an extension)"),
        (policy.mode is Mode.NONE and not policy.mx, "POL-2", "mode none without mx"),
        (int(age) == 0, "AMB-13", "max_age 0"),
        (0 < int(age) < 86400, "AMB-35", "max_age below one day"),
        (bool(plain_exts), "POL-7", "an unknown field"),
        ("\r" in text, "POL-10", "CRLF line ends"),
        (not text.endswith("\n"), "POL-10", "no line end after the last line"),
        (age != str(int(age)), "POL-5", "max_age with leading zeros"),
        (any(p.wildcard for p in policy.mx), "POL-6", "a wildcard mx pattern"),
        (
            any(n == "mx" and v.strip(" \t") != v.strip(" \t").lower() for n, v in fields),
            "POL-6",
            "an mx pattern in upper case",
        ),
        (
            any(v != " " + v.strip(" \t") for _, v in fields),
            "POL-11",
            "spaces or tabs around a value other than one space",
        ),
        (names[:2] != ["version", "mode"], "POL-13", "fields in another order"),
        (len(policy.mx) > 1, "POL-9", "several mx lines"),
    ]
    return [(rule, reason) for present, rule, reason in found if present] or [
        ("POL-1", "a plain valid policy")
    ]


def _judge_txt(data: bytes) -> OracleVerdict:
    chosen = select_sts_record([[data]])
    if isinstance(chosen, StsRecord):
        features = _txt_features(data.decode("ascii"), chosen)
        detail = f"valid: id {chosen.id!r}, {len(chosen.extensions)} extensions"
        return OracleVerdict(True, *features[0], detail, _listed(features))
    if chosen.reason is NoStsReason.NO_STS_RECORD:
        # DISC-3 / AMB-2: a record counts only when it begins with v=STSv1 + ';', WSP or end.
        return OracleVerdict(
            False, "DISC-3", "not an STS record (no leading v=STSv1)", chosen.detail
        )
    error = chosen.error
    assert error is not None, chosen  # INVALID always carries the parse error
    return OracleVerdict(False, error.rule or "DISC-6", _generic(error.reason), str(error))


def _txt_features(text: str, record: StsRecord) -> list[tuple[str, str]]:
    """Every particular thing a valid record exercises, as (rule, reason), rarest first."""
    names = [n for n, _ in record.extensions]
    # The delimiters between fields: not the one after the tag (AMB-2), not a trailing one.
    inner = re.sub(r"[ \t]*;[ \t]*$", "", text)[7:].lstrip(" \t")
    found = [
        ("v" in names, "DISC-10", "an unknown field named 'v'"),
        (text[7:8] in (" ", "\t"), "AMB-2", "whitespace before the first ';'"),
        (bool(names) and "v" not in names, "DISC-10", "an unknown field"),
        (bool(re.search(r";[ \t]*$", text)), "DISC-10", "a trailing ';'"),
        (
            any(d not in (";", "; ") for d in re.findall(r"[ \t]*;[ \t]*", inner)),
            "DISC-10",
            "spaces or tabs around ';' other than one space after it",
        ),
        (len(record.id) == 32, "DISC-7", "an id of 32 characters"),
    ]
    return [(rule, reason) for present, rule, reason in found if present] or [
        ("DISC-3", "a plain valid record")
    ]
