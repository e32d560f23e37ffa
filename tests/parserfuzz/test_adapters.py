"""Callable and command targets (harness/parserfuzz/adapters.py)."""

from __future__ import annotations

import sys

import pytest

from harness.parserfuzz import CallableTarget, CommandTarget, TargetError, load_callable

PY = sys.executable
# A tiny "parser": accepts an input containing b"mode: enforce".
ACCEPTS_ENFORCE = "import sys; sys.exit(0 if b'mode: enforce' in sys.stdin.buffer.read() else 3)"
JSON_FROM_FILE = (
    "import json, sys; data = open(sys.argv[1], 'rb').read(); "
    "print('parsing...'); print(json.dumps({'accept': b'enforce' in data, 'why': 'x'}))"
)


def test_callable_truthy_falsy_and_raise() -> None:
    assert CallableTarget(lambda d: {"mode": "x"})(b"").accept is True
    assert CallableTarget(lambda d: None)(b"").accept is False
    verdict = CallableTarget(lambda d: int(d))(b"x")
    assert verdict.accept is False and verdict.detail.startswith("raised ValueError")


def test_callable_target_error_is_not_a_verdict() -> None:
    def missing(data: bytes) -> bool:
        raise TargetError("not installed")

    with pytest.raises(TargetError):
        CallableTarget(missing)(b"")


def test_command_exit_status_on_stdin() -> None:
    with CommandTarget([PY, "-c", ACCEPTS_ENFORCE], verdict="exit", timeout=30) as target:
        assert target(b"mode: enforce\n").accept is True
        rejected = target(b"mode: testing\n")
    assert (rejected.accept, rejected.detail) == (False, "exit 3")


def test_command_json_line_from_file_argument() -> None:
    with CommandTarget([PY, "-c", JSON_FROM_FILE, "{}"], verdict="json", timeout=30) as target:
        yes, no = target(b"mode: enforce"), target(b"mode: none")
    assert (yes.accept, no.accept) == (True, False)
    assert '"why": "x"' in yes.detail


def test_command_without_a_json_verdict_gives_none() -> None:
    with CommandTarget([PY, "-c", "print('ok')"], verdict="json", timeout=30) as target:
        verdict = target(b"")
    assert verdict.accept is None and 'no {"accept": bool} line' in verdict.detail


def test_command_killed_by_a_signal_gives_none() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with CommandTarget([PY, "-c", code], verdict="exit", timeout=30) as target:
        assert target(b"") == target(b"x")
        assert target(b"").accept is None and "signal 9" in target(b"").detail


def test_command_past_its_timeout_gives_none() -> None:
    code = "import sys; sys.stdin.read(); import threading; threading.Event().wait()"
    with CommandTarget([PY, "-c", code], verdict="exit", timeout=0.3) as target:
        verdict = target(b"")
    assert verdict.accept is None and "timed out" in verdict.detail


def test_command_not_found() -> None:
    with pytest.raises(TargetError, match="not found"):
        CommandTarget(["no-such-parser-xyz"], verdict="exit", timeout=1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not 'module:function'"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("tests.parserfuzz.planted:nope", "has no attribute 'nope'"),
        ("tests.parserfuzz.planted:not_callable", "is not callable"),
    ],
)
def test_load_callable_errors(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message.replace("(", r"\(")):
        load_callable(spec)


def test_load_callable_finds_the_function() -> None:
    assert load_callable("tests.parserfuzz.planted:any_mode")(
        b"version: STSv1\nmode: x\nmax_age: 1"
    )
