"""``sts-harness matrix`` without root: columns, cells, reports, a failed or hung child."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness.adapters.blackbox.adapter import LOG_LINE
from harness.adapters.blackbox.fit import PARTIAL
from harness.commands import matrix as matrix_cmd
from harness.run.batch import child as blackbox_child
from harness.run.result import ScenarioResult, ScenarioVerdict, StepResult
from harness.scenario.model import Expect
from harness.scenario.observation import EventRecord, StepObservation

SCENARIO = Path(__file__).parent / "scenarios" / "bb-sts-mx-case.toml"


def _result(
    verdict: ScenarioVerdict, reason: str = "", lines: tuple[str, ...] = ()
) -> ScenarioResult:
    events = tuple(EventRecord(LOG_LINE, {}, "debug", 0.0, 0.0, ln) for ln in lines)
    obs = StepObservation(0, "send", events=events, lines=lines)
    return ScenarioResult(
        id="bb-sts-mx-case",
        title="t",
        path=str(SCENARIO),
        topic="blackbox",
        covers=("MX-2",),
        engine="postfix-sts",
        verdict=verdict,
        reason=reason,
        steps=(StepResult(0, "send", "send", Expect(), obs, ()),),
    )


def test_a_failed_black_box_child_errors_its_column_and_keeps_the_others(monkeypatch):
    def broken(engine, paths, **kw):
        raise RuntimeError("black-box child for 'postfix-sts' failed (status 1):\nboom")

    monkeypatch.setattr(blackbox_child, "run_engine", broken)
    got = matrix_cmd.run_matrix(["inprocess", "postfix-sts"], [SCENARIO])
    assert got["inprocess"][0].verdict is ScenarioVerdict.PASSED
    [r] = got["postfix-sts"]
    assert r.verdict is ScenarioVerdict.ERROR
    assert r.id == "bb-sts-mx-case"
    assert "boom" in r.reason
    md = matrix_cmd.render_markdown(got, [SCENARIO])
    assert "| `bb-sts-mx-case` | MX-2 | pass | **error** |" in md


def test_a_hung_black_box_child_is_stopped_and_reported(monkeypatch):
    class FakeNamespace:
        def __init__(self, **options):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def argv(self, command):
            return [sys.executable, "-c", "import time; time.sleep(60)"]

        def env(self):
            return dict(os.environ)

    monkeypatch.setattr(blackbox_child, "unavailable", lambda engine: "")
    monkeypatch.setattr(blackbox_child, "sweep_stale", lambda: [])
    monkeypatch.setattr(blackbox_child, "Namespace", FakeNamespace)
    monkeypatch.setattr(blackbox_child, "_CHILD_TIMEOUT_BASE", 0.3)
    monkeypatch.setattr(blackbox_child, "_CHILD_TIMEOUT_PER_FILE", 0.0)
    with pytest.raises(RuntimeError, match=r"no result within 0\.3 s"):
        blackbox_child.run_engine("postfix-sts", [SCENARIO])


def test_cells_say_which_steps_of_a_partial_run_ran():
    note = f"{PARTIAL}ran step 0, 1, 2, 4 of 5; not run: step 3: needs dane (the profile has sts)"
    r = _result(ScenarioVerdict.PASSED, note)
    assert matrix_cmd.part(r) == "step 0, 1, 2, 4 of 5"
    assert matrix_cmd.part(_result(ScenarioVerdict.PASSED)) == ""
    md = matrix_cmd.render_markdown({"postfix-sts": [r]}, [SCENARIO])
    assert "| pass (step 0, 1, 2, 4 of 5) |" in md
    page = matrix_cmd.render_html({"postfix-sts": [r]}, [SCENARIO])
    assert "pass (step 0, 1, 2, 4 of 5)" in page


def test_the_details_page_shows_every_failure_with_the_mta_log_lines():
    line = "postfix/smtp[77]: 4F1: host mx1.s3.example[127.0.0.5] said: 450 4.2.1 busy"
    failed = _result(ScenarioVerdict.FAILED, lines=(line,))
    passed = _result(ScenarioVerdict.PASSED, lines=("postfix/smtp[78]: status=sent",))
    page = matrix_cmd.render_details({"postfix-sts": [failed], "chasquid": [passed]})
    assert "bb-sts-mx-case on postfix-sts" in page
    assert "said: 450 4.2.1 busy" in page
    assert "status=sent" not in page
    table = matrix_cmd.render_html({"postfix-sts": [failed]}, [SCENARIO], details="m-details.html")
    assert 'href="m-details.html"' in table


def test_the_matrix_command_writes_json_and_both_html_pages(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.setattr(matrix_cmd.signal, "signal", lambda *a: None)  # keep pytest's SIGTERM

    html = tmp_path / "m.html"
    out = tmp_path / "c.md"
    out.write_text("# Doc\n\nkept\n\n<!-- matrix:begin -->\nold\n<!-- matrix:end -->\n\ntail\n")
    status = main(
        [
            "matrix",
            str(SCENARIO),
            "--engines",
            "inprocess",
            "--out",
            str(out),
            "--html",
            str(html),
            "--json",
            str(tmp_path / "m.json"),
        ]
    )
    assert status == 0
    assert "inprocess: 1 passed" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# Doc\n\nkept\n") and text.endswith("\ntail\n")
    assert "old" not in text and "| `bb-sts-mx-case` | MX-2 | pass |" in text
    assert (tmp_path / "m-details.html").exists() and html.exists()
    assert '"passed": 1' in (tmp_path / "m.json").read_text()
