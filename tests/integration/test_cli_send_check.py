"""``sts-engine send`` and ``sts-engine check`` against a served world (W-STS).

The world runs in the test's event loop; ``main(argv)`` runs in a worker thread with
its own loop, as it would from a shell, pointed at the world by ``--resolver``,
``--ca-file`` and ``--endpoints`` (the map ``sts-harness serve`` writes).
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
W_STS = tomllib.loads((ROOT / "fixtures/worlds/w-sts.toml").read_text())
CONFIG = """
[destination_controls.default]
tls = "preferred"
[destination_controls."example.com"]
tls = "preferred"
mta_sts = true
[policy_fetch]
timeout = 2.0
[dns]
timeout = 1.0
"""


def _args(w: Any, tmp_path: Path) -> list[str]:
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(
        json.dumps({f"{a}:{p}": f"{ra}:{rp}" for (a, p), (ra, rp) in w.endpoint_map.items()})
    )
    host, port = w.resolver
    return [
        "--resolver",
        f"{host}:{port}",
        "--ca-file",
        str(w.ca_file),
        "--endpoints",
        str(endpoints),
    ]


async def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status, out, _ = await _run_both(argv, capsys)
    return status, out


async def _run_both(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    status = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return status, out, err


async def test_send_delivers_under_enforce_and_prints_the_seed_lines(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(CONFIG)
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    async with world(W_STS, now=time.time()) as w:
        argv = ["send", "--config", str(config), *_args(w, tmp_path)]
        argv += ["--from", "a@sender.example", "--to", "rcpt@example.com", "--json", str(message)]
        status, out, err = await _run_both(argv, capsys)
    assert status == 0
    # --json: stdout is the report alone (`| jq` reads it), the log lines are on stderr.
    assert "Info: Successfully fetched MTA-STS TXT record for domain(example.com)" in err
    assert "Info: MTA-STS policy for the domain (example.com) Successful." in err
    report = json.loads(out)
    (rcpt,) = report["recipients"]
    assert (rcpt["outcome"], rcpt["verification"], rcpt["tls"]) == ("delivered", "pkix", "TLSv1.3")


async def test_send_exits_75_when_enforce_defers(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(CONFIG)
    spec = json.loads(json.dumps(W_STS))
    spec["hosts"]["mx1.example.com"]["cert"] = "self-signed"
    spec["hosts"]["mx2.example.com"]["cert"] = "expired"
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    async with world(spec, now=time.time()) as w:
        argv = ["send", "--config", str(config), *_args(w, tmp_path)]
        argv += ["--from", "a@sender.example", "--to", "rcpt@example.com", str(message)]
        status, out = await _run(argv, capsys)
        assert all(not s.transactions for m in w.mtas.values() for s in m.sessions)
    assert status == 75
    assert "TLS deferring: verify error:" in out
    assert "Delayed:" in out


async def test_check_passes_a_good_domain_and_fails_a_bad_certificate(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = json.loads(json.dumps(W_STS))
    spec["hosts"]["mx2.example.com"]["cert"] = "wrong-name"
    async with world(spec, now=time.time()) as w:
        status, out = await _run(["check", "example.com", *_args(w, tmp_path), "--json"], capsys)
    report = json.loads(out)
    verdicts = {c["subject"]: c["verdict"] for c in report["checks"]}
    assert status == 1 and report["ok"] is False
    assert verdicts["TXT _mta-sts.example.com"] == "PASS"
    assert verdicts["certificate mx1.example.com"] == "PASS"
    assert verdicts["certificate mx2.example.com"] == "FAIL"
    assert any(
        s.startswith("policy https://mta-sts.example.com") and v == "PASS"
        for s, v in verdicts.items()
    )


async def test_check_reports_an_mx_whose_session_breaks_after_the_banner(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The probe used to let the EHLO failure escape as a traceback; it is a FAIL line.
    spec = json.loads(json.dumps(W_STS))
    spec["hosts"]["mx2.example.com"]["replies"] = {"ehlo": "disconnect"}
    async with world(spec, now=time.time()) as w:
        status, out = await _run(["check", "example.com", *_args(w, tmp_path), "--json"], capsys)
    checks = {c["subject"].split(" [")[0]: c for c in json.loads(out)["checks"]}
    assert status == 1
    assert checks["SMTP mx1.example.com"]["verdict"] == "PASS"
    broken = checks["SMTP mx2.example.com"]
    assert broken["verdict"] == "FAIL" and broken["detail"].startswith("the session broke at ehlo")


def test_config_errors_name_the_file_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[destination_controls.default]\ntls = "sometimes"\n')
    status = main(["send", "--config", str(bad), "--from", "a@x", "--to", "b@y", "-"])
    err = capsys.readouterr().err
    assert status == 2 and "bad.toml" in err and "sometimes" in err
