"""``sts-engine queue|policy|destconfig|commit``: main(argv) runs plus subprocess ones."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from engine.cli import main
from engine.core.cache import CachedPolicy
from engine.core.policy import parse_policy
from engine.gateway.gateway import policy_cache_path
from engine.gateway.queue import Queue
from engine.io.store import SqlitePolicyStore
from tests.gateway.sim import POLICY
from tests.gateway.test_serve_crash import start_serve

ROOT = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[queue]\npath = "queue.sqlite"\n[tls]\nca_file = "system"\n'
        '[destination_controls.default]\ntls = "preferred"\n'
        '[destination_controls."example.com"]\ntls = "required-verify-hosted"\nmta_sts = true\n'
        + extra
    )
    return path


@pytest.mark.parametrize(
    "argv",
    [["serve"], ["commit"], ["queue", "list"], ["policy", "refresh"], ["destconfig", "new"]],
)
def test_every_command_has_help_with_an_example(argv, capsys):
    assert main([*argv, "--help"]) == 0
    assert "example" in capsys.readouterr().out


def test_config_errors_name_file_key_and_value_and_exit_2(tmp_path, capsys):
    path = config_file(tmp_path, '[listener]\nport = "x"\n')
    assert main(["queue", "list", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "listener.port" in err and "'x'" in err


def test_queue_list_show_retry_delete(tmp_path, capsys):
    path = config_file(tmp_path)
    with Queue(tmp_path / "queue.sqlite") as q:
        mid, _ = q.enqueue("a@sender.example", ["b@example.com"], b"Subject: s\r\n\r\nx\r\n", 100.0)
        q.mark_deferred(mid, 0, 100.0, "451 4.3.2 later", 5000.0)
    assert main(["queue", "list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "b@example.com" in out and "451 4.3.2 later" in out and "1 recipient(s)" in out
    assert main(["queue", "show", str(mid), "--config", str(path)]) == 0
    assert "RID 0 To: <b@example.com> queued attempts 1" in capsys.readouterr().out
    assert main(["queue", "retry", str(mid), "--config", str(path)]) == 0
    assert "1 recipient(s) due now" in capsys.readouterr().out
    assert main(["queue", "delete", str(mid), "--config", str(path)]) == 0
    assert main(["queue", "show", str(mid), "--config", str(path)]) == 1


def test_policy_list_show_purge(tmp_path, capsys):
    path = config_file(tmp_path)
    from engine.config import load_config

    store = SqlitePolicyStore(policy_cache_path(load_config(path)))
    store.put(CachedPolicy("example.com", parse_policy(POLICY), "20260101", 1_767_225_600.0))
    store.close()
    assert main(["policy", "list", "--config", str(path)]) == 0
    assert "example.com  mode enforce  id 20260101" in capsys.readouterr().out
    assert main(["policy", "show", "example.com", "--config", str(path)]) == 0
    assert "mx: mx1.example.com" in capsys.readouterr().out
    assert main(["policy", "purge", "example.com", "--config", str(path)]) == 0
    assert main(["policy", "show", "example.com", "--config", str(path)]) == 1


def test_destconfig_show_resolves_inherited_values(tmp_path, capsys):
    path = config_file(tmp_path)
    assert main(["destconfig", "show", "example.com", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TLS Support: required-verify-hosted\n" in out
    assert "Maximum messages per connection: 50 (Default)" in out
    assert main(["destconfig", "list", "--config", str(path)]) == 0
    assert "Default" in capsys.readouterr().out


def test_destconfig_flags_write_the_toml_and_keep_other_tables(tmp_path, capsys):
    path = config_file(tmp_path, '[logging]\nlevel = "debug"\n')
    argv = [
        "destconfig",
        "new",
        "hosted.example",
        "--config",
        str(path),
        "--tls",
        "required-verify-hosted",
        "--dane",
        "none",
        "--mta-sts",
        "on",
        "--yes",
    ]
    assert main(argv) == 0
    data = tomllib.loads(path.read_text())
    assert data["destination_controls"]["hosted.example"] == {
        "tls": "required-verify-hosted",
        "dane": "none",
        "mta_sts": True,
    }
    assert data["logging"] == {"level": "debug"}
    # A combination the config refuses is not written (MTA-STS needs TLS).
    before = path.read_text()
    bad = ["destconfig", "edit", "hosted.example", "--config", str(path), "--tls", "no", "--yes"]
    assert main(bad) == 2
    assert "mta_sts" in capsys.readouterr().err
    assert path.read_text() == before


def _expect(fd: int, text: str, seen: bytearray, timeout: float = 10.0) -> None:
    """Read the pty until ``text`` has appeared (select with a deadline, no sleeps)."""
    while text.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no {text!r} in {bytes(seen)!r}"
        seen += os.read(fd, 4096)
    del seen[: seen.index(text.encode()) + len(text)]


def test_destconfig_dialogue_through_a_real_terminal(tmp_path):
    path = config_file(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "destconfig",
            "new",
            "gsuite.example",
            "--config",
            str(path),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        close_fds=True,
    )
    os.close(slave)
    seen = bytearray()
    dialogue = [
        ("Do you wish to apply a specific TLS setting for this domain? [N]> ", "y"),
        ("6. Required - Verify Hosted Domains\r\n[2]> ", "6"),
        ("Would you like to configure DANE support? [N]> ", ""),
        ("Do you want to configure MTA STS support? [N]> ", "y"),
        ("1. Disabled\r\n2. On\r\n[1]> ", "2"),
        ("Enter the maximum number of concurrent connections to this domain. [500]> ", "10"),
        ("Enter the maximum number of messages per connection. [50]> ", ""),
        ("[1]> ", ""),  # bounce profile: default
    ]
    try:
        for prompt, answer in dialogue:
            _expect(master, prompt, seen)
            os.write(master, answer.encode() + b"\r")
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        os.close(master)
    entry = tomllib.loads(path.read_text())["destination_controls"]["gsuite.example"]
    assert entry == {
        "tls": "required-verify-hosted",
        "mta_sts": True,
        "max_concurrency": 10,
        "max_messages_per_connection": 50,
        "bounce_profile": "default",
    }


async def test_commit_makes_a_running_gateway_reload(tmp_path):
    from tests.gateway.sim import SimWorld

    async with SimWorld(tmp_path) as sim:
        config = tmp_path / "gateway.toml"
        config.write_text(sim.config_text(tmp_path / "queue.sqlite"))
        proc, _, _ = await start_serve(sim, config, sim.endpoints_json(tmp_path / "e.json"))
        try:
            argv = [
                "destconfig",
                "edit",
                "example.com",
                "--config",
                str(config),
                "--max-concurrency",
                "7",
                "--yes",
            ]
            assert await asyncio.to_thread(main, argv) == 0
            assert await asyncio.to_thread(main, ["commit", "--config", str(config)]) == 0
            assert proc.stdout is not None
            seen = b""
            async with asyncio.timeout(30):
                while b"Configuration reloaded from" not in seen:
                    line = await proc.stdout.readline()
                    assert line, f"serve ended before reloading: {seen!r}"
                    seen += line
        finally:
            proc.terminate()
            await proc.wait()
        assert proc.returncode == 0
