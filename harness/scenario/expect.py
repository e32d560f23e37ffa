"""Parsing ``[steps.expect]`` and the final ``[expect]`` table.

Both tables take the same keys (:class:`~harness.scenario.model.Expect`). Values are
checked here, regular expressions compiled once, so a typo in a regex is a load
error naming ``file: steps[1].expect.logs[0]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.core.tomlnode import TomlNode
from harness.scenario.model import (
    DsnPattern,
    EventPattern,
    Expect,
    ExpectedOutcome,
    ReportPattern,
    Verification,
)
from harness.world.spec.values import member_of, strings_of

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


def _regex(node: TomlNode, text: str) -> None:
    try:
        re.compile(text)
    except re.error as exc:
        raise node.bad(f"a valid regular expression ({exc})") from None


def _matcher(node: TomlNode) -> Any:
    value = node.value
    if isinstance(value, str) and value.startswith("~"):
        _regex(node, value[1:])
    if isinstance(value, Mapping):
        raise node.bad("a value or a '~regex' (a.b = ... for a nested field)")
    return value


def _event(node: TomlNode) -> EventPattern:
    entries = node.table()
    if "code" not in entries:
        raise node.bad("an event pattern with a 'code'")
    code = entries.pop("code")
    code.text()
    return EventPattern(code=_matcher(code), fields={k: _matcher(n) for k, n in entries.items()})


def _outcome(node: TomlNode) -> ExpectedOutcome | dict[str, ExpectedOutcome]:
    if isinstance(node.value, str):
        return member_of(node, ExpectedOutcome)
    per = node.table()
    if not per:
        raise node.bad("an outcome or a table of recipient = outcome")
    return {rcpt.lower(): member_of(n, ExpectedOutcome) for rcpt, n in per.items()}


def _count(node: TomlNode) -> int:
    return node.integer(0, 1_000_000)


def _tls(node: TomlNode) -> str:
    return node.choice(TLS_VERSIONS)


def _text_matcher(node: TomlNode) -> str:
    text = node.text()
    if text.startswith("~"):
        _regex(node, text[1:])
    return text


def _report(node: TomlNode) -> ReportPattern:
    e = node.table(REPORT_KEYS)
    kw: dict[str, Any] = {}
    if "via" in e:
        kw["via"] = e["via"].choice(_VIA)
    if "policy_type" in e:
        kw["policy_type"] = e["policy_type"].choice(_POLICY_TYPES)
    if "policy_domain" in e:
        kw["policy_domain"] = e["policy_domain"].text().rstrip(".").lower()
    for key in ("to", "failure_reason_code", "content_type"):
        if key in e:
            kw[key] = _text_matcher(e[key])
    for key in ("success", "failure", "policies"):
        if key in e:
            kw[key] = _count(e[key])
    if "result_types" in e:
        kw["result_types"] = tuple(sorted(strings_of(e["result_types"])))
    if "mx_host" in e:
        kw["mx_host"] = tuple(strings_of(e["mx_host"]))
    if "policy_string" in e:
        kw["policy_string"] = tuple(strings_of(e["policy_string"]))
    for key in ("fields", "mail"):
        if key in e:
            kw[key] = {k: _matcher(n) for k, n in e[key].table().items()}
    return ReportPattern(**kw)


def _dsn(node: TomlNode) -> DsnPattern:
    e = node.table(DSN_KEYS, required=("to",))
    to = e["to"].text().lower()
    if "@" not in to:
        raise e["to"].bad("an address (local@domain)")
    return DsnPattern(
        to=to,
        action=e["action"].choice(_DSN_ACTIONS) if "action" in e else "failed",
        status=_text_matcher(e["status"]) if "status" in e else None,
        rcpt=e["rcpt"].text().lower() if "rcpt" in e else None,
    )


def parse_expect(node: TomlNode) -> Expect:
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
        kw["verified"] = member_of(e["verified"], Verification)
    if "no_transaction" in e:
        kw["no_transaction"] = tuple(h.rstrip(".").lower() for h in strings_of(e["no_transaction"]))
    if "in_clear" in e:
        kw["in_clear"] = e["in_clear"].boolean()
    if "fetches" in e:
        f = e["fetches"]
        if isinstance(f.value, Mapping):
            kw["fetches"] = {h.lower(): _count(n) for h, n in f.table().items()}
        else:
            kw["fetches"] = _count(f)
    if "queries" in e:
        queries = {}
        for key, n in e["queries"].table().items():
            parts = key.split()
            if len(parts) not in (1, 2):
                raise n.error("a key here is 'name TYPE' or 'name'")
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
            kw["sni"] = {h.lower(): n.text() for h, n in s.table().items()}
        else:
            kw["sni"] = s.text()
    if "reports" in e:
        reports = e["reports"].items()
        if not reports:
            raise e["reports"].bad("at least one report entry (or no_reports = true)")
        kw["reports"] = tuple(_report(n) for n in reports)
    if "no_reports" in e:
        kw["no_reports"] = e["no_reports"].boolean()
    if "dsn" in e:
        kw["dsn"] = _dsn(e["dsn"])
    if "faults" in e:
        faults = {}
        for host, n in e["faults"].table().items():
            for one in [n] if isinstance(n.value, str) else n.items():
                if one.text().startswith("~"):
                    _regex(one, one.text()[1:])
            faults[host.rstrip(".").lower()] = strings_of(n)
        kw["faults"] = faults
    return Expect(**kw)
