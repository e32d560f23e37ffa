"""``sts-harness run | list | show | coverage`` through main(argv), plus one subprocess run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.coverage import Requirement, coverage_of, load_requirements
from harness.scenario import load_all

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scenarios" / "examples"
REQUIREMENTS_MD = ROOT / "docs/requirements.md"

GOOD = """
[scenario]
title = "clear delivery"
covers = ["DISC-11", "seed:tls-no-success"]
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
[steps.expect]
outcome = "delivered"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "scenarios" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_run_writes_reports_and_exits_1_on_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, "t/good.toml", GOOD)
    _write(tmp_path, "t/bad.toml", GOOD.replace('outcome = "delivered"', 'outcome = "bounced"'))
    out = {k: tmp_path / f"r.{k}" for k in ("xml", "json", "html")}
    status = main(["run", str(tmp_path / "scenarios"), "-q", "--junit", str(out["xml"]),
                   "--json", str(out["json"]), "--html", str(out["html"])])  # fmt: skip
    assert status == 1
    text = capsys.readouterr().out
    # -q: the failed scenario's row and the counts, not the passing one
    assert "bad" in text and "good" not in text and "1 passed, 1 failed" in text
    doc = json.loads(out["json"].read_text())
    assert [s["verdict"] for s in doc["scenarios"]] == ["failed", "passed"]
    assert out["xml"].read_text().startswith("<?xml") and "<svg" in out["html"].read_text()


def test_run_passes_with_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(3):
        _write(tmp_path, f"t/s{n}.toml", GOOD)
    assert main(["run", str(tmp_path / "scenarios"), "-j", "2", "-q"]) == 0
    assert "3 passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "/nonexistent/dir"], "no such file, directory or scenario id"),
        (["run", "--engine", "nope", str(EXAMPLES)], "no engine adapter 'nope'"),
        (["run", "-j", "0", str(EXAMPLES)], "-j must be at least 1"),
        (["show", "no-such-scenario", "--root", str(EXAMPLES)], "no scenario 'no-such-scenario'"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_bad_scenario_file_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "t/typo.toml", GOOD + "[expect]\nfetchez = 1\n")
    assert main(["list", str(path.parent)]) == 2
    assert (
        f"{path}: expect.fetchez: unknown key; allowed keys are outcome, via"
        in capsys.readouterr().err
    )


def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "sts-cache-id-change" in out and "dane-ee-delivery" in out
    assert main(["show", "sts-cache-id-change", "--root", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    for piece in (
        "requires: clock, restart",
        "world:",
        '[domains."example.com"]',
        "sender:",
        "2. restart engine",
        "6. advance 86400s",
        "fetches = {'mta-sts.example.com': 1}",
        "expect (whole run):",
    ):
        assert piece in out
    assert main(["show", str(EXAMPLES / "dane-ee-delivery.toml")]) == 0
    assert "tlsa = [" in capsys.readouterr().out


def test_coverage_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", str(EXAMPLES), "--min", "1", "--uncovered"]) == 0
    out = capsys.readouterr().out
    assert "requirement coverage:" in out and "POL-1" in out and "DISC-1 " not in out
    assert main(["coverage", str(EXAMPLES), "--min", "99.5"]) == 1
    assert "below --min 99.5%" in capsys.readouterr().out


def test_requirements_fixture_lists_every_id_of_the_spec() -> None:
    reqs = load_requirements()
    ids = {r.id for r in reqs if r.group not in ("seed", "AMB")}
    import re

    spec = set(re.findall(r"^\| ([A-Z]+-\d+) \|", REQUIREMENTS_MD.read_text(), re.M))
    assert ids == spec
    assert {r.level for r in reqs if r.id in ids} <= {"MUST", "SHOULD", "MAY", "—"}
    levels = {r.id: r.level for r in reqs}
    assert levels["DISC-1"] == "MUST" and levels["FETCH-11"] == "SHOULD"
    assert levels["FETCH-7"] == "MAY" and levels["DISC-12"] == "—"
    assert not next(r for r in reqs if r.id == "FETCH-7").counted
    assert sum(r.group == "seed" for r in reqs) >= 30


def test_every_covers_entry_of_the_catalog_is_known() -> None:
    cov = coverage_of(load_all([ROOT / "scenarios"]))
    assert cov.unknown == {}
    assert "sts-enforce-mx1-bad" in cov.covered_by["DISC-1"]


def test_coverage_counts_only_counted_items() -> None:
    reqs = (
        Requirement("A-1", "A", "1", "MUST", "t", True),
        Requirement("A-2", "A", "1", "MAY", "t", False),
        Requirement("seed:x", "seed", "1", "seed", "t", True),
    )
    cov = coverage_of([], reqs)
    assert cov.percent == 0.0 and [r.id for r in cov.uncovered] == ["A-1", "seed:x"]


SCRIPT = Path(sys.executable).parent / "sts-harness"


@pytest.mark.skipif(not SCRIPT.exists(), reason="the sts-harness console script is not installed")
def test_subprocess_run_of_one_example(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    done = subprocess.run(
        [str(SCRIPT), "run", str(EXAMPLES / "dane-ee-delivery.toml"), "--json", str(report)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert json.loads(report.read_text())["summary"]["passed"] == 1
