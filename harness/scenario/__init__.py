"""Scenarios: the TOML model, its loader, per-step observations and pytest collection."""

from __future__ import annotations

from harness.scenario.loader import discover, load_all, load_scenario, loads_scenario
from harness.scenario.model import (
    Capability,
    EventPattern,
    Expect,
    ExpectedOutcome,
    Scenario,
    SendSpec,
    Step,
    StepKind,
    Verification,
)
from harness.scenario.observation import StepObservation

__all__ = [
    "Capability",
    "EventPattern",
    "Expect",
    "ExpectedOutcome",
    "Scenario",
    "SendSpec",
    "Step",
    "StepKind",
    "StepObservation",
    "Verification",
    "discover",
    "load_all",
    "load_scenario",
    "loads_scenario",
]
