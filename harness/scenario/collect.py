"""pytest collection of scenario files: one test item per ``scenarios/**/*.toml``.

Theory of operation
-------------------
The hooks here are exported with ``__all__`` so the harness plugin can take them
with ``from harness.scenario.collect import *``; until then ``-p
harness.scenario.collect`` loads this module as a plugin by itself.

* :func:`pytest_addoption` adds ``--engine NAME`` (default ``inprocess``).
* :func:`pytest_collect_file` claims ``*.toml`` files below a directory named
  ``scenarios`` and returns a :class:`ScenarioFile`, which loads the scenario (a
  load error is a collection error naming ``file: key.path``) and yields one
  :class:`ScenarioItem`, marked ``scenario`` and with its topic. Topic markers
  are registered as they are met (``config.addinivalue_line``), so
  ``--strict-markers`` accepts them and ``-m examples`` selects a topic.
* :class:`ScenarioItem` runs the scenario in its own event loop; a skipped
  scenario (capabilities) is a pytest skip with the reason, a failure shows
  :func:`~harness.scenario.explain.explain`.

Nothing is shared between items, so ``-n auto`` (pytest-xdist) distributes them
freely: each worker loads and runs whole files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import SpecError
from harness.runner import ScenarioResult, Verdict, run_scenario
from harness.scenario.explain import explain
from harness.scenario.loader import load_scenario
from harness.scenario.model import Scenario

__all__ = [
    "ScenarioFailure",
    "ScenarioFile",
    "ScenarioItem",
    "pytest_addoption",
    "pytest_collect_file",
    "pytest_configure",
]

_DIR = "scenarios"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--engine NAME``: the engine under test for scenario items."""
    group = parser.getgroup("scenarios", "conformance scenarios")
    group.addoption(
        "--engine",
        default="inprocess",
        metavar="NAME",
        help="engine adapter that scenario files run against (default: inprocess)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``scenario`` marker every scenario item carries."""
    config.addinivalue_line("markers", "scenario: a conformance scenario file (scenarios/)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """A :class:`ScenarioFile` for ``scenarios/**/*.toml``; None for anything else."""
    if file_path.suffix == ".toml" and _DIR in file_path.parent.parts:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFailure(Exception):
    """A scenario did not pass; carries its result."""

    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(f"scenario {result.id} {result.verdict}")
        self.result = result


class ScenarioFile(pytest.File):
    """One scenario file."""

    def collect(self) -> Iterator[ScenarioItem]:
        """Load the file and yield its one item."""
        try:
            scenario = load_scenario(self.path)
        except SpecError as exc:
            raise self.CollectError(str(exc)) from None
        marker = scenario.topic
        self.config.addinivalue_line("markers", f"{marker}: scenarios of topic {marker!r}")
        item = ScenarioItem.from_parent(self, name=scenario.id, scenario=scenario)
        item.add_marker("scenario")
        item.add_marker(marker)
        yield item


class ScenarioItem(pytest.Item):
    """One scenario, run against the ``--engine`` adapter."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.result: ScenarioResult | None = None
        self.user_properties.append(("covers", " ".join(scenario.covers)))

    def runtest(self) -> None:
        """Run the scenario; skip or fail according to its verdict."""
        engine = str(self.config.getoption("engine", "inprocess"))
        self.result = run_scenario(self.scenario, engine)
        if self.result.verdict is Verdict.SKIPPED:
            pytest.skip(self.result.reason)
        if self.result.verdict is not Verdict.PASSED:
            raise ScenarioFailure(self.result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """The scenario's explanation, or pytest's usual report for anything else."""
        if isinstance(excinfo.value, ScenarioFailure):
            return explain(excinfo.value.result)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the item comes from, for reports."""
        return self.path, None, f"scenario {self.scenario.id}: {self.scenario.title}"
