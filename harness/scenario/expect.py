"""Parsing ``[steps.expect]`` and the final ``[expect]`` table.

Both tables take the same keys (:class:`~harness.scenario.model.Expect`). Values are
checked here, regular expressions compiled once, so a typo in a regex is a load
error naming ``file: steps[1].expect.logs[0]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from harness.scenario.model import EventPattern, Expect, Outcome, Verification
from harness.world.spec_values import Node

__all__ = ["EXPECT_KEYS", "TLS_VERSIONS", "parse_expect"]

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
)
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
    return Expect(**kw)
