"""The single-scenario runner, by its old name: see :mod:`harness.run.single`.

Reports, commands and tests import the runner's names from here; the code lives in
the :mod:`harness.run` package.
"""

from __future__ import annotations

from harness.run.single import (
    DEFAULT_WAYS,
    ScenarioResult,
    ScenarioVerdict,
    StepResult,
    lacks,
    required_capabilities,
    run_file,
    run_scenario,
    run_scenario_async,
    select_engine,
    way,
)

__all__ = [
    "DEFAULT_WAYS",
    "ScenarioResult",
    "ScenarioVerdict",
    "StepResult",
    "lacks",
    "required_capabilities",
    "run_file",
    "run_scenario",
    "run_scenario_async",
    "select_engine",
    "way",
]
