"""The HTML report for a red run (issue 16 item 7): failures first, passing scenarios
as one summary line each (their world, steps and diagram only with ``full``), checked
in the page itself and in what headless Chromium builds from it."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import html_report
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import run_scenario
from harness.scenario import loads_scenario

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "sts-enforce-mx1-bad.toml"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def results() -> list[ScenarioResult]:
    """Catalog order: a pass, a failure, a pass (the failure is not first by itself)."""
    text = EXAMPLE.read_text()
    bad_text = text.replace('via = "mx2.example.com"', 'via = "mx1.example.com"')
    out = [
        run_scenario(loads_scenario(text, "/x/t/first-good.toml")),
        run_scenario(loads_scenario(bad_text, "/x/t/broken.toml")),
        run_scenario(loads_scenario(text, "/x/t/last-good.toml")),
    ]
    assert [r.verdict for r in out] == [
        ScenarioVerdict.PASSED,
        ScenarioVerdict.FAILED,
        ScenarioVerdict.PASSED,
    ]
    return out


class _Sections(HTMLParser):
    """The report's sections in document order: (verdict, open, text inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[list[object]] = []
        self._depth = 0
        self._first_details = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section" and "sc" in (found.get("class") or "").split():
            self.sections.append([found.get("data-verdict"), False, ""])
            self._depth, self._first_details = 1, True
        elif self._depth and tag == "section":
            self._depth += 1
        elif self._depth and tag == "details" and self._first_details:
            self.sections[-1][1] = "open" in found
            self._first_details = False

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "section":
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.sections[-1][2] = str(self.sections[-1][2]) + data


def _sections(page: str) -> list[list[object]]:
    parser = _Sections()
    parser.feed(page)
    return parser.sections


def test_failures_come_first_and_open(results: list[ScenarioResult]) -> None:
    sections = _sections(html_report(results))
    assert [s[0] for s in sections] == ["failed", "passed", "passed"]
    assert [s[1] for s in sections] == [True, False, False]
    # the passing ones keep their catalog order
    assert "first-good" in str(sections[1][2]) and "last-good" in str(sections[2][2])


def test_a_passing_scenario_is_its_summary_line_unless_full(
    results: list[ScenarioResult],
) -> None:
    compact, full = _sections(html_report(results)), _sections(html_report(results, full=True))
    failed, passed = str(compact[0][2]), str(compact[1][2])
    assert "world" in failed and "sequence" in failed and "mx1.example.com" in failed
    assert "world" not in passed and "sequence" not in passed and "steps" not in passed
    assert "world" in str(full[1][2]) and "sequence" in str(full[1][2])
    assert len(html_report(results)) < len(html_report(results, full=True)) / 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_shows_the_failure_first(results: list[ScenarioResult], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(html_report(results), encoding="utf-8")
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    sections = _sections(done.stdout)  # the DOM as the browser built it, scripts run
    assert [s[0] for s in sections] == ["failed", "passed", "passed"], done.stdout[:2000]
    assert sections[0][1] is True and "broken" in str(sections[0][2])
    assert "<svg" in done.stdout.split('data-verdict="passed"', 1)[0]  # the failure's diagram
