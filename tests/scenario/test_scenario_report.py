"""Reports: JSON and JUnit shapes, and one self-contained HTML file seen by a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.report import html_report, junit_xml, report_dict, sequence_svg
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import run_scenario
from harness.scenario import loads_scenario

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "sts-enforce-mx1-bad.toml"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def results() -> list[ScenarioResult]:
    good = run_scenario(loads_scenario(EXAMPLE.read_text(), EXAMPLE))
    bad_text = EXAMPLE.read_text().replace('via = "mx2.example.com"', 'via = "mx1.example.com"')
    bad_text = bad_text.replace('title = "W-STS', 'title = "<script>alert(1)</script> W-STS')
    bad = run_scenario(loads_scenario(bad_text, "/x/t/broken.toml"))
    assert (good.verdict, bad.verdict) == (ScenarioVerdict.PASSED, ScenarioVerdict.FAILED)
    return [good, bad]


def test_json_report_is_plain_data(results: list[ScenarioResult]) -> None:
    doc = json.loads(json.dumps(report_dict(results), default=str))
    assert doc["summary"] == {
        "total": 2,
        "passed": 1,
        "failed": 1,
        "seconds": pytest.approx(sum(r.seconds for r in results)),
    }
    bad = doc["scenarios"][1]
    assert bad["verdict"] == "failed" and bad["steps"][0]["mismatches"][0]["key"] == "via"
    assert bad["steps"][0]["observation"]["world"]["fetches"][0]["host"] == "mta-sts.example.com"


def test_junit_report(results: list[ScenarioResult]) -> None:
    suite = ET.fromstring(junit_xml(results).split("?>", 1)[1])
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert cases[0].get("name") == "sts-enforce-mx1-bad" and cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message", "").endswith(": via")
    assert "--- timeline ---" in (failure.text or "")


def test_html_is_self_contained(results: list[ScenarioResult]) -> None:
    page = html_report(results)
    assert page.startswith("<!DOCTYPE html>")
    refs = re.findall(r"""\b(?:src|href|xlink:href)\s*=\s*["']([^"']*)""", page)
    assert not [r for r in refs if not r.startswith("#")], refs
    assert not re.search(r"<link\b|@import|url\((?!#)", page)
    for piece in (
        "<style>",
        "<script>",
        "<svg",
        'data-verdict="failed"',
        "mx1.example.com",
        "&lt;script&gt;alert(1)",
        "expected: mx1.example.com",
    ):
        assert piece in page
    assert "<script>alert" not in page
    svg = sequence_svg(results[0].observations)
    for lane in ("engine", "DNS", "mta-sts.example.com", "mx1.example.com", "mx2.example.com"):
        assert f">{lane}</text>" in svg
    assert "GET /.well-known/mta-sts.txt" in svg and "SMTP EHLO STARTTLS" in svg


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(results: list[ScenarioResult], tmp_path: Path) -> None:
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(html_report(results), encoding="utf-8")
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1400,2000", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 2000)
    assert len(data) > 20_000  # a rendered page, not a blank one
