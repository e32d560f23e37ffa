"""The gateway's rounds are supervised, and a bad queue never gets a promise (issue 13).

In process through the simulated world (``tests/gateway/sim.py``): a step of a round
that fails is one line, once, and the other steps go on; the serve loop outlives it
and backs off; a full disk fails the round cleanly and delivery resumes when space
returns; a damaged queue is refused before the listener opens, and ``sts-engine
serve`` says so in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
from pathlib import Path

import pytest

from engine.cli import main
from engine.gateway.queue import QueueCorrupt, RcptState
from engine.logs import MailLogWriter
from tests.gateway.conftest import inject, make_gateway, texts, write_config
from tests.gateway.test_queue_file import ROOT, _corrupt_pages, _filled, _tmpfs


async def test_a_failing_step_is_one_line_and_delivery_goes_on(sim, tmp_path):
    gw, sink = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        refresh = gw.engine.refresh_policies

        async def broken(now: float | None = None) -> int:
            raise RuntimeError("policy store\nunreadable")

        gw.engine.refresh_policies = broken  # type: ignore[method-assign]
        for _ in range(3):
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            await gw.run_due()  # before: the RuntimeError ended the round, unsent
        assert gw.failing
        gw.engine.refresh_policies = refresh  # type: ignore[method-assign]
        await gw.run_once()
        assert not gw.failing
        await sim.mx1.settle()
    assert len(sim.mx1.messages) == 3
    lines = texts(sink)
    failed = [line for line in lines if line.startswith("Gateway policy refresh")]
    assert failed == [
        "Gateway policy refresh failed, retrying: RuntimeError: policy store unreadable",
        "Gateway policy refresh works again",
    ]
    writer = MailLogWriter(io.StringIO(), level="debug")  # what mail_logs would show
    assert not any("Traceback" in (writer.line(e) or "") for e in sink.events)
    assert any("Traceback" in str(e.fields) for e in sink.events)  # the JSON log has it


async def test_the_serve_loop_outlives_a_failing_round_and_backs_off(sim, tmp_path):
    gw, sink = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        rounds = 0
        run_once = gw.scheduler.run_once

        async def flaky(now: float | None = None):  # type: ignore[no-untyped-def]
            nonlocal rounds
            rounds += 1
            if rounds == 1:
                raise RuntimeError("first round breaks")
            return await run_once(now)

        gw.scheduler.run_once = flaky  # type: ignore[method-assign]
        delivered = asyncio.Event()
        accept = sim.mx1.message_delivered

        def accepted(message: object) -> None:
            accept(message)  # type: ignore[arg-type]
            delivered.set()

        sim.mx1.message_delivered = accepted  # type: ignore[method-assign]
        stop = asyncio.Event()
        serving = asyncio.create_task(gw.serve(stop, timed=False))
        await inject(gw, "alice@sender.example", ["bob@example.com"])  # round 1 breaks
        await asyncio.wait_for(delivered.wait(), 30)  # woken again: round 2 delivers
        stop.set()
        gw.notify()
        await asyncio.wait_for(serving, 30)  # the loop ended because it was told to
    assert rounds >= 2
    lines = texts(sink)
    assert "Gateway delivery failed, retrying: RuntimeError: first round breaks" in lines


@pytest.mark.skipif(not ROOT, reason="mounting a tiny tmpfs needs root")
async def test_a_full_disk_fails_the_round_cleanly_and_delivery_resumes(sim, tmp_path):
    with _tmpfs(tmp_path / "mnt", "2m") as mnt:
        gw, sink = make_gateway(sim, write_config(sim, mnt))
        async with gw:
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            filler = mnt / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            for _ in range(2):
                await gw.run_once()  # the claim cannot be written
            assert gw.failing and sim.mx1.messages == ()
            filler.unlink()
            await gw.run_once()
            await sim.mx1.settle()
            assert len(sim.mx1.messages) == 1
            [row] = gw.queue.list(include_done=True)
            assert row.state is RcptState.DELIVERED
    failed = [line for line in texts(sink) if line.startswith("Gateway delivery")]
    assert len(failed) == 2 and "the disk is full" in failed[0]
    assert failed[1] == "Gateway delivery works again"


async def test_a_damaged_queue_is_refused_before_the_listener_opens(sim, tmp_path):
    _filled(tmp_path / "queue.sqlite")
    _corrupt_pages(tmp_path / "queue.sqlite")
    gw, _ = make_gateway(sim, write_config(sim, tmp_path))
    with pytest.raises(QueueCorrupt, match=r"is damaged \(quick_check: .*docs/hardening.md"):
        await gw.__aenter__()
    assert gw.listener is None


@pytest.mark.parametrize("damage", ["empty", "pages"])
def test_serve_refuses_a_bad_queue_in_one_line(sim, tmp_path, capsys, damage):
    path = tmp_path / "queue.sqlite"
    if damage == "empty":
        path.touch()
    else:
        _filled(path)
        _corrupt_pages(path)
    config = write_config(sim, tmp_path)
    assert main(["serve", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(f"sts-engine: error: queue '{path}': ")
    assert "docs/hardening.md" in captured.err
    assert not (tmp_path / "sts-engine.pid").exists()


def test_serve_as_a_process_refuses_a_zero_length_queue(tmp_path: Path) -> None:
    (tmp_path / "queue.sqlite").touch()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[queue]\npath = "{tmp_path / "queue.sqlite"}"\n[tls]\nca_file = "system"\n')
    done = subprocess.run(
        [str(Path(__import__("sys").executable).with_name("sts-engine")), "serve", "--config",
         str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "is empty (0 bytes)" in done.stderr
    assert (tmp_path / "queue.sqlite").stat().st_size == 0


async def test_finished_messages_are_purged_after_keep_done(sim, tmp_path):
    """Before, nothing purged them: the queue file grew with every message ever sent."""
    gw, _ = make_gateway(sim, write_config(sim, tmp_path), keep_done=3600.0)
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        await gw.run_once()
        assert gw.queue.is_done(1)
        sim.clock.set(sim.clock.now() + 3599)
        await gw.run_once()
        assert gw.queue.message(1) is not None  # still shown by queue show, status --mid
        sim.clock.set(sim.clock.now() + 2)
        await gw.run_once()
        assert gw.queue.message(1) is None


def test_serve_whose_loop_dies_stops_accepting_and_exits_1(sim, tmp_path, capsys, monkeypatch):
    from engine.gateway.gateway import Gateway

    async def dies(self: Gateway, stop: asyncio.Event, *, timed: bool = True) -> None:
        raise RuntimeError("the loop broke")

    monkeypatch.setattr(Gateway, "serve", dies)
    assert main(["serve", "--config", str(write_config(sim, tmp_path))]) == 1
    out = capsys.readouterr()
    said = "Gateway stopped accepting mail, exiting: the delivery loop failed: RuntimeError: "
    assert said + "the loop broke\n" in out.out
    assert "Traceback" not in out.out + out.err
