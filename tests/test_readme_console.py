"""Every ``console`` block of the README runs as written (issue 16 item 8).

A block is a terminal session: ``$ command`` lines (a line ending in ``\\`` goes on),
each followed by the output it prints. The commands of one block run in one ``bash``
(so ``. ./world.env`` and variables carry over, as in a terminal), in a scratch
directory that holds a symbolic link to each top-level entry of the repository, and
``.venv`` linked to the environment running the tests: files a command writes
(``report.html``, ``broken.toml``) land there, and ``.venv/bin/sts-engine`` is this
environment's. ``PATH`` does not hold that environment, so a bare ``sts-engine`` fails
as it would for a newcomer without an activated environment.

Output shown under a command is compared as :mod:`doctest` compares it (the standard
library's :class:`doctest.OutputChecker`, ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``:
``...`` stands for anything); a command shown without output has only its status
checked. The status must be 0 unless the command's comment says ``[exit N]``.

An HTML comment on the line before a block changes how it runs:

* ``<!-- console: skip REASON -->``: not run; the test is skipped with the reason
  (installs, root, the whole catalog or suite).
* ``<!-- console: background -->``: one long-running command (``sts-harness serve``):
  started, its output read up to its last shown line and compared, then Ctrl-C (SIGINT),
  which must end it with status 0.
* ``<!-- console: world FILE -->``: the block runs while ``sts-harness serve FILE --env
  world.env`` runs beside it (the README's "second terminal").

A block whose commands use ``dig``, ``curl`` or ``jq`` is skipped with the reason where
that tool is missing.
"""

from __future__ import annotations

import contextlib
import doctest
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOOLS = ("dig", "curl", "jq")
# Console scripts and tools of this project's environment: shown with .venv/bin/ always.
OURS = ("sts-harness", "sts-engine", "pytest", "pip", "python")
_FENCE = re.compile(r"^```console\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*console:\s*(skip|background|world)\b\s*(.*?)\s*-->$")
_EXIT = re.compile(r"#.*\[exit (\d+)\]")
_CHECK = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True, slots=True)
class Command:
    """One ``$`` command of a block and the output shown under it."""

    text: str
    want: str

    @property
    def status(self) -> int:
        found = _EXIT.search(self.text)
        return int(found.group(1)) if found else 0


@dataclass(frozen=True, slots=True)
class Block:
    """A ``console`` block: where it is, its directive and its commands."""

    line: int
    directive: str
    argument: str
    commands: tuple[Command, ...]


def console_blocks(text: str) -> list[Block]:
    """The ``console`` blocks of a Markdown text, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i]):
            i += 1
            continue
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        found = _DIRECTIVE.match(before.strip())
        start, i = i + 1, i + 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        blocks.append(
            Block(
                start,
                found.group(1) if found else "",
                found.group(2) if found else "",
                _commands(body),
            )
        )
        i += 1
    return blocks


def _commands(body: list[str]) -> tuple[Command, ...]:
    out: list[tuple[list[str], list[str]]] = []
    going_on = False
    for line in body:
        if going_on:
            out[-1][0].append(line)
        elif line.startswith("$ "):
            out.append(([line[2:]], []))
        elif out:
            out[-1][1].append(line)
        else:
            raise ValueError(f"output before the first command: {line!r}")
        going_on = line.endswith("\\") and not out[-1][1]
    return tuple(Command("\n".join(cmd), "\n".join(want)) for cmd, want in out)


BLOCKS = console_blocks(README.read_text(encoding="utf-8"))


def _same(want: str, got: str) -> bool:
    return doctest.OutputChecker().check_output(want + "\n", got + "\n", _CHECK)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory that looks like the repository to a command, with ``.venv`` this
    test's environment."""
    for entry in ROOT.iterdir():
        if entry.name not in (".venv", ".git") and not entry.name.startswith(".tox"):
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTEST"))}
    ours = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours)
    env["COLUMNS"] = "120"
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    return env


def _start(argv: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", f"exec {argv}"], cwd=cwd, env=_environ(), text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _read_until(process: subprocess.Popen[str], last: str) -> str:
    """Lines of ``process`` up to one that matches ``last`` (or its end); a watchdog
    ends a process that never gets there."""
    assert process.stdout is not None
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if _same(last, lines[-1]):
                break
    finally:
        watchdog.cancel()
    return "\n".join(lines)


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def _world(spec: str, cwd: Path) -> Iterator[None]:
    """``sts-harness serve SPEC --env world.env`` running beside a block."""
    process = _start(f".venv/bin/sts-harness serve {spec} --env world.env", cwd)
    try:
        text = _read_until(process, "ready...")
        assert text.splitlines()[-1:] and text.splitlines()[-1].startswith("ready"), text
        yield
    finally:
        assert _stop(process) == 0


def _missing_tool(block: Block) -> str | None:
    for tool in TOOLS:
        used = any(re.search(rf"(^|[|;&(]\s*){tool}\b", c.text) for c in block.commands)
        if used and shutil.which(tool) is None:
            return tool
    return None


def _run_block(block: Block, cwd: Path) -> list[tuple[int, str]]:
    """Run the commands in one bash; (status, output) per command."""
    token = secrets.token_hex(8)
    script = "".join(f"{c.text}\nprintf '\\n@@{token} %d@@\\n' $?\n" for c in block.commands)
    process = subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=_environ(), text=True, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip  # one stream, as a terminal shows it
    try:
        out, _ = process.communicate(timeout=600)
    finally:  # a command that never ends (a serve without its directive) goes with its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    parts = re.split(rf"\n@@{token} (\d+)@@\n", out)
    assert len(parts) == 2 * len(block.commands) + 1, out
    return [(int(parts[2 * n + 1]), parts[2 * n]) for n in range(len(block.commands))]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_console_block_runs_as_written(block: Block, scratch: Path) -> None:
    if block.directive == "skip":
        pytest.skip(block.argument)
    tool = _missing_tool(block)
    if tool is not None:
        pytest.skip(f"{tool} is not installed")
    if block.directive == "background":
        assert len(block.commands) == 1, "a background block holds one command"
        command = block.commands[0]
        process = _start(command.text, scratch)
        try:
            got = _read_until(process, command.want.splitlines()[-1])
        finally:
            status = _stop(process)
        assert _same(command.want, got), f"$ {command.text}\n{got}"
        assert status == 0, got
        return
    with (
        _world(block.argument, scratch) if block.directive == "world" else contextlib.nullcontext()
    ):
        results = _run_block(block, scratch)
    for command, (status, got) in zip(block.commands, results, strict=True):
        shown = f"$ {command.text}\n{got}"
        assert status == command.status, f"status {status}, not {command.status}:\n{shown}"
        if command.want.strip():
            assert _same(command.want, got), f"expected:\n{command.want}\ngot:\n{shown}"


def test_the_readme_has_console_blocks_that_run() -> None:
    # The parametrized test would pass vacuously on a README without blocks.
    assert sum(b.directive != "skip" for b in BLOCKS) >= 5


def _shown_commands(text: str) -> Iterator[str]:
    """Commands of every console block, and inline code spans that run pytest, pip or
    python."""
    for block in console_blocks(text):
        yield from (c.text for c in block.commands)
    yield from re.findall(r"`((?:pytest|pip|python) [^`\n]+)`", text)


def test_the_readme_shows_our_commands_with_their_environment() -> None:
    # One convention: .venv/bin/NAME. A bare pytest runs whatever pytest is on PATH.
    bare = [
        command
        for command in _shown_commands(README.read_text(encoding="utf-8"))
        for segment in re.split(r"[|;]|&&", command)
        if segment.split()[:1] and segment.split()[0] in OURS
    ]
    assert not bare, bare


def test_blocks_are_read_as_a_terminal_shows_them() -> None:
    text = "<!-- console: world w.toml -->\n```console\n$ a \\\n  b  # [exit 3]\nout\n$ c\n```\n"
    (block,) = console_blocks(text)
    assert (block.directive, block.argument) == ("world", "w.toml")
    assert [(c.text, c.want, c.status) for c in block.commands] == [
        ("a \\\n  b  # [exit 3]", "out", 3),
        ("c", "", 0),
    ]
    assert _same("x ... z", "x 1\n2 z") and not _same("x", "y")
