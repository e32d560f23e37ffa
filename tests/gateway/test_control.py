"""The gateway's one round loop (run_due, advance) and its control socket (gateway.control)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat

import pytest

from engine.cli import main
from engine.config import load_config
from engine.delivery.agent import SystemClock
from engine.gateway.control import ControlBusy, ControlServer, control_path
from engine.gateway.queue import RcptState
from harness.world.mta.script import Script, ScriptedReply
from tests.gateway.conftest import inject, make_gateway, texts, write_config
from tests.gateway.sim import SimWorld


async def _ask(path, *requests):
    reader, writer = await asyncio.open_unix_connection(str(path))
    replies = []
    for req in requests:
        writer.write((req if isinstance(req, bytes) else json.dumps(req).encode()) + b"\n")
        await writer.drain()
        replies.append(json.loads(await reader.readline()))
    writer.close()
    await writer.wait_closed()
    return replies


async def test_run_due_delivers_the_bounce_and_the_dsn_it_caused_in_one_call(tmp_path):
    async with SimWorld(
        tmp_path,
        mx1_script=Script(rcpt={"bob@example.com": ScriptedReply(550, "5.1.1 no such user")}),
    ) as sim:
        gw, sink = make_gateway(sim, write_config(sim, tmp_path))
        async with gw:
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            rounds = await gw.run_due()
            await sim.sender_mx.settle()
            original, dsn = gw.queue.message(1), gw.queue.message(2)
        assert rounds == 2  # the attempt, then the DSN it queued
        assert original is not None and original.recipients[0].state is RcptState.BOUNCED
        assert dsn is not None and dsn.recipients[0].state is RcptState.DELIVERED
        [mailed] = sim.sender_mx.messages
        assert mailed.mail_from in ("", "<>")
        # The last attempt per recipient is kept beside the queue's verdict.
        attempt = gw.attempts[1][0]
        assert (attempt.status, attempt.mx, attempt.verified) == (
            "bounced",
            "mx1.example.com",
            "pkix",
        )
        assert "MID 2 DSN (failed) generated for MID 1 to <alice@sender.example>" in texts(sink)


async def test_advance_walks_every_due_time_with_a_round_at_each(tmp_path):
    async with SimWorld(tmp_path, mx1_script=Script(data=ScriptedReply(451, "4.3.2 later"))) as sim:
        gw, _ = make_gateway(sim, write_config(sim, tmp_path))
        async with gw:
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            start = sim.clock.now()
            assert await gw.run_due() == 1
            # Retries at +60 and +180 (60 s doubling) fall inside 200 s; then one round
            # at the target itself.
            rounds = await gw.advance(200)
            [row] = gw.queue.list()
        assert rounds == 3
        assert sim.clock.now() == start + 200
        assert row.attempts == 3 and row.next_attempt_at == start + 180 + 240


async def test_advance_refuses_the_wall_clock(tmp_path):
    async with SimWorld(tmp_path) as sim:
        gw, _ = make_gateway(sim, write_config(sim, tmp_path))
        gw.clock = SystemClock()
        with pytest.raises(TypeError, match="advance needs a settable clock, not SystemClock"):
            await gw.advance(1)


async def test_control_socket_answers_status_settle_message_and_advance(tmp_path):
    async with SimWorld(tmp_path, mx1_script=Script(data=ScriptedReply(451, "4.3.2 later"))) as sim:
        config = write_config(sim, tmp_path)
        gw, _ = make_gateway(sim, config)
        path = control_path(load_config(config))
        async with gw, ControlServer(gw, path, extra=lambda: {"events": 7}):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            status, settled, message, advanced = await _ask(
                path,
                {"op": "status"},
                {"op": "settle"},
                {"op": "message", "mid": 1},
                {"op": "advance", "seconds": 60},
            )
        assert status["ok"] and status["clock"] == "manual" and status["queue"]["queued"] == 1
        assert status["pid"] == os.getpid() and status["events"] == 7
        assert settled == {"ok": True, "rounds": 1, "now": sim.clock.now() - 60, "events": 7}
        [rcpt] = message["recipients"]
        assert (rcpt["rcpt"], rcpt["state"], rcpt["attempts"]) == ("bob@example.com", "queued", 1)
        attempt = rcpt["last_attempt"]
        assert (attempt["outcome"], attempt["mx"], attempt["verification"]) == (
            "deferred",
            "mx1.example.com",
            "pkix",
        )
        assert attempt["reason"].startswith("451 4.3.2")
        assert advanced["ok"] and advanced["rounds"] == 2 and advanced["now"] == sim.clock.now()
        assert not path.exists()  # removed at exit


async def test_control_socket_refuses_what_it_cannot_do_with_a_sentence(tmp_path):
    async with SimWorld(tmp_path) as sim:
        config = write_config(sim, tmp_path)
        gw, _ = make_gateway(sim, config)
        gw.clock = SystemClock()
        path = control_path(load_config(config))
        async with gw, ControlServer(gw, path):
            replies = await _ask(
                path,
                b"not json",
                {"op": "fly"},
                {"op": "message", "mid": 99},
                {"op": "message", "mid": "1"},
                {"op": "advance", "seconds": 5},
                {"op": "advance", "seconds": -1},
            )
    assert all(r["ok"] is False for r in replies)
    errors = [r["error"] for r in replies]
    assert errors[0] == "a request is one JSON object per line"
    assert errors[1] == "unknown op 'fly'; known: status, settle, message, advance, reload"
    assert errors[2] == "no message MID 99"
    assert errors[3] == "message needs an integer mid, not '1'"
    assert errors[4] == "advance needs a manual clock (serve --clock manual=T)"
    assert errors[5] == "advance needs seconds >= 0, not -1"


async def test_a_second_gateway_on_one_queue_is_refused_and_a_stale_socket_replaced(tmp_path):
    async with SimWorld(tmp_path) as sim:
        config = write_config(sim, tmp_path)
        gw, _ = make_gateway(sim, config)
        path = control_path(load_config(config))
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))  # left behind by a gateway that died: nothing listens
        stale.close()
        async with gw, ControlServer(gw, path):
            (status,) = await _ask(path, {"op": "status"})
            assert status["ok"]
            with pytest.raises(ControlBusy, match="another gateway answers on"):
                async with ControlServer(gw, path):
                    pass


async def test_status_command_prints_the_gateway_and_one_message(tmp_path, capsys):
    async with SimWorld(tmp_path) as sim:
        config = write_config(sim, tmp_path)
        gw, _ = make_gateway(sim, config)
        async with gw, ControlServer(gw, control_path(load_config(config))):
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            await gw.run_due()
            code = await asyncio.to_thread(main, ["status", "--config", str(config)])
            status = json.loads(capsys.readouterr().out)
            code_mid = await asyncio.to_thread(
                main, ["status", "--config", str(config), "--mid", "1"]
            )
            message = json.loads(capsys.readouterr().out)
            missing = await asyncio.to_thread(
                main, ["status", "--config", str(config), "--mid", "5"]
            )
            err = capsys.readouterr().err
    assert (code, code_mid, missing) == (0, 0, 1)
    assert status["queue"]["delivered"] == 1 and "ok" not in status
    assert message["recipients"][0]["state"] == "delivered"
    assert err == "sts-engine: no message MID 5\n"


def test_status_command_without_a_gateway_is_one_line(tmp_path, capsys):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[queue]\npath = "{tmp_path / "queue.sqlite"}"\n[tls]\nca_file = "system"\n')
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sts-engine: no running gateway answers on ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clock", "manual=soon"], "--clock must be 'wall' or 'manual=<POSIX seconds>', not"),
        (["--clock", "sundial"], "--clock must be 'wall' or 'manual=<POSIX seconds>', not"),
        (["--smtp-timeout", "0"], "--smtp-timeout must be more than 0 seconds, not 0.0"),
        (["--endpoints", "missing.json"], "--endpoints: 'missing.json': No such file"),
    ],
)
def test_serve_refuses_bad_harness_options_in_one_line(tmp_path, capsys, args, message):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[queue]\npath = "{tmp_path / "queue.sqlite"}"\n[tls]\nca_file = "system"\n')
    assert main(["serve", "--config", str(config), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sts-engine: error: ") and message in err and err.count("\n") == 1


async def test_run_once_and_run_due_never_overlap(tmp_path):
    # One lock for every kind of round (the serve loop, settle, advance).
    async with SimWorld(tmp_path) as sim:
        gw, _ = make_gateway(sim, write_config(sim, tmp_path))
        order: list[str] = []
        real = gw._round

        async def traced(now=None):
            order.append("begin")
            await asyncio.sleep(0)  # a yield, not a wait: an overlapping round starts here
            result = await real(now)
            order.append("end")
            return result

        gw._round = traced  # type: ignore[method-assign]
        async with gw:
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            await asyncio.gather(gw.run_once(), gw.run_due(), gw.run_once())
    assert len(order) >= 4 and order == ["begin", "end"] * (len(order) // 2)
