"""pytest collection of scenario files: one test item per ``scenarios/**/*.toml``.

Theory of operation
-------------------
The hooks here are exported with ``__all__`` so the harness plugin can take them
with ``from harness.run.collect import *``; until then ``-p
harness.run.collect`` loads this module as a plugin by itself.

* :func:`pytest_addoption` adds ``--engine NAME``. Without it every scenario runs
  the three ways of :data:`~harness.run.single.DEFAULT_WAYS`: in process on asyncio
  (``inprocess``), in process on uvloop (``inprocess-uvloop``) and against
  ``sts-engine serve`` as a process on its default loop (``sts-engine``); with it,
  only that way (or that adapter, on asyncio).
* :func:`pytest_collect_file` claims ``*.toml`` files below a directory named
  ``scenarios`` and returns a :class:`ScenarioFile`, which loads the scenario (a
  load error is a collection error naming ``file: key.path``) and yields one
  :class:`ScenarioItem` per way, named ``<scenario id>[<way>]``, marked
  ``scenario`` and with its topic. Topic markers are registered as they are met
  (``config.addinivalue_line``), so ``--strict-markers`` accepts them and ``-m
  examples`` selects a topic.
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
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import DEFAULT_WAYS, run_scenario, way
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
    """``--engine NAME``: run scenario items one way only."""
    group = parser.getgroup("scenarios", "conformance scenarios")
    group.addoption(
        "--engine",
        default=None,
        metavar="NAME",
        help="run scenario files one way: "
        f"{', '.join(DEFAULT_WAYS)} or any engine adapter (default: the three ways)",
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
        chosen = self.config.getoption("engine", None)
        for name in [chosen] if chosen else list(DEFAULT_WAYS):
            item = ScenarioItem.from_parent(
                self, name=f"{scenario.id}[{name}]", scenario=scenario, way=name
            )
            item.add_marker("scenario")
            item.add_marker(marker)
            yield item


class ScenarioItem(pytest.Item):
    """One scenario, run one way (see the module docstring)."""

    def __init__(self, *, scenario: Scenario, way: str = "inprocess", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.way = way
        self.result: ScenarioResult | None = None
        self.user_properties.append(("covers", " ".join(scenario.covers)))

    def runtest(self) -> None:
        """Run the scenario; skip or fail according to its verdict."""
        engine, loop = way(self.way)
        self.result = run_scenario(self.scenario, engine, loop=loop)
        if self.result.verdict is ScenarioVerdict.SKIPPED:
            pytest.skip(self.result.reason)
        if self.result.verdict is not ScenarioVerdict.PASSED:
            raise ScenarioFailure(self.result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """The scenario's explanation, or pytest's usual report for anything else."""
        if isinstance(excinfo.value, ScenarioFailure):
            return explain(excinfo.value.result)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the item comes from, for reports."""
        title = f"scenario {self.scenario.id} [{self.way}]: {self.scenario.title}"
        return self.path, None, title
