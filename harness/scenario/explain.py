"""Failure messages: the mismatches, then the whole run as one timeline.

The timeline interleaves, per step, the world's exchanges (DNS queries, policy
fetches, SMTP sessions, proxy and report requests) with the engine's mail_logs
lines, ordered by the world's clock, which both carry. A reader sees the expected
item, the closest events actually seen, and everything that happened around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.logs import format_ctime
from harness.scenario.observation import StepObservation

if TYPE_CHECKING:
    from harness.runner import ScenarioResult

__all__ = ["explain", "interleave", "timeline_text"]


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


def explain(result: ScenarioResult) -> str:
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
