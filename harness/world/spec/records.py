"""Parts of the world spec that are small languages: raw records, TLSA, SMTP replies.

Each parser takes a :class:`~engine.core.tomlnode.TomlNode` and returns a checked
value or raises :class:`~engine.core.errors.ConfigError` at the node's key path.
"""

from __future__ import annotations

from typing import Any

from engine.core.tomlnode import TomlNode
from harness.world.dns.records import AAAA, CNAME, MX, TLSA, TXT, A, RData, ZoneError
from harness.world.dns.zones import DnssecStatus
from harness.world.mta.script import STAGES, Action, Script, parse_action
from harness.world.spec.model import RecordSpec
from harness.world.spec.values import member_of, name_of, strings_of

__all__ = ["ALL_RCPTS", "parse_record", "parse_replies", "parse_tlsa"]

_TYPES = ("A", "AAAA", "CNAME", "MX", "TLSA", "TXT")
_STAGES = STAGES
#: ``rcpt = "<reply>"`` scripts this many RCPTs by position (RFC 5321 §4.5.3.1.8: a
#: server must accept at least 100 recipients, so no sane transaction has more).
ALL_RCPTS = 100


def _words(node: TomlNode, count: int) -> list[Any]:
    """``"a b c"`` or ``[a, b, c]`` as a list of ``count`` raw values."""
    if isinstance(node.value, str):
        words: list[Any] = node.value.split(None, count - 1)
    else:
        words = [n.value for n in node.items()]
    if len(words) != count:
        raise node.bad(f"{count} fields")
    return words


def parse_tlsa(node: TomlNode, *, raw: bool = False) -> Any:
    """``[usage, selector, mtype]`` (raw: ``"u s m HEX"`` or ``[u, s, m, "HEX"]``).

    Returns:
        ``(u, s, m)``, or ``(u, s, m, data)`` when ``raw``.
    """
    words = _words(node, 4 if raw else 3)
    try:
        numbers = tuple(int(w) for w in words[:3])
    except (TypeError, ValueError):
        raise node.bad("integers for usage, selector and matching type") from None
    if any(not 0 <= n <= 255 for n in numbers):
        raise node.bad("usage, selector and matching type in 0..255")
    if not raw:
        return numbers
    try:
        data = bytes.fromhex(str(words[3]))
    except ValueError:
        raise node.bad("TLSA data in hex") from None
    return (*numbers, data)


def _rdata(rrtype: str, value: TomlNode) -> RData:
    try:
        if rrtype in ("A", "AAAA"):
            return A(value.text()) if rrtype == "A" else AAAA(value.text())
        if rrtype == "MX":
            pref, exchange = _words(value, 2)
            return MX(int(pref), str(exchange))
        if rrtype == "TXT":
            return TXT(tuple(s.encode() for s in strings_of(value)))
        if rrtype == "CNAME":
            return CNAME(value.text())
        u, s, m, data = parse_tlsa(value, raw=True)
        return TLSA(u, s, m, data)
    except (ZoneError, ValueError) as exc:
        raise value.error(str(exc)) from None


def parse_record(node: TomlNode) -> RecordSpec:
    """One ``[[records]]`` entry: ``name``, ``type``, ``value``, optional ``ttl``, ``dnssec``.

    ``value`` is presentation text (``"10 mx.example.net"``, ``"3 1 1 AB.."``), or for
    MX/TLSA a list of fields, or for TXT a list of character-strings (one RR).
    """
    e = node.table(("name", "type", "value", "ttl", "dnssec"), required=("name", "type", "value"))
    rrtype = str(e["type"].value).upper()
    if rrtype not in _TYPES:
        raise e["type"].bad(f"a record type: one of {', '.join(_TYPES)}", _TYPES)
    return RecordSpec(
        name=name_of(e["name"]),
        rdata=_rdata(rrtype, e["value"]),
        ttl=e["ttl"].integer(0, 2**31 - 1) if "ttl" in e else None,
        dnssec=member_of(e["dnssec"], DnssecStatus) if "dnssec" in e else None,
    )


def _action(node: TomlNode) -> Action:
    try:
        return parse_action(node.text())
    except ValueError as exc:
        raise node.error(str(exc)) from None


def parse_replies(node: TomlNode) -> Script:
    """A host's ``replies`` table as a :class:`~harness.world.mta.script.Script`.

    Stages (``banner``, ``ehlo``, ``helo``, ``starttls``, ``mail``, ``data_start``,
    ``data``) take ``"<code> <text>"``, ``"disconnect"`` or a fault (``"reset"``,
    ``"stall"``, ``"malformed"``, ``"multiline-broken"``). ``rcpt`` is one action for
    every recipient, or a table by recipient address; ``rcpt_by_index`` a list by
    position.
    """
    e = node.table((*_STAGES, "rcpt", "rcpt_by_index"))
    stages = {k: _action(e[k]) for k in _STAGES if k in e}
    by_address: dict[str, Action] = {}
    by_index: dict[int, Action] = {}
    if "rcpt" in e:
        if isinstance(e["rcpt"].value, str):
            every = _action(e["rcpt"])
            by_index = dict.fromkeys(range(ALL_RCPTS), every)
        else:
            by_address = {k: _action(v) for k, v in e["rcpt"].table().items()}
    if "rcpt_by_index" in e:
        by_index.update({i: _action(n) for i, n in enumerate(e["rcpt_by_index"].items())})
    try:
        return Script(rcpt=by_address, rcpt_by_index=by_index, **stages)
    except ValueError as exc:
        raise node.error(str(exc)) from None
