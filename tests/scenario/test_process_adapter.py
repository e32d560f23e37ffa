"""The ``sts-engine`` adapter: ``sts-engine serve`` as a process, judged like the library."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from engine import eventloop
from harness.adapters.base import AdapterError
from harness.adapters.forkserver import shared_server
from harness.adapters.process import ProcessEngine
from harness.adapters.process_io import ProcessLog
from harness.adapters.registry import ADAPTERS, register_adapter
from harness.run.result import ScenarioVerdict
from harness.run.single import run_scenario
from harness.scenario.loader import load_scenario, loads_scenario
from harness.world.world import shared_cert_factory

ROOT = Path(__file__).resolve().parents[2] / "scenarios"
_MADE: list[ProcessEngine] = []


def _recorded() -> ProcessEngine:
    engine = ProcessEngine()
    _MADE.append(engine)
    return engine


def _run(name: str):
    """Run a catalog file (or inline TOML) on the process; the result and the adapter."""
    path = ROOT / name if name.endswith(".toml") else None
    scenario = load_scenario(path) if path else loads_scenario(name, "scenarios/t/inline.toml")
    _MADE.clear()
    register_adapter("sts-engine-recorded", _recorded)
    try:
        result = run_scenario(scenario, "sts-engine-recorded")
    finally:
        ADAPTERS.pop("sts-engine-recorded", None)
    assert result.verdict is ScenarioVerdict.PASSED, result.reason or [
        m for s in result.steps for m in s.mismatches
    ]
    return result, (_MADE[-1] if _MADE else None)


def test_events_carry_the_lines_the_process_printed():
    result, engine = _run("examples/seed-log-sts-success.toml")
    assert engine is not None
    [start] = engine.starts
    want = "uvloop" if eventloop.loop_available("uvloop") else "asyncio"
    assert (start["loop"], start["clock"]) == (want, "wall")
    ready = result.setup.events[-1]
    assert ready.code == "listener.ready"
    assert ready.line.endswith(
        f"Info: sts-engine listening on 127.0.0.1 port {start['listener'][1]}"
    )
    events = [e for o in result.observations for e in o.events]
    # Every event printed its line except the TLS-RPT data event (engine.logs.INTERNAL).
    assert {e.code for e in events if not e.line} == {"tls.session"}
    assert any(e.code == "sts.apply" and "Applying MTA-STS policy" in e.line for e in events)


ADDED_MX = """
[scenario]
title = "a step adds an MX; the running gateway reaches it"
covers = ["MX-1"]
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
[steps.expect]
via = "mx1.example.com"
[[steps]]
update_domain = { domain = "example.com", mx = ["10 mx9.example.com"] }
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
[steps.expect]
outcome = "delivered"
via = "mx9.example.com"
"""


def test_a_step_that_adds_an_mx_is_reached_through_the_rewritten_endpoint_map():
    _run(ADDED_MX)


def test_a_scenario_that_moves_time_runs_the_process_on_a_manual_clock():
    result, engine = _run("examples/tlsrpt-daily-report.toml")
    assert engine is not None
    assert [s["clock"] for s in engine.starts] == ["manual"]
    assert result.steps[-1].observation.world.reports  # the report arrived in the world


def test_restart_is_a_new_process_on_the_same_queue_and_cache():
    result, engine = _run("cache/restart-keeps-cache.toml")
    assert engine is not None
    first, second = engine.starts
    assert first["pid"] != second["pid"]
    assert first["clock"] == second["clock"] == "manual"
    ready = [e for o in result.observations for e in o.events if e.code == "listener.ready"]
    assert len(ready) == 2


def test_a_dsn_is_in_the_world_when_send_returns():
    result, _ = _run("seed/seed-log-bounced.toml")
    [step] = [s for s in result.steps if s.kind == "send"]
    assert [d.status for d in step.observation.deliveries] == ["bounced"]
    [dsn] = step.observation.world.dsns  # settled in the same step, not later
    assert dsn.to == ("alice@sender.example",)


@pytest.mark.parametrize("name", ["bb-sts-enforce-mx1-bad", "bb-sts-mx-not-listed", "bb-dane-ee"])
def test_the_black_box_scenarios_pass_against_the_process_without_a_namespace(name):
    path = ROOT.parent / "tests" / "blackbox" / "scenarios" / f"{name}.toml"
    result = run_scenario(load_scenario(path), "sts-engine")
    assert result.verdict is ScenarioVerdict.PASSED, result.reason


def test_nine_in_ten_of_the_catalog_run_as_a_process_and_coverage_lists_the_rest(capsys):
    from harness.cli import main
    from harness.coverage import engine_reach
    from harness.scenario.loader import load_all

    reach = engine_reach(load_all([ROOT]))
    assert reach.engine == "sts-engine" and reach.total > 200
    assert reach.percent >= 90.0
    assert reach.skipped and all(
        "lacks final (no operator command" in r for r in reach.skipped.values()
    )
    assert main(["coverage"]) == 0
    out = capsys.readouterr().out
    runs = reach.total - len(reach.skipped)
    assert f"as a process (sts-engine): {runs}/{reach.total} scenarios run" in out
    assert all(sid in out for sid in reach.skipped)


async def test_a_work_directory_too_deep_for_a_unix_socket_is_a_clear_error(tmp_path):
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with pytest.raises(AdapterError, match="longer than a Unix socket path may be"):
        await ProcessEngine().start(None, {}, deep)  # type: ignore[arg-type]


def test_final_is_skipped_with_the_reason():
    result = run_scenario(
        load_scenario(ROOT / "apply/recheck-txt-before-bounce.toml"), "sts-engine"
    )
    assert result.verdict is ScenarioVerdict.SKIPPED
    assert result.reason == (
        "engine 'sts-engine' lacks final "
        "(no operator command makes an attempt the last before a bounce)"
    )


def test_a_refused_configuration_is_the_processes_own_error():
    result = run_scenario(load_scenario(ROOT / "seed/seed-sts-needs-tls.toml"), "sts-engine")
    assert result.verdict is ScenarioVerdict.PASSED


@pytest.mark.parametrize(
    "name",
    [
        "examples/dane-ee-delivery.toml",
        "cache/restart-keeps-cache.toml",
        "seed/seed-log-bounced.toml",
    ],
)
def test_the_console_script_as_a_fresh_process_passes_too(name):
    # The fork server's children run engine.cli.main; this proves the exec path.
    result = run_scenario(load_scenario(ROOT / name), "sts-engine-exec")
    assert result.verdict is ScenarioVerdict.PASSED, result.reason


def _log(stdout: bytes, stderr: bytes) -> ProcessLog:
    out, err = asyncio.StreamReader(), asyncio.StreamReader()
    out.feed_data(stdout)
    out.feed_eof()
    err.feed_data(stderr)
    err.feed_eof()
    return ProcessLog(out, err, lambda at: at, [])


async def test_a_printed_line_that_differs_from_its_json_twin_fails_the_run():
    json_line = (
        b'{"code": "message.queued", "level": "info", "at": 0, "fields": {"mid": 1}, '
        b'"text": "MID 1 queued for delivery"}\n'
    )
    log = _log(b"Thu Jan  1 00:00:00 1970 Info: MID 2 queued for delivery\n", json_line)
    with pytest.raises(AdapterError, match="stdout and JSON log disagree at event 0"):
        await log.drain()
    good = _log(b"Thu Jan  1 00:00:00 1970 Info: MID 1 queued for delivery\n", json_line)
    await good.drain()
    [record] = good.records
    assert (record.code, record.line) == (
        "message.queued",
        "Thu Jan  1 00:00:00 1970 Info: MID 1 queued for delivery",
    )


async def test_anything_else_on_stderr_is_kept_as_noise():
    log = _log(b"", b"Traceback (most recent call last):\n  boom\n")
    await log.drain()
    assert log.noise == ["Traceback (most recent call last):", "  boom"]
    assert log.stderr_tail() == ": Traceback (most recent call last): /   boom"


async def test_fork_server_children_exit_like_the_console_script(tmp_path):
    import os

    async def run(argv: list[str]) -> tuple[int, bytes]:
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        child = await shared_server().spawn(
            argv, cwd=tmp_path, env=dict(os.environ), stdio=(null, w, w)
        )
        os.close(w)
        os.close(null)
        out = b""
        while chunk := await asyncio.to_thread(os.read, r, 65536):
            out += chunk
        os.close(r)
        return await child.wait(), out

    code, out = await run(["txt", "lint", "v=STSv1; id=A1"])
    assert code == 0 and json.loads(out)["id"] == "A1"
    code, out = await run(["serve"])
    assert code == 2 and b"the following arguments are required: --config" in out
    config = tmp_path / "gateway.toml"
    ca = tmp_path / "ca.pem"
    ca.write_bytes(shared_cert_factory().ca_bundle_pem)
    config.write_text(
        f'[queue]\npath = "{tmp_path / "q.sqlite"}"\n[listener]\nport = 0\n'
        f'[tls]\nca_file = "{ca}"\n'
    )
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    child = await shared_server().spawn(
        ["serve", "--config", str(config)], cwd=tmp_path, env=dict(os.environ), stdio=(null, w, w)
    )
    os.close(w)
    os.close(null)
    seen = b""
    while b"sts-engine listening on 127.0.0.1 port " not in seen:  # readiness: its log line
        chunk = await asyncio.to_thread(os.read, r, 65536)
        assert chunk, seen
        seen += chunk
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL
    os.close(r)
