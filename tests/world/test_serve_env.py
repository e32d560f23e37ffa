"""``sts-harness serve --env FILE``: the world's addresses as shell variables for a second
terminal (the README's "First five minutes" sources it), there while the world runs."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
from pathlib import Path

from harness.commands.serve import serve

W_STS = Path(__file__).resolve().parents[2] / "fixtures" / "worlds" / "w-sts.toml"


async def test_the_env_file_names_the_running_world_and_goes_with_it(tmp_path: Path) -> None:
    env = tmp_path / "world.env"
    stop, ready, out = asyncio.Event(), asyncio.get_running_loop().create_future(), io.StringIO()
    task = asyncio.create_task(serve(W_STS, stop=stop, ready=ready, out=out, env=env))
    world = await ready
    shown = dict(
        line.split("=", 1)
        for line in subprocess.run(
            ["bash", "-c", f". {env} && env"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if "=" in line
    )
    host, port = world.resolver
    assert (shown["DNS_HOST"], shown["DNS_PORT"]) == (host, str(port))
    assert Path(shown["CONFIG"]).is_file() and Path(shown["CA"]) == Path(world.ca_file)
    mx1 = world.hosts["mx1.example.com"]
    assert shown["MX1_EXAMPLE_COM"] == f"{mx1.address}:{mx1.port}"
    assert f"dns: {host}:{port}" in out.getvalue()
    stop.set()
    assert await task == 0
    assert not env.exists()  # the addresses die with the world


async def test_an_env_file_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    err = io.StringIO()
    env = tmp_path / "no-such-dir" / "world.env"
    assert await serve(W_STS, out=io.StringIO(), err=err, env=env) == 2
    assert err.getvalue().count("\n") == 1 and "--env" in err.getvalue(), err.getvalue()


class _CtrlCOnReady(io.StringIO):
    """An ``out`` that gets Ctrl-C (SIGINT to this process) as the text is written, as a
    user pressing it the moment "ready" shows."""

    def write(self, text: str) -> int:
        written = super().write(text)
        if "ready" in text:
            os.kill(os.getpid(), signal.SIGINT)
        return written


async def test_ctrl_c_at_ready_is_a_clean_stop() -> None:
    # The signal handlers came after the text: a Ctrl-C right at "ready" was a
    # KeyboardInterrupt (status 130 from the command) instead of a stop.
    out = _CtrlCOnReady()
    assert await asyncio.wait_for(serve(W_STS, out=out, signals=True), timeout=60) == 0
    assert "ready" in out.getvalue()
