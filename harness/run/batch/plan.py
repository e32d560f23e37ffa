"""Batching scenarios for black-box engines: one shared world, one engine lifetime.

Theory of operation
-------------------
A real MTA costs hundreds of milliseconds to start and stop, so compatible
scenarios run together:

1. :func:`relabel` gives scenario number *k* names of its own by rewriting its TOML
   text: every registrable name ``b`` of its world (``example.com``) becomes
   ``sK.b`` at label boundaries, so ``mx1.example.com``, ``_mta-sts.example.com``,
   ``*.example.com`` in a policy, ``rcpt@example.com`` and every expectation that
   names them move together, and two scenarios never share a zone or a recipient
   domain. An IDN base moves in both spellings: ``xn--bcher-kva.example`` and the
   ``rcpt@bücher.example`` written in U-labels;
2. :func:`world_view` keeps only what a black-box engine can be judged on: the
   world's observations and the per-recipient report. ``events``, ``no_events`` and
   ``logs`` are our engine's vocabulary and are dropped (and listed in the result's
   reason) when the engine lacks those capabilities;
3. :func:`harness.adapters.blackbox.fit.fit` says what of a scenario a profile can
   run (all of it, the sends to the destinations its configuration serves, or
   nothing, with the reason), and :func:`plan` groups what runs into
   :class:`Batch` es: scenarios with
   clock steps, restarts, a proxy, a report sink or pinned addresses run alone; the
   others share a batch when their worlds and, for an engine configured from
   ``[sender]``, their ``[sender]`` tables merge without conflict (per-domain entries
   are disjoint after step 1; a ``default`` entry must be equal);
4. :func:`harness.run.batch.runner.run_batch` runs a batch: one world, the
   engine started once, each scenario's steps in turn.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.scenario.loader import loads_scenario
from harness.scenario.model import Capability, Expect, Scenario, StepKind

__all__ = ["Batch", "plan", "relabel", "world_view"]

_WORLD_ONLY = ("events", "no_events", "logs")


def _bases(table: Mapping[str, Any]) -> set[str]:
    world = table.get("world", {})
    names = set(world.get("domains", {})) | set(world.get("hosts", {}))
    return {".".join(n.rstrip(".").lower().split(".")[-2:]) for n in names if "." in n}


#: Characters a DNS label may hold around a name (U-labels too): a name's boundary.
_LABEL = "A-Za-z0-9\u0080-\U0010ffff-"
#: Policy bodies this long are about their exact size (FETCH-12): never relabelled.
_SIZE_SENSITIVE = 60_000


def _size_sensitive(table: Mapping[str, Any]) -> bool:
    domains = table.get("world", {}).get("domains", {})
    return any(len(str(d.get("policy", ""))) >= _SIZE_SENSITIVE for d in domains.values())


def relabel(text: str, k: int, path: str | Path) -> Scenario:
    """Scenario ``text`` with every name of its world moved under ``sK.`` (see above).

    A scenario whose policy body is about its exact size is loaded unchanged (and
    :func:`plan` runs it alone): renaming would change the size under test.
    """
    table = tomllib.loads(text)
    if _size_sensitive(table):
        return loads_scenario(text, path)
    out = text
    for base in sorted(_spellings(_bases(table)), key=len, reverse=True):
        # The name as written in plain strings, and escaped in regexes: `example\.com`
        # in a TOML literal string, `example\\.com` in a basic one.
        for sep in ("\\\\.", "\\.", "."):
            written = base.replace(".", sep)
            rx = rf"(?<![{_LABEL}]){re.escape(written)}(?![{_LABEL}])"
            out = re.sub(rx, functools.partial(_prefixed, f"s{k}{sep}"), out, flags=re.IGNORECASE)
    return loads_scenario(out, path)


def _spellings(bases: set[str]) -> set[str]:
    """Each base, plus its U-label spelling when it has A-labels (RFC 5890): a scenario
    may write the recipient ``rcpt@bücher.example`` of the world's ``xn--bcher-kva.example``."""
    out = set(bases)
    for base in bases:
        if "xn--" in base:
            with contextlib.suppress(UnicodeError):  # not an A-label: written form only
                out.add(base.encode("ascii").decode("idna"))
    return out


def _prefixed(prefix: str, m: re.Match[str]) -> str:
    return prefix + m.group(0)


def world_view(scenario: Scenario, caps: frozenset[Capability]) -> tuple[Scenario, list[str]]:
    """``scenario`` without the expectations ``caps`` cannot judge, and what was dropped."""
    drop = [
        k
        for k, c in (
            ("events", Capability.EVENTS),
            ("no_events", Capability.EVENTS),
            ("logs", Capability.LOGS),
        )
        if c not in caps
    ]
    dropped: list[str] = []

    def strip(x: Expect, where: str) -> Expect:
        gone = [k for k in drop if getattr(x, k)]
        dropped.extend(f"{where}.{k}" for k in gone)
        return replace(
            x,
            events=() if "events" in gone else x.events,
            no_events=() if "no_events" in gone else x.no_events,
            logs=() if "logs" in gone else x.logs,
        )

    steps = tuple(replace(s, expect=strip(s.expect, f"steps[{s.index}]")) for s in scenario.steps)
    return replace(scenario, steps=steps, expect=strip(scenario.expect, "expect")), dropped


@dataclass(slots=True)
class Batch:
    """Scenarios that share one world and one engine lifetime."""

    scenarios: list[Scenario] = field(default_factory=list)
    world: dict[str, Any] = field(default_factory=dict)
    sender: dict[str, Any] = field(default_factory=dict)
    alone: bool = False
    key: str = ""


def _alone(s: Scenario) -> bool:
    if s.config_error is not None or _size_sensitive({"world": s.world_table}):
        return True
    if any(st.kind in (StepKind.ADVANCE, StepKind.RESTART_ENGINE) for st in s.steps):
        return True
    w = s.world_table
    if "proxy" in w or "report_sink" in w:
        return True
    tables = [*w.get("hosts", {}).values()]
    tables += [d.get("policy_host", {}) for d in w.get("domains", {}).values()]
    return any("address" in t for t in tables)


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any] | None:
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, Mapping) and isinstance(out[k], Mapping):
            sub = _merge(out[k], v)
            if sub is None:
                return None
            out[k] = sub
        elif isinstance(v, list) and isinstance(out[k], list) and k == "records":
            out[k] = [*out[k], *v]
        elif out[k] != v:
            return None
    return out


#: A world is one /24 (harness.world.addresses): keep a batch's hosts well inside it.
_MAX_ADDRESSES = 200


def _addresses(world: Mapping[str, Any]) -> int:
    """An upper bound of the loopback addresses a world table takes."""
    domains = world.get("domains", {})
    hosts = set(world.get("hosts", {}))
    for d in domains.values():
        for mx in d.get("mx", ()):
            target = mx[1] if isinstance(mx, list) else str(mx).split()[-1]
            hosts.add(str(target).rstrip(".").lower())
    policy = sum(1 for d in domains.values() if "policy" in d or "policy_host" in d)
    return len(hosts) + policy + 2


def _sender_key(sender: Mapping[str, Any]) -> str:
    # What every destination of a merged configuration shares: the `default` entry
    # (domain entries inherit from it) and every table other than the per-domain ones.
    shared = {k: v for k, v in sender.items() if k != "destination_controls"}
    shared["default"] = sender.get("destination_controls", {}).get("default")
    return json.dumps(shared, sort_keys=True, default=str)


def plan(scenarios: Sequence[Scenario], *, sender_matters: bool) -> list[Batch]:
    """Group (already relabelled) scenarios into batches (see the module docstring)."""
    batches: list[Batch] = []
    for s in scenarios:
        sender = dict(s.sender) if sender_matters else {}
        key = _sender_key(sender)
        if _alone(s):
            batches.append(Batch([s], dict(s.world_table), sender, alone=True, key=key))
            continue
        for b in batches:
            if b.alone or b.key != key:
                continue
            world, merged = _merge(b.world, s.world_table), _merge(b.sender, sender)
            if world is not None and merged is not None and _addresses(world) <= _MAX_ADDRESSES:
                b.scenarios.append(s)
                b.world, b.sender = world, merged
                break
        else:
            batches.append(Batch([s], dict(s.world_table), sender, key=key))
    return batches
