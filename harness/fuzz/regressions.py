"""Writing a shrunk failing world as an ordinary scenario file.

Theory of operation
-------------------
A fuzzed example is already a scenario dict (``strategies.py``); what a regression
file adds is a name, the requirement IDs it covers, a comment saying which
invariant failed and what the world showed, and the expectations that *would* hold
if the engine kept the invariant, so the catalog fails until the engine is fixed:

* a host that must not have seen MAIL FROM goes in ``no_transaction``;
* mail in clear that must not be makes ``in_clear = false``;
* a recipient whose reported outcome contradicts the mailboxes gets the outcome the
  mailboxes show (``delivered`` when one holds it, else ``deferred``);
* a failure without its log line expects that line as an event.

Some invariants have no expectation key (two log lines for one failure, a protocol
error the MTA noted); the comment says so, and ``tests/fuzz`` re-checks every
invariant on every file under ``scenarios/regressions/`` as well. The id is
``fuzz-<invariant>-<digest of the world>``, so writing the same world twice
yields the same file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from harness.fuzz.invariants import INVARIANTS, Violation

__all__ = ["REGRESSIONS_DIR", "regression_document", "regression_text", "write_regression"]

#: Where the catalog keeps regression scenarios.
REGRESSIONS_DIR = Path("scenarios/regressions")


def _digest(doc: Mapping[str, Any]) -> str:
    canonical = json.dumps({k: doc[k] for k in ("world", "sender", "steps")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _expectations(violations: Sequence[Violation]) -> dict[str, Any]:
    expect: dict[str, Any] = {}
    hosts: list[str] = []
    outcomes: dict[str, str] = {}
    events: list[dict[str, str]] = []
    for v in violations:
        mail_at_host = v.host is not None and "MAIL FROM over" in v.detail
        if v.invariant in ("sts-enforce-mx", "dane-tlsa-error", "dane-mandatory") and v.host:
            hosts.append(v.host)
        elif "MAIL FROM in clear" in v.detail:
            expect["in_clear"] = False
        elif "SNI" in v.detail and v.host:
            expect.setdefault("sni", {})[v.host] = v.host
        elif mail_at_host and v.host:
            hosts.append(v.host)
        elif v.invariant == "healthy-mx-reached" and v.rcpt:
            outcomes[v.rcpt] = "delivered"
        elif v.invariant == "no-message-lost" and v.rcpt:
            held = "accepted it" in v.detail or "mailboxes hold it at ['" in v.detail
            outcomes[v.rcpt] = "delivered" if held else "deferred"
        elif v.invariant == "failure-explained" and v.rcpt and "got []" in v.detail:
            code = "delivery.bounced" if " bounced:" in v.detail else "delivery.delayed"
            events.append({"code": code, "rcpt": v.rcpt})
    if hosts:
        expect["no_transaction"] = sorted(set(hosts))
    if outcomes:
        expect["outcome"] = outcomes
    if events:
        expect["events"] = events
    return expect


def regression_document(doc: Mapping[str, Any], violations: Sequence[Violation]) -> dict[str, Any]:
    """The scenario dict of a regression file for ``doc`` (not yet written).

    Args:
        doc: the failing scenario dict (world, sender, one send step).
        violations: what :func:`~harness.fuzz.invariants.check_run` found.

    Raises:
        ValueError: no violations (there is nothing to regress).
    """
    if not violations:
        raise ValueError("a regression needs at least one violation")
    out = copy.deepcopy(dict(doc))
    names = list(dict.fromkeys(v.invariant for v in violations))
    covers = [c for n in names for c in INVARIANTS[n].covers]
    out["scenario"] = {
        "id": f"fuzz-{names[0]}-{_digest(doc)}",
        "title": f"fuzzed world: {INVARIANTS[names[0]].title}",
        "covers": list(dict.fromkeys(covers)),
        "topic": "regressions",
        "description": "\n".join(str(v) for v in violations),
    }
    steps = [dict(s) for s in out["steps"]]
    expect = _expectations(violations)
    if expect:
        steps[0]["expect"] = expect
    out["steps"] = steps
    return out


def regression_text(
    doc: Mapping[str, Any], violations: Sequence[Violation], engine: str | None = None
) -> str:
    """The TOML text of the regression file, with the comment that explains it.

    ``engine``: the engine it was found against (the comment's replay command).
    """
    data = regression_document(doc, violations)
    head = [
        "# Written by harness.fuzz from a world hypothesis shrank: it broke",
        *(f"#   {v.invariant} ({INVARIANTS[v.invariant].title})" for v in violations[:1]),
        "# What the world showed:",
    ]
    for v in violations:
        head += textwrap.wrap(str(v), 92, initial_indent="#   - ", subsequent_indent="#     ")
    silent = {v.invariant for v in violations} - {"sts-enforce-mx", "dane-tlsa-error"}
    if silent & {"smtp-conformance", "failure-explained", "run-completes"}:
        head.append("# Some of this has no [expect] key; tests/fuzz re-checks every invariant.")
    sid = data["scenario"]["id"]
    if engine is None:
        head.append("# Replay: pytest scenarios/regressions -k " + sid)
    else:
        head.append(
            f"# Found against {engine}. Replay: sts-harness run --engine {engine} {sid}.toml"
        )
    return "\n".join(head) + "\n\n" + tomli_w.dumps(data)


def write_regression(
    doc: Mapping[str, Any],
    violations: Sequence[Violation],
    directory: str | Path = REGRESSIONS_DIR,
    engine: str | None = None,
) -> Path:
    """Write the regression file for ``doc`` under ``directory``; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = regression_text(doc, violations, engine)
    data = regression_document(doc, violations)
    path = directory / f"{data['scenario']['id']}.toml"
    path.write_text(text, encoding="utf-8")
    return path
