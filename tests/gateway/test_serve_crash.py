"""A real ``sts-engine serve`` killed with SIGKILL mid-delivery loses nothing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiosmtplib

from engine.gateway.queue import Queue, RcptState
from tests.gateway.sim import Sim, SimWorld

TIMEOUT = 30.0
_READY = re.compile(rb"sts-engine listening on (\S+) port (\d+)")


async def start_serve(
    sim: Sim, config: Path, endpoints: Path
) -> tuple[asyncio.subprocess.Process, int, bytes]:
    """Start the gateway; return it, its listener port and its log once it is ready."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--config",
        str(config),
        "--endpoints",
        str(endpoints),
        "--grace",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    seen = b""
    async with asyncio.timeout(TIMEOUT):
        while line := await proc.stdout.readline():
            seen += line
            if m := _READY.search(line):
                return proc, int(m.group(2)), seen
    raise AssertionError(f"serve exited before it was ready: {await proc.wait()}")


async def drain(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    return await proc.stdout.read()


async def test_sigkill_mid_delivery_then_restart_delivers_at_least_once(tmp_path):
    async with SimWorld(tmp_path, slow=True) as sim:
        assert sim.slow is not None
        config = tmp_path / "gateway.toml"
        config.write_text(sim.config_text(tmp_path / "queue.sqlite"))
        endpoints = sim.endpoints_json(tmp_path / "endpoints.json")

        proc, port, _ = await start_serve(sim, config, endpoints)
        out = asyncio.create_task(drain(proc))
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=TIMEOUT) as client:
            await client.sendmail(
                "alice@sender.example", ["carol@slow.example"], b"Subject: x\r\n\r\nbody\r\n"
            )
        # Readiness from the MX itself: the whole message arrived and the MX is holding
        # back its reply, so the gateway is mid-delivery.
        await asyncio.wait_for(sim.slow.data_seen.wait(), TIMEOUT)
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        await out
        with Queue(tmp_path / "queue.sqlite") as q:
            [row] = q.list()
            assert row.state is RcptState.INFLIGHT  # leased by the dead process, not lost

        sim.slow.hang = False
        proc, _, startup = await start_serve(sim, config, endpoints)
        out = asyncio.create_task(drain(proc))
        await asyncio.wait_for(sim.slow.delivered.wait(), TIMEOUT)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        log = await out
        assert b"Queue recovered 1 recipients left in flight" in startup
        assert b"New SMTP DCID 2 " in log  # DCIDs are persistent across restarts
        assert not (tmp_path / "sts-engine.pid").exists()
        with Queue(tmp_path / "queue.sqlite") as q:
            msg = q.message(1)
            assert msg is not None and msg.recipients[0].state is RcptState.DELIVERED
        assert len(sim.slow.messages) >= 1  # at least once
        assert os.path.exists(tmp_path / "queue.sqlite")
