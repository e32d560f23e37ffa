"""Every command of ``sts-engine`` and ``sts-harness`` ends quietly on a closed pipe and
on Ctrl-C (issue 16 item 4).

Each command runs as a process, two ways:

* stdout is a pipe whose reader has already gone (``cmd | head -0``, the harshest form
  of ``| head -1``): the command must end with status 141 (or, for a case that writes
  nothing on stdout, its ordinary status) and print no traceback;
* Ctrl-C arrives while it works: an audit hook (``sys.addaudithook``) in the child sends
  SIGINT to the child's process group, as a terminal does, the first time the command
  reaches a chosen point (opening its configuration, creating a socket, opening SQLite
  ...); the command must end with status 130 (or 0 where SIGINT is a clean stop) and
  print no traceback. The hook writes a marker first, so the test knows the signal
  was sent.

The table of cases is checked against the parsers, so a new command without a case
fails :func:`test_every_command_has_a_case`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import build_parser as engine_parser
from engine.gateway.queue import Queue
from harness.cli import build_parser as harness_parser

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"

# The child: arm an audit hook, run the program's main(), exit with its status.
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    event, _, needle = os.environ.get("SIGINT_AT", "").partition(":")
    armed = False
    def hook(name, args):
        global armed
        if armed and name == event and needle in repr(args):
            armed = False
            os.write(2, b"[SIGINT sent]\\n")
            os.killpg(os.getpgid(0), signal.SIGINT)
    sys.addaudithook(hook)
    program = sys.argv[1]
    if program == "sts-engine":
        from engine.cli import main
    else:
        from harness.cli import main
    armed = bool(event)
    sys.exit(main(sys.argv[2:]))
    """
)


@dataclass(frozen=True)
class Case:
    """One command: its argv (``{dir}``, ``{config}``, ``{gateway}`` filled in), its
    stdin, the audit event (``name`` or ``name:substring of its arguments``) at which
    Ctrl-C comes, and the statuses expected."""

    argv: tuple[str, ...]
    sigint_at: str
    stdin: bytes = b""
    pipe_status: int = 141
    sigint_status: int = 130
    gateway: bool = False  # needs a running gateway (status, commit)


_CFG = ("--config", "{config}")
_WORLD_DNS = ("--resolver", "127.0.0.1:9")  # the discard port: nothing answers there
_SCENARIO = "scenarios/examples/sts-enforce-mx1-bad.toml"

ENGINE: dict[tuple[str, ...], Case] = {
    ("destconfig", "list"): Case(("destconfig", "list", *_CFG), "open:engine.toml"),
    ("destconfig", "show"): Case(("destconfig", "show", "example.com", *_CFG), "open:engine"),
    ("destconfig", "new"): Case(("destconfig", "new", "new.example", *_CFG), "open:engine"),
    ("destconfig", "edit"): Case(
        ("destconfig", "edit", "example.com", "--tls", "required", "--yes", *_CFG), "open:engine"
    ),
    ("policy", "lint"): Case(
        ("policy", "lint", "fixtures/policies/valid/enforce-basic.txt"), "open:enforce-basic"
    ),
    ("policy", "list"): Case(("policy", "list", *_CFG), "sqlite3.connect"),
    # Nothing cached: `show` answers on stderr only, so a closed stdout changes nothing.
    ("policy", "show"): Case(
        ("policy", "show", "example.com", *_CFG), "sqlite3.connect", pipe_status=1
    ),
    ("policy", "purge"): Case(("policy", "purge", "example.com", *_CFG), "sqlite3.connect"),
    ("policy", "refresh"): Case(("policy", "refresh", "example.com", *_CFG), "socket.__new__"),
    ("txt", "lint"): Case(("txt", "lint", "v=STSv1; id=A1"), "import"),
    ("queue", "list"): Case(("queue", "list", *_CFG), "sqlite3.connect"),
    ("queue", "show"): Case(("queue", "show", "1", *_CFG), "sqlite3.connect"),
    ("queue", "retry"): Case(("queue", "retry", *_CFG), "sqlite3.connect"),
    ("queue", "delete"): Case(("queue", "delete", "1", *_CFG), "sqlite3.connect"),
    ("queue", "bounce"): Case(("queue", "bounce", "1", *_CFG), "sqlite3.connect"),
    ("queue", "check"): Case(("queue", "check", *_CFG), "sqlite3.connect"),
    ("queue", "salvage"): Case(
        ("queue", "salvage", "--from", "{dir}/queue.sqlite", "--config", "{dir}/salvage.toml"),
        "sqlite3.connect",
    ),
    ("send",): Case(
        ("send", *_CFG, *_WORLD_DNS, "--from", "a@sender.example", "--to", "b@example.com", "-"),
        "socket.__new__",
        stdin=MESSAGE,
    ),
    ("check",): Case(("check", "example.com", *_CFG, *_WORLD_DNS), "socket.__new__"),
    ("serve",): Case(("serve", *_CFG), "socket.bind"),
    ("commit",): Case(("commit", "--config", "{gateway}"), "socket.connect", gateway=True),
    ("status",): Case(("status", "--config", "{gateway}"), "socket.connect", gateway=True),
    ("users", "hash"): Case(("users", "hash", "alice"), "import", stdin=b"secret\n"),
}

HARNESS: dict[tuple[str, ...], Case] = {
    ("capture",): Case(
        ("capture", "example.com", *_WORLD_DNS, "--timeout", "0.5"), "socket.__new__"
    ),
    ("list",): Case(("list", "scenarios/examples"), "open:examples"),
    ("show",): Case(("show", "dane-ee-delivery", "--root", "scenarios/examples"), "open:dane-ee"),
    ("coverage",): Case(("coverage", "scenarios/examples"), "open:examples"),
    ("profiles",): Case(("profiles",), "import"),
    ("profile", "check"): Case(
        ("profile", "check", "fixtures/engines/postfix-sts.toml", "--no-binaries"),
        "open:postfix-sts",
    ),
    ("fuzz",): Case(
        ("fuzz", "--engine", "inprocess", "--worlds", "2", "--seed", "1", "-q"), "socket.__new__"
    ),
    ("fuzz-parser",): Case(
        ("fuzz-parser", "--command", "true", "--kind", "txt", "--inputs", "5", "--seed", "1"),
        "subprocess.Popen",
    ),
    ("matrix",): Case(("matrix", _SCENARIO, "--engines", "inprocess"), "socket.__new__"),
    ("run",): Case(("run", _SCENARIO), "socket.__new__"),
    ("serve",): Case(("serve", "fixtures/worlds/w-sts.toml"), "socket.bind"),
}


def _leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaves(sub, (*prefix, name))
            return
    yield prefix


def test_every_command_has_a_case() -> None:
    assert set(_leaves(engine_parser())) == set(ENGINE)
    assert set(_leaves(harness_parser())) == set(HARNESS)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A configuration (queue, policy cache, listener on port 0) and a queue with MID 1."""
    (tmp_path / "engine.toml").write_text(
        textwrap.dedent(
            f"""
            [destination_controls.default]
            tls = "preferred"
            [destination_controls."example.com"]
            tls = "preferred"
            mta_sts = true
            [tls]
            ca_file = "system"
            [dns]
            resolvers = ["127.0.0.1:9"]
            timeout = 0.5
            [policy_fetch]
            timeout = 0.5
            [queue]
            path = "{tmp_path / "queue.sqlite"}"
            [listener]
            host = "127.0.0.1"
            port = 0
            """
        )
    )
    (tmp_path / "salvage.toml").write_text(
        f'[tls]\nca_file = "system"\n[queue]\npath = "{tmp_path / "salvaged.sqlite"}"\n'
    )
    with Queue(tmp_path / "queue.sqlite") as queue:
        queue.enqueue("a@sender.example", ["b@example.com"], MESSAGE, 1_800_000_000.0)
    return tmp_path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running ``sts-engine serve`` (for ``status`` and ``commit``); its configuration."""
    where = tmp_path_factory.mktemp("gateway")
    config = where / "gateway.toml"
    config.write_text(
        f'[tls]\nca_file = "system"\n[queue]\npath = "{where / "queue.sqlite"}"\n'
        '[listener]\nhost = "127.0.0.1"\nport = 0\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    ready = process.stdout.readline()  # the listener's line: the gateway is up
    assert b"listening on" in ready, (ready, process.stderr.read() if process.stderr else b"")
    # status asks the control socket, which opens right after the listener; wait for it.
    probe = subprocess.run(
        [sys.executable, "-m", "engine.cli", "status", "--config", str(config)],
        cwd=ROOT, capture_output=True, timeout=30,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    yield config
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)


def _argv(case: Case, workdir: Path, gateway: Path | None) -> list[str]:
    fill = {"dir": str(workdir), "config": str(workdir / "engine.toml"), "gateway": str(gateway)}
    return [part.format(**fill) for part in case.argv]


def _run(program: str, argv: list[str], case: Case, *, closed_stdout: bool) -> tuple[int, str]:
    env = dict(os.environ)
    if closed_stdout:
        read_end, stdout = os.pipe()
        os.close(read_end)  # the reader is gone before the first byte
    else:
        stdout = subprocess.DEVNULL
        env["SIGINT_AT"] = case.sigint_at
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, program, *argv],
            cwd=ROOT, input=case.stdin, stdout=stdout, stderr=subprocess.PIPE, env=env,
            start_new_session=True, timeout=120,
        )  # fmt: skip
    finally:
        if closed_stdout:
            os.close(stdout)
    return done.returncode, done.stderr.decode(errors="replace")


def _cases() -> list[object]:
    out: list[object] = []
    for program, table in (("sts-engine", ENGINE), ("sts-harness", HARNESS)):
        for path, case in table.items():
            out.append(pytest.param(program, case, id=f"{program} {' '.join(path)}"))
    return out


@pytest.mark.parametrize(("program", "case"), _cases())
def test_closed_stdout_ends_the_command_quietly(
    program: str, case: Case, workdir: Path, request: pytest.FixtureRequest
) -> None:
    gateway = request.getfixturevalue("gateway") if case.gateway else None
    status, err = _run(program, _argv(case, workdir, gateway), case, closed_stdout=True)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert status == case.pipe_status, err


@pytest.mark.parametrize(("program", "case"), _cases())
def test_ctrl_c_ends_the_command_quietly(
    program: str, case: Case, workdir: Path, request: pytest.FixtureRequest
) -> None:
    gateway = request.getfixturevalue("gateway") if case.gateway else None
    status, err = _run(program, _argv(case, workdir, gateway), case, closed_stdout=False)
    assert "[SIGINT sent]" in err, f"the command never reached {case.sigint_at}: {err}"
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert status == case.sigint_status, err


def test_destconfig_list_into_head_is_quiet(workdir: Path) -> None:
    # The issue's own reproduction, through a real shell pipe.
    config = workdir / "engine.toml"
    done = subprocess.run(
        f"{sys.executable} -m engine.cli destconfig list --config {config} | head -1",
        shell=True, cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.stdout == b"Default\n"
    assert done.stderr == b""
