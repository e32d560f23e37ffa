"""``sts-harness fuzz-parser`` (harness/commands/fuzz_parser.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

AGREE = "tests.parserfuzz.planted:agreeing_txt"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["fuzz-parser", "-q", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_agreeing_target_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--kind", "txt", "--inputs", "60", "--callable", AGREE)
    assert status == 0
    assert "60 inputs" in out and "0 disagreements (0.0%)" in out


def test_lenient_target_exits_1_and_writes_the_corpus(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, _ = _run(
        capsys, "--inputs", "150", "--seed", "3", "--shrink-time", "5", "--corpus", str(tmp_path),
        "--callable", "tests.parserfuzz.planted:any_mode",
    )  # fmt: skip
    assert status == 1
    assert "target accepts what RFC 8461 rejects" in out and "POL-4" in out
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["target"] == "tests.parserfuzz.planted:any_mode"
    assert [row["rule"] for row in index["findings"]] == ["POL-4"]
    assert (tmp_path / index["findings"][0]["file"]).exists()


def test_command_target_exit_mode(capsys: pytest.CaptureFixture[str]) -> None:
    # `true` accepts everything: every input our reader rejects is a disagreement.
    status, out, _ = _run(
        capsys,
        "--kind",
        "txt",
        "--inputs",
        "15",
        "--max-findings",
        "1",
        "--shrink-time",
        "2",
        "--command",
        "true",
    )
    assert status == 1 and "15 inputs" in out and "target accepts" in out


def test_command_target_json_mode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Accepts a record with "id=" in it; the verdict is a JSON line after other output.
    script = tmp_path / "check.sh"
    script.write_text(
        'echo parsing\nif grep -q "id=" "$1"; then echo \'{"accept": true}\'; '
        "else echo '{\"accept\": false}'; fi\n"
    )
    corpus = tmp_path / "corpus"
    status, out, _ = _run(
        capsys, "--kind", "txt", "--inputs", "30", "--max-findings", "1", "--shrink-time", "2",
        "--verdict", "json", "--corpus", str(corpus), "--command", f"sh {script} {{}}",
    )  # fmt: skip
    assert status == 1 and "30 inputs" in out
    index = json.loads((corpus / "index.json").read_text())
    record = json.loads((corpus / index["findings"][0]["file"]).read_text())
    assert record["target"]["detail"] in ('{"accept": true}', '{"accept": false}')


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--inputs", "0", "--callable", AGREE], "--inputs must be more than 0"),
        (["--kind", "dns", "--callable", AGREE], "invalid choice: 'dns'"),
        (["--verdict", "json", "--callable", AGREE], "--verdict applies to --command only"),
        (["--callable", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["--callable", "nocolon"], "is not 'module:function'"),
        (["--command", "no-such-parser-xyz {}"], "command 'no-such-parser-xyz' not found"),
        (["--command", "'unbalanced"], "No closing quotation"),
        ([], "one of the arguments --callable --command is required"),
        (["--seed", "-1", "--callable", AGREE], "--seed must be 0 or more"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = _run(capsys, *argv)
    assert status == 2
    assert message in err and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""


def test_corpus_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    status, _, err = _run(capsys, "--corpus", str(f), "--callable", AGREE)
    assert status == 2 and "not a directory" in err


def test_missing_hypothesis_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    status, _, err = _run(capsys, "--callable", AGREE)
    assert status == 2 and "needs hypothesis: pip install" in err


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("sts-harness")
    done = subprocess.run(
        [str(exe), "fuzz-parser", "--kind", "txt", "--inputs", "5", "--callable", "nope:f"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("sts-harness fuzz-parser: target 'nope:f': cannot import")
