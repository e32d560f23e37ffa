"""pytest collection of scenario files (the hooks of harness.run.collect), via pytester.

Inner runs are subprocesses: an in-process run re-imports ``cryptography`` after the
outer run made the session's certificate factory, and mixing the two fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import harness.pytest_plugin

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parents[2] / "scenarios" / "examples"
# Once the harness plugin re-exports the hooks (entry point), loading them again clashes.
PLUGIN = (
    [] if hasattr(harness.pytest_plugin, "pytest_collect_file") else ["-p", "harness.run.collect"]
)

GOOD = """
[scenario]
title = "clear delivery"
covers = ["DISC-11"]
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
[steps.expect]
outcome = "delivered"
via = "mx1.example.com"
"""


def _tree(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    for name, text in files.items():
        path = pytester.path / "scenarios" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_items_markers_failures_under_xdist(pytester: pytest.Pytester) -> None:
    _tree(
        pytester,
        {
            "delivery/clear.toml": GOOD,
            "other/x.toml": GOOD.replace("clear delivery", "x"),
            "t/bad.toml": GOOD.replace('via = "mx1.example.com"', 'via = "mx9.example.com"'),
        },
    )
    shutil.copytree(EXAMPLES, pytester.path / "scenarios" / "examples")
    (pytester.path / "not-a-scenario.toml").write_text("[tool]\n")
    result = pytester.runpytest_subprocess(
        *PLUGIN,
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--strict-markers",
        "--engine",
        "inprocess",
        "-m",
        "delivery or examples or t",
        "-rA",
    )
    examples = len(list(EXAMPLES.glob("*.toml")))
    result.assert_outcomes(passed=examples + 1, failed=1)  # other/x.toml: deselected by -m
    assert "other/x.toml" not in result.stdout.str()
    result.stdout.fnmatch_lines_random(
        [
            "PASSED scenarios/delivery/clear.toml::clear[inprocess]",
            "PASSED scenarios/examples/dane-ee-delivery.toml::dane-ee-delivery[inprocess]",
            "*scenario bad FAILED*",
            "*expected: mx9.example.com*",
            "*seen:     delivered at mx1.example.com*",
            "*--- timeline ---*",
        ]
    )


def test_without_engine_each_file_runs_the_three_ways(pytester: pytest.Pytester) -> None:
    _tree(pytester, {"delivery/clear.toml": GOOD})
    result = pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines_random(
        [
            "PASSED scenarios/delivery/clear.toml::clear[inprocess]",
            "PASSED scenarios/delivery/clear.toml::clear[inprocess-uvloop]",
            "PASSED scenarios/delivery/clear.toml::clear[sts-engine]",
        ]
    )


def test_engine_narrows_to_one_way(pytester: pytest.Pytester) -> None:
    _tree(pytester, {"delivery/clear.toml": GOOD})
    result = pytester.runpytest_subprocess(
        *PLUGIN, "-p", "no:cacheprovider", "-rA", "--engine", "inprocess-uvloop"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["PASSED scenarios/delivery/clear.toml::clear[inprocess-uvloop]"])


def test_bad_file_is_a_collection_error_naming_the_key(pytester: pytest.Pytester) -> None:
    _tree(pytester, {"t/typo.toml": GOOD + "[expect]\nfetchez = 1\n"})
    result = pytester.runpytest_subprocess(*PLUGIN, "--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*scenarios/t/typo.toml: expect.fetchez: unknown key; allowed keys are outcome, via*"]
    )


def test_public_api_is_pinned() -> None:
    import harness.adapters
    import harness.report
    import harness.run.collect as collect
    import harness.scenario

    assert {"pytest_addoption", "pytest_collect_file", "pytest_configure"} <= set(collect.__all__)
    for module in (harness.scenario, harness.adapters, harness.report, collect):
        assert all(hasattr(module, name) for name in module.__all__)
    assert {"InProcessEngine", "ProcessEngine"} <= set(harness.adapters.__all__)
    assert {"load_scenario", "Scenario", "Expect", "StepKind"} <= set(harness.scenario.__all__)
