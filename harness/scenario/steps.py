"""Parsing ``[[steps]]``: one action per step, checked against the world it will act on.

Every step table holds exactly one action key (:class:`~harness.scenario.model.StepKind`)
and optionally ``expect``. Mutations are checked here, at load time, with the world
spec's own parsers, so ``update_domain = {domain = "example.com", polcy = "..."}``
fails when the file is read, naming ``file: steps[2].update_domain.polcy``, not
half-way through a run.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from certs import CertProfile
from engine.core.tomlnode import TomlNode
from harness.errors import SpecError
from harness.scenario.expect import parse_expect
from harness.scenario.model import SendSpec, Step, StepKind
from harness.world.dns.answer import DnsBehaviour
from harness.world.dns.zones import DnssecStatus
from harness.world.spec import WorldSpec, domain_from, name_of
from harness.world.spec.values import strings_of
from harness.world.web.behaviour import PolicyResponse

__all__ = ["CLEAR_DNS", "parse_duration", "parse_step"]

#: ``set_dns`` behaviour that removes the rule for that name and type.
CLEAR_DNS = "clear"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_POLICY_KEYS = (
    "domain",
    "body",
    "cert",
    *(f.name for f in fields(PolicyResponse) if f.name != "body"),
)
_DNS_KEYS = ("name", "type", "behaviour", "delay_ms")
_CERT_KEYS = ("host", "profile", "names", "update_tlsa")
_SEND_KEYS = ("from", "to", "data", "final")


def parse_duration(node: TomlNode) -> float:
    """Seconds from ``90``, ``1.5``, ``"90s"``, ``"2h"``, ``"1d"`` or ``"1h30m"``.

    Raises:
        SpecError: not a non-negative number or a duration string.
    """
    value = node.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return node.number(at_least=0, expected="a duration of 0 seconds or more")
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _PART.sub("", text) == "":
            return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    raise node.bad("a duration: seconds (90) or a string such as '90s', '15m', '2h', '1d', '1h30m'")


def _send(node: TomlNode) -> SendSpec:
    e = node.table(_SEND_KEYS, required=("from", "to"))
    rcpts = strings_of(e["to"])
    if not rcpts:
        raise e["to"].bad("at least one recipient")
    for i, rcpt in enumerate(rcpts):
        if "@" not in rcpt:
            raise e["to"].child(i, rcpt).bad("an address (local@domain)")
    data = None
    if "data" in e:
        data = e["data"].text().replace("\r\n", "\n").replace("\n", "\r\n").encode()
    final = e["final"].boolean() if "final" in e else False
    return SendSpec(e["from"].text(), rcpts, data, final)


def _update_domain(node: TomlNode, world: WorldSpec) -> dict[str, Any]:
    name = name_of(node.table(required=("domain",))["domain"])
    changes = {k: v for k, v in node.value.items() if k != "domain"}
    # The world's own parser, over a node at this key path, so errors name the step.
    domain_from(TomlNode(changes, node.file, node.path), name, world.domains.get(name))
    return {"domain": name, **changes}


def _update_policy(node: TomlNode) -> dict[str, Any]:
    e = node.table(_POLICY_KEYS, required=("domain",))
    name_of(e["domain"])
    if "body" in e:
        e["body"].text()
    if "cert" in e:
        e["cert"].member(CertProfile)
    if "status" in e:
        e["status"].integer(100, 599)
    return {k: n.value for k, n in e.items()}


def _set_dns(node: TomlNode) -> dict[str, Any]:
    e = node.table(_DNS_KEYS, required=("name", "behaviour"))
    allowed = [b.value for b in DnsBehaviour] + [s.value for s in DnssecStatus] + [CLEAR_DNS]
    e["behaviour"].choice(allowed)
    rrtype = e["type"].text().upper() if "type" in e else None
    return {
        "name": name_of(e["name"]),
        "rrtype": None if rrtype in (None, "*") else rrtype,
        "behaviour": None if e["behaviour"].value == CLEAR_DNS else e["behaviour"].value,
        "delay_ms": e["delay_ms"].integer(0, 600_000) if "delay_ms" in e else 0,
    }


def _rotate_cert(node: TomlNode) -> dict[str, Any]:
    e = node.table(_CERT_KEYS, required=("host", "profile"))
    e["profile"].member(CertProfile)
    return {
        "host": name_of(e["host"]),
        "profile": e["profile"].value,
        "names": tuple(name_of(n) for n in e["names"].items()) if "names" in e else None,
        "update_tlsa": e["update_tlsa"].boolean() if "update_tlsa" in e else False,
    }


def _label(kind: StepKind, args: Any) -> str:
    if kind is StepKind.SEND:
        return f"send {args.mail_from} -> {', '.join(args.rcpts)}"
    if kind is StepKind.ADVANCE:
        return f"advance {args:g}s"
    if kind is StepKind.RESTART_ENGINE:
        return "restart engine"
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if v not in (None, False))
    return f"{kind.value} {shown}"


def parse_step(node: TomlNode, index: int, world: WorldSpec) -> Step:
    """One ``[[steps]]`` table.

    Args:
        node: the table, at key path ``steps[i]``.
        index: its position.
        world: the scenario's world (mutations are checked against it).

    Raises:
        SpecError: not exactly one action, an unknown key, or a bad value.
    """
    allowed = [k.value for k in StepKind] + ["expect"]
    e = node.table(allowed)
    actions = [k for k in e if k != "expect"]
    if len(actions) != 1:
        kinds = [k.value for k in StepKind]
        what = "none" if not actions else ", ".join(actions)
        raise SpecError(
            f"a step has exactly one action of {', '.join(kinds)} (found {what})",
            file=node.file,
            key=node.path,
            allowed=kinds,
        )
    kind = StepKind(actions[0])
    a = e[kind.value]
    args: Any
    if kind is StepKind.SEND:
        args = _send(a)
    elif kind is StepKind.ADVANCE:
        args = parse_duration(a)
    elif kind is StepKind.RESTART_ENGINE:
        if a.value is not True:
            raise a.bad("true (restart_engine = true)")
        args = True
    elif kind is StepKind.UPDATE_DOMAIN:
        args = _update_domain(a, world)
    elif kind is StepKind.UPDATE_POLICY:
        args = _update_policy(a)
    elif kind is StepKind.SET_DNS:
        args = _set_dns(a)
    else:
        args = _rotate_cert(a)
    expect = parse_expect(e["expect"]) if "expect" in e else None
    step = Step(index, kind, args, label=_label(kind, args))
    return step if expect is None else Step(index, kind, args, expect, step.label)
