"""Parsing ``[steps.expect]`` and the final ``[expect]`` table.

Both tables take the same keys (:class:`~harness.scenario.model.Expect`). Values are
checked here, regular expressions compiled once, so a typo in a regex is a load
error naming ``file: steps[1].expect.logs[0]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from harness.scenario.model import (
    DsnPattern,
    EventPattern,
    Expect,
    Outcome,
    ReportPattern,
    Verification,
)
from harness.world.spec.values import Node

__all__ = ["DSN_KEYS", "EXPECT_KEYS", "REPORT_KEYS", "TLS_VERSIONS", "parse_expect"]

EXPECT_KEYS = (
    "outcome",
    "via",
    "tls",
    "verified",
    "no_transaction",
    "in_clear",
    "fetches",
    "queries",
    "events",
    "no_events",
    "logs",
    "sni",
    "reports",
    "no_reports",
    "dsn",
    "faults",
)
#: Keys of one ``reports`` entry (:class:`~harness.scenario.model.ReportPattern`).
REPORT_KEYS = (
    "via",
    "to",
    "policy_domain",
    "policy_type",
    "success",
    "failure",
    "result_types",
    "mx_host",
    "policy_string",
    "failure_reason_code",
    "content_type",
    "fields",
    "mail",
    "policies",
)
#: Keys of the ``dsn`` table (:class:`~harness.scenario.model.DsnPattern`).
DSN_KEYS = ("to", "action", "status", "rcpt")
_VIA = ("https", "mailto")
_POLICY_TYPES = ("sts", "tlsa", "no-policy-found")
_DSN_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "none")


def _regex(node: Node, text: str) -> None:
    try:
        re.compile(text)
    except re.error as exc:
        raise node.error(f"not a valid regular expression: {exc}") from None


def _matcher(node: Node) -> Any:
    value = node.value
    if isinstance(value, str) and value.startswith("~"):
        _regex(node, value[1:])
    if isinstance(value, Mapping):
        raise node.error("a field matcher is a value or a '~regex'; use 'a.b' for nested fields")
    return value


def _event(node: Node) -> EventPattern:
    entries = node.mapping()
    if "code" not in entries:
        raise node.error("an event pattern needs a 'code'")
    code = entries.pop("code")
    code.text()
    return EventPattern(code=_matcher(code), fields={k: _matcher(n) for k, n in entries.items()})


def _outcome(node: Node) -> Outcome | dict[str, Outcome]:
    if isinstance(node.value, str):
        return node.choice(Outcome)
    per = node.mapping()
    if not per:
        raise node.error("expected an outcome or a table of recipient = outcome")
    return {rcpt.lower(): n.choice(Outcome) for rcpt, n in per.items()}


def _count(node: Node) -> int:
    return node.integer(0, 1_000_000)


def _tls(node: Node) -> str:
    text = node.text()
    if text not in TLS_VERSIONS:
        raise node.error(f"{text!r} is not a TLS version", TLS_VERSIONS)
    return text


def _text_matcher(node: Node) -> str:
    text = node.text()
    if text.startswith("~"):
        _regex(node, text[1:])
    return text


def _one_of(node: Node, allowed: tuple[str, ...]) -> str:
    text = node.text()
    if text not in allowed:
        raise node.error(f"{text!r} is not one of {', '.join(allowed)}", allowed)
    return text


def _report(node: Node) -> ReportPattern:
    e = node.table(REPORT_KEYS)
    kw: dict[str, Any] = {}
    if "via" in e:
        kw["via"] = _one_of(e["via"], _VIA)
    if "policy_type" in e:
        kw["policy_type"] = _one_of(e["policy_type"], _POLICY_TYPES)
    if "policy_domain" in e:
        kw["policy_domain"] = e["policy_domain"].text().rstrip(".").lower()
    for key in ("to", "failure_reason_code", "content_type"):
        if key in e:
            kw[key] = _text_matcher(e[key])
    for key in ("success", "failure", "policies"):
        if key in e:
            kw[key] = _count(e[key])
    if "result_types" in e:
        kw["result_types"] = tuple(sorted(e["result_types"].strings()))
    if "mx_host" in e:
        kw["mx_host"] = tuple(e["mx_host"].strings())
    if "policy_string" in e:
        kw["policy_string"] = tuple(e["policy_string"].strings())
    for key in ("fields", "mail"):
        if key in e:
            kw[key] = {k: _matcher(n) for k, n in e[key].mapping().items()}
    return ReportPattern(**kw)


def _dsn(node: Node) -> DsnPattern:
    e = node.table(DSN_KEYS, required=("to",))
    to = e["to"].text().lower()
    if "@" not in to:
        raise e["to"].error(f"{to!r} is not an address (no '@')")
    return DsnPattern(
        to=to,
        action=_one_of(e["action"], _DSN_ACTIONS) if "action" in e else "failed",
        status=_text_matcher(e["status"]) if "status" in e else None,
        rcpt=e["rcpt"].text().lower() if "rcpt" in e else None,
    )


def parse_expect(node: Node) -> Expect:
    """An expectation table.

    Raises:
        SpecError: an unknown key or a bad value, named by its key path.
    """
    e = node.table(EXPECT_KEYS)
    kw: dict[str, Any] = {}
    if "outcome" in e:
        kw["outcome"] = _outcome(e["outcome"])
    if "via" in e:
        kw["via"] = e["via"].text().rstrip(".").lower()
    if "tls" in e:
        kw["tls"] = _tls(e["tls"])
    if "verified" in e:
        kw["verified"] = e["verified"].choice(Verification)
    if "no_transaction" in e:
        kw["no_transaction"] = tuple(h.rstrip(".").lower() for h in e["no_transaction"].strings())
    if "in_clear" in e:
        kw["in_clear"] = e["in_clear"].boolean()
    if "fetches" in e:
        f = e["fetches"]
        if isinstance(f.value, Mapping):
            kw["fetches"] = {h.lower(): _count(n) for h, n in f.mapping().items()}
        else:
            kw["fetches"] = _count(f)
    if "queries" in e:
        queries = {}
        for key, n in e["queries"].mapping().items():
            parts = key.split()
            if len(parts) not in (1, 2):
                raise n.error(f"expected 'name TYPE' or 'name', got {key!r}")
            name = parts[0].rstrip(".").lower()
            queries[f"{name} {parts[1].upper()}" if len(parts) == 2 else name] = _count(n)
        kw["queries"] = queries
    for key in ("events", "no_events"):
        if key in e:
            kw[key] = tuple(_event(n) for n in e[key].items())
    if "logs" in e:
        logs = []
        for n in e["logs"].items():
            _regex(n, n.text())
            logs.append(n.value)
        kw["logs"] = tuple(logs)
    if "sni" in e:
        s = e["sni"]
        if isinstance(s.value, Mapping):
            kw["sni"] = {h.lower(): n.text() for h, n in s.mapping().items()}
        else:
            kw["sni"] = s.text()
    if "reports" in e:
        reports = e["reports"].items()
        if not reports:
            raise e["reports"].error("expected at least one report entry (or no_reports = true)")
        kw["reports"] = tuple(_report(n) for n in reports)
    if "no_reports" in e:
        kw["no_reports"] = e["no_reports"].boolean()
    if "dsn" in e:
        kw["dsn"] = _dsn(e["dsn"])
    if "faults" in e:
        faults = {}
        for host, n in e["faults"].mapping().items():
            for one in [n] if isinstance(n.value, str) else n.items():
                if one.text().startswith("~"):
                    _regex(one, one.text()[1:])
            faults[host.rstrip(".").lower()] = n.strings()
        kw["faults"] = faults
    return Expect(**kw)
