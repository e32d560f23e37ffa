"""What a scenario needs of an engine: its ``requires`` plus what its steps and
expectations imply (an ``advance`` step needs ``clock``, a ``logs`` expectation needs
``logs``, ``reports`` needs ``tlsrpt``...).

The runners skip a scenario whose engine lacks one of these; the black-box fit
(:mod:`harness.adapters.blackbox.fit`) and ``sts-harness coverage`` ask the same.
"""

from __future__ import annotations

from harness.scenario.model import Capability, Scenario, StepKind

__all__ = ["required_capabilities"]

_STEP_NEEDS = {StepKind.ADVANCE: Capability.CLOCK, StepKind.RESTART_ENGINE: Capability.RESTART}
_EXPECT_NEEDS = {
    "events": Capability.EVENTS,
    "no_events": Capability.EVENTS,
    "logs": Capability.LOGS,
    "outcome": Capability.REPORT,
    "verified": Capability.REPORT,
    "reports": Capability.TLSRPT,
    "dsn": Capability.TLSRPT,
}


def required_capabilities(scenario: Scenario) -> frozenset[Capability]:
    """``requires`` plus what the steps and expectations imply."""
    need = set(scenario.requires)
    for step in scenario.steps:
        if step.kind in _STEP_NEEDS:
            need.add(_STEP_NEEDS[step.kind])
        if step.kind is StepKind.SEND and step.args.final:
            need.add(Capability.FINAL)
    for expect in (*(s.expect for s in scenario.steps), scenario.expect):
        need |= {cap for key, cap in _EXPECT_NEEDS.items() if getattr(expect, key)}
        if expect.no_reports is not None:
            need.add(Capability.TLSRPT)
    return frozenset(need)
