"""Failure messages: the mismatches, then the whole run as one timeline.

The timeline interleaves, per step, the world's exchanges (DNS queries, policy
fetches, SMTP sessions, proxy and report requests) with the engine's mail_logs
lines, ordered by the world's clock, which both carry. A reader sees the expected
item, the closest events actually seen, and everything that happened around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from enum import StrEnum
from typing import Protocol

from engine.logs import format_ctime
from harness.scenario.assertions import Mismatch
from harness.scenario.model import Expect
from harness.scenario.observation import StepObservation

__all__ = ["Explained", "describe_expect", "explain", "interleave", "timeline_text"]


def describe_expect(x: Expect) -> str:
    """The keys an expectation sets, one ``key = value`` line each."""
    shown = []
    for f in fields(Expect):
        value = getattr(x, f.name)
        if value is None or value == () or value == {}:
            continue
        if f.name in ("events", "no_events"):
            shown.append(f"{f.name} = [")
            shown += [f"  {p.describe()}," for p in value]
            shown.append("]")
            continue
        shown.append(f"{f.name} = {_plain(value)!r}")
    return "\n".join(shown)


def _plain(value: object) -> object:
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def interleave(obs: StepObservation) -> list[tuple[float, str, str]]:
    """``(world time, kind, text)`` for every exchange and log line of one step, by time.

    ``kind`` is ``dns``, ``policy``, ``smtp``, ``proxy``, ``report`` or ``log``.
    """
    rows = [(x.at, x.kind, f"{x.name}: {x.summary}") for x in obs.world.timeline]
    rows += [(e.at, "log", e.line) for e in obs.events if e.line]
    rows.sort(key=lambda r: r[0])
    return rows


def timeline_text(observations: list[StepObservation]) -> str:
    """The whole run, step by step, as indented text."""
    out: list[str] = []
    for obs in observations:
        head = "set-up" if obs.index < 0 else f"step {obs.index}: {obs.label}"
        out.append(f"[{head}]  (engine clock {format_ctime(obs.clock)})")
        for d in obs.deliveries:
            why = f" - {d.reason} ({d.result_type})" if d.reason else ""
            out.append(f"  => {d.rcpt}: {d.status} via {d.mx} {d.tls or 'clear'}/{d.verified}{why}")
        rows = interleave(obs)
        start = rows[0][0] if rows else 0.0
        for at, kind, text in rows:
            out.append(f"  +{at - start:7.3f}s {kind:<6} {text}")
        if obs.error:
            out.append("  step raised:")
            out += [f"    {line}" for line in obs.error.rstrip().splitlines()]
    return "\n".join(out)


class _Step(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def mismatches(self) -> Sequence[Mismatch]: ...


class Explained(Protocol):
    """What :func:`explain` reads of a run's result
    (:class:`harness.run.result.ScenarioResult` has it; the scenario layer does not
    import the runner)."""

    @property
    def id(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def steps(self) -> Sequence[_Step]: ...
    @property
    def final(self) -> Sequence[Mismatch]: ...
    @property
    def observations(self) -> list[StepObservation]: ...


def explain(result: Explained) -> str:
    """A failure message for ``result``: what did not hold, then the timeline."""
    out = [f"scenario {result.id} {result.verdict.upper()} ({result.path})", result.title]
    for step in result.steps:
        if step.mismatches:
            out.append(f"\nstep {step.index} ({step.label}):")
            out += ["  " + m.render().replace("\n", "\n  ") for m in step.mismatches]
    if result.final:
        out.append("\nfinal [expect]:")
        out += ["  " + m.render().replace("\n", "\n  ") for m in result.final]
    if result.reason:
        out += ["", result.reason.rstrip()]
    out += ["", "--- timeline ---", timeline_text(result.observations)]
    return "\n".join(out)
