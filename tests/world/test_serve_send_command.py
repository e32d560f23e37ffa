"""``sts-harness serve`` prints an ``sts-engine send`` command that applies MTA-STS and DANE
when run as printed (issue 16 item 1)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from harness.commands.serve import serve

ROOT = Path(__file__).resolve().parents[2]
W_STS = ROOT / "fixtures" / "worlds" / "w-sts.toml"
W_DANE = W_STS.with_name("w-dane.toml")


@pytest.mark.parametrize(
    ("world_file", "applied"),
    [
        (W_STS, "Info: MTA-STS policy for the domain (example.com) Successful."),
        (W_DANE, "Info: DCID 1 DANE Success for MX host mx1.example.com"),
    ],
    ids=["w-sts", "w-dane"],
)
async def test_the_printed_send_command_applies_mta_sts_and_dane(
    world_file: Path, applied: str
) -> None:
    # Issue 16 item 1: the printed command had no --config, so it ran on the built-in
    # defaults (TLS No) and delivered to the enforce domain in clear, saying nothing.
    stop, ready, out = asyncio.Event(), asyncio.get_running_loop().create_future(), io.StringIO()
    task = asyncio.create_task(serve(world_file, stop=stop, ready=ready, out=out))
    await ready
    (command,) = [line.strip() for line in out.getvalue().splitlines() if " send " in line]
    assert " --config " in command
    process = await asyncio.create_subprocess_shell(
        command, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    stop.set()
    assert await task == 0
    lines = stdout.decode().splitlines()
    assert process.returncode == 0, stderr.decode()
    assert (
        "Info: Destination Controls for the domain (example.com): TLS preferred, "
        "DANE opportunistic, MTA-STS on (from /"
    ) in lines[0]
    assert any(line.endswith(applied) for line in lines)
    assert any(" TLS success protocol TLSv1." in line for line in lines)
