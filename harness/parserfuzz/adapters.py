"""Targets: a Python callable (``module:function``) or a command, as a verdict function.

Both adapters turn a parser into :class:`~harness.parserfuzz.fuzz.Target`: bytes in,
:class:`~harness.parserfuzz.compare.TargetVerdict` out, never an exception.

Callable convention: the function takes the input as ``bytes`` and its verdict is
its return value's truth (``True``, a parsed dict: accept; ``False``, ``None``, an
empty result: reject); an exception it raises is a reject, recorded with its type
and message.

Command convention: ``{}`` anywhere in the argument list is replaced by the path of
a file holding the input; without ``{}`` the input is on stdin. With
``verdict="exit"``, exit status 0 is accept and any other status reject (death by a
signal, or running past the timeout, is no verdict). With ``verdict="json"``, the
first stdout line that is a JSON object with a boolean ``"accept"`` is the verdict;
no such line is no verdict.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

from harness.errors import HarnessError
from harness.parserfuzz.compare import TargetVerdict

__all__ = ["CallableTarget", "CommandTarget", "TargetError", "load_callable"]

_DETAIL = 200  # characters of a target's output or exception kept per verdict


class TargetError(HarnessError):
    """The target cannot be used at all (not importable, not a program, bad spec)."""


def load_callable(spec: str) -> Callable[[bytes], object]:
    """Import ``module:function`` (dots allowed after the colon: ``mod:Class.method``).

    Raises:
        TargetError: the spec has no colon, the module does not import, or the name
            is missing or not callable.
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise TargetError(f"target {spec!r} is not 'module:function'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"target {spec!r}: cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"target {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"target {spec!r}: {attr!r} is not callable")
    return cast("Callable[[bytes], object]", obj)


class CallableTarget:
    """A Python callable as a target (see the module docstring for the convention)."""

    def __init__(self, function: Callable[[bytes], object]) -> None:
        self._function = function

    def __call__(self, data: bytes, /) -> TargetVerdict:
        try:
            value = self._function(data)
        except TargetError:
            raise  # the target cannot run at all (a missing package): not a verdict
        except Exception as exc:  # a raise is the target's "reject", whatever it is
            return TargetVerdict(False, f"raised {type(exc).__name__}: {exc}"[:_DETAIL])
        return TargetVerdict(bool(value), f"returned {value!r}"[:_DETAIL])


class CommandTarget:
    """A command as a target; a context manager that owns the input file's directory.

    Args:
        argv: the command and its arguments; ``{}`` marks the input file's place.
        verdict: ``"exit"`` (status 0 accepts) or ``"json"`` (a ``{"accept": bool}`` line).
        timeout: seconds one run may take before it counts as no verdict.

    Raises:
        TargetError: empty ``argv``, or its program is not found.
    """

    def __init__(
        self, argv: Sequence[str], *, verdict: Literal["exit", "json"], timeout: float
    ) -> None:
        if not argv:
            raise TargetError("the command is empty")
        if shutil.which(argv[0]) is None:
            raise TargetError(f"command {argv[0]!r} not found")
        self._argv = list(argv)
        self._verdict = verdict
        self._timeout = timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> CommandTarget:
        self._dir = tempfile.TemporaryDirectory(prefix="fuzz-parser-")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __call__(self, data: bytes, /) -> TargetVerdict:
        argv, stdin = self._argv, data
        if "{}" in argv:
            if self._dir is None:
                raise RuntimeError("CommandTarget with {} used outside its 'with' block")
            path = Path(self._dir.name, "input")
            path.write_bytes(data)
            argv, stdin = [str(path) if a == "{}" else a for a in argv], b""
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=self._timeout)
        except subprocess.TimeoutExpired:
            return TargetVerdict(None, f"timed out after {self._timeout} s")
        except OSError as exc:
            return TargetVerdict(None, f"could not run: {exc}"[:_DETAIL])
        if done.returncode < 0:
            return TargetVerdict(None, f"killed by signal {-done.returncode}")
        if self._verdict == "exit":
            return TargetVerdict(done.returncode == 0, f"exit {done.returncode}")
        return _json_verdict(done.stdout, done.returncode)


def _json_verdict(stdout: bytes, status: int) -> TargetVerdict:
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("accept"), bool):
            return TargetVerdict(obj["accept"], line[:_DETAIL])
    shown = stdout[:80].decode("utf-8", "replace")
    return TargetVerdict(None, f'exit {status}, no {{"accept": bool}} line in {shown!r}')
