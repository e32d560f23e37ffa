"""ManagedProcess ``logs``: an MTA's log files are read as its output, first line included."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from harness.adapters.blackbox import proc as proc_module
from harness.adapters.blackbox.proc import ManagedProcess

# Appends its readiness line to the log file argv[1], says so through the FIFO argv[2],
# then waits to be stopped.
PROGRAM = (
    "import sys, time; open(sys.argv[1], 'a').write('daemon started\\n'); "
    "open(sys.argv[2], 'w').write('x'); time.sleep(60)"
)


async def test_lines_written_before_the_follower_starts_are_read(tmp_path, monkeypatch):
    # The program writes its first line before the follower runs (Exim under load did):
    # the follower must start from where the file ended *before* the program started.
    log, fifo = tmp_path / "mainlog", tmp_path / "written"
    log.write_text("", encoding="utf-8")
    os.mkfifo(fifo)
    real = asyncio.create_subprocess_exec

    async def program_first(*argv: str, **kw: object) -> asyncio.subprocess.Process:
        started = await real(*argv, **kw)  # type: ignore[arg-type]
        if argv[0] == sys.executable:  # the program, not a follower: wait for its line
            await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 10)
        return started

    monkeypatch.setattr(proc_module.asyncio, "create_subprocess_exec", program_first)
    argv = [sys.executable, "-c", PROGRAM, str(log), str(fifo)]
    p = ManagedProcess("mta", argv, env=dict(os.environ), logs=[str(log)])
    await p.start()
    try:
        i = await p.wait_for("daemon started", 5)
        assert p.lines[i] == ("log", "daemon started")
    finally:
        await p.stop()


async def test_a_restart_does_not_reread_the_last_runs_lines(tmp_path):
    log = tmp_path / "mainlog"
    log.write_text("daemon started\n", encoding="utf-8")  # the previous run's
    p = ManagedProcess("mta", [sys.executable, "-c", "import time; time.sleep(60)"],
                       env=dict(os.environ), logs=[str(log)])  # fmt: skip
    await p.start()
    try:
        with pytest.raises(Exception, match="no line matching"):
            await p.wait_for("daemon started", 0.5)
        with log.open("a", encoding="utf-8") as f:
            f.write("daemon started again\n")
        i = await p.wait_for("daemon started", 5)
        assert p.lines[i][1] == "daemon started again"
    finally:
        await p.stop()
