"""World fuzzing: strategies that draw whole scenarios, invariants judged from the world,
and regression files written from shrunk failures (see each module's docstring)."""

from __future__ import annotations

from harness.fuzz.driver import FuzzRun, load_document, run_document, run_scenario_records
from harness.fuzz.invariants import INVARIANTS, Invariant, Violation, check_run
from harness.fuzz.oracle import (
    DestinationFacts,
    HostFacts,
    Profile,
    destination_facts,
    pattern_permits,
)
from harness.fuzz.regressions import (
    REGRESSIONS_DIR,
    regression_document,
    regression_text,
    write_regression,
)
from harness.fuzz.strategies import (
    CERT_PROFILES,
    DOMAIN,
    SENDER,
    destination_controls,
    dns_faults,
    fuzz_scenarios,
    mx_sets,
    receiving_hosts,
    sts_parts,
)

__all__ = [
    "CERT_PROFILES",
    "DOMAIN",
    "INVARIANTS",
    "REGRESSIONS_DIR",
    "SENDER",
    "DestinationFacts",
    "FuzzRun",
    "HostFacts",
    "Invariant",
    "Profile",
    "Violation",
    "check_run",
    "destination_controls",
    "destination_facts",
    "dns_faults",
    "fuzz_scenarios",
    "load_document",
    "mx_sets",
    "pattern_permits",
    "receiving_hosts",
    "regression_document",
    "regression_text",
    "run_document",
    "run_scenario_records",
    "sts_parts",
    "write_regression",
]
