"""``sts-engine policy lint`` and ``txt lint``: main(argv=[...]) plus one subprocess run."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.commands import UsageError
from engine.commands.lint import split_character_strings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policies"
ENFORCE_BASIC = FIXTURES / "valid" / "enforce-basic.txt"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_policy_lint_valid_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["policy", "lint", str(ENFORCE_BASIC)], capsys)
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "version": "STSv1",
        "mode": "enforce",
        "max_age": 86400,
        "mx": ["mx1.example.com", "mx2.example.com"],
        "extensions": [],
    }


def test_policy_lint_invalid_prints_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "invalid" / "mx-comma-list.txt"
    status, out, err = run(["policy", "lint", str(path)], capsys)
    assert status == 1
    data = json.loads(out)
    assert set(data) == {"error", "reason", "source", "line", "field", "value", "rule"}
    assert (data["error"], data["line"], data["field"], data["rule"]) == (
        "PolicyError",
        6,
        "mx",
        "POL-6",
    )
    assert err.count("\n") == 1 and "POL-6" in err


def test_policy_lint_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "version: STSv1\r\nmode: none\r\nmax_age: 5\r\nnote: café\r\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    status, out, _ = run(["policy", "lint", "-"], capsys)
    assert status == 0
    assert json.loads(out)["extensions"] == [["note", "café"]]


def test_policy_lint_missing_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(["policy", "lint", str(tmp_path / "nope.txt")], capsys)
    assert (status, out) == (2, "")
    assert "cannot read" in err and "Traceback" not in err


def test_txt_lint_selects_record(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["txt", "lint", "v=spf1 -all", '"v=STSv1; " "id=20" "24A"'], capsys)
    assert status == 0
    assert json.loads(out) == {"v": "STSv1", "id": "2024A", "extensions": []}


def test_txt_lint_invalid_record(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["txt", "lint", "v=STSv1; id=ab-12"], capsys)
    assert status == 1
    data = json.loads(out)
    assert data["reason"] == "invalid-record"
    assert data["error"]["rule"] == "DISC-7"
    assert "invalid-record" in err


def test_txt_lint_two_records(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["txt", "lint", "v=STSv1; id=A1", "v=STSv1; id=B2"], capsys)
    assert status == 1
    assert json.loads(out) == {
        "reason": "multiple-records",
        "detail": json.loads(out)["detail"],
        "error": None,
    }


def test_txt_lint_tlsrpt(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["txt", "lint", "--tlsrpt", '"v=TLSRPTv1; rua=mailto:r" "@rpt.example"']
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert json.loads(out)["rua"] == ["mailto:r@rpt.example"]


def test_txt_lint_bad_quoting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["txt", "lint", '"v=STSv1; id=A1'], capsys)
    assert status == 2 and "unterminated" in err


@pytest.mark.parametrize(
    ("arg", "strings"),
    [
        ("v=STSv1; id=A1", [b"v=STSv1; id=A1"]),
        ('"a" "b"', [b"a", b"b"]),
        ('"a\\"b"\t"c\\\\"', [b'a"b', b"c\\"]),
        ('"caf\\195\\169"', ["café".encode()]),
        ('""', [b""]),
    ],
)
def test_split_character_strings(arg: str, strings: list[bytes]) -> None:
    assert split_character_strings(arg) == strings


@pytest.mark.parametrize("arg", ['"a" b', '"a', '"\\256"', '"a\\'])
def test_split_character_strings_rejects(arg: str) -> None:
    with pytest.raises(UsageError):
        split_character_strings(arg)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["policy", "--help"], ["policy", "lint", "--help"], ["txt", "lint", "--help"]],
)
def test_help_has_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert "example" in out


@pytest.mark.parametrize("argv", [[], ["policy"], ["policy", "lint"], ["bogus"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(argv, capsys)
    assert status == 2
    assert "Traceback" not in err


@pytest.mark.slow
def test_installed_script_runs() -> None:
    script = shutil.which("sts-engine", path=str(Path(sys.executable).parent))
    assert script is not None, "sts-engine is not installed in this environment"
    done = subprocess.run(
        [script, "policy", "lint", str(ENFORCE_BASIC)], capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mode"] == "enforce"


@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "lint", str(ENFORCE_BASIC)],
        ["policy", "lint", str(FIXTURES / "invalid" / "mx-comma-list.txt")],
        ["txt", "lint", "v=STSv1; id=A1"],
        ["txt", "lint", "v=STSv1; id=A1", "v=STSv1; id=B2"],
    ],
)
def test_lint_json_is_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    # Issue 16 item 3: the README shows one line per result; line-oriented tools read it.
    main(argv)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("}\n")
    json.loads(out)
