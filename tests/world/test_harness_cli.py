"""``sts-harness``: argv-driven main(), the serve coroutine as a task, one real subprocess."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.query
import pytest

from harness.cli import main
from harness.commands.serve import serve
from harness.world import World

W_STS = Path(__file__).resolve().parents[2] / "fixtures" / "worlds" / "w-sts.toml"


def test_help_of_every_command_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "example:" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and "sts-harness serve fixtures/worlds/w-sts.toml" in out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    # One line (issue 16 item 4): the mistake, and where the usage is.
    assert err == (
        "sts-harness: error: the following arguments are required: COMMAND "
        "(sts-harness --help shows the usage)\n"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[domains."example.com"]\npolcy = 1\n', 'domains."example.com".polcy: unknown key'),
        ('[hosts."mx1.example.com"]\naddress = "10.1.2.3"\n', "IPv4 loopback address (the world uses 127.0.0.0/8) (value '10.1.2.3')"),
        ("[domains\n", "not valid TOML"),
    ],
)
def test_bad_world_file_is_a_clear_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    path = tmp_path / "world.toml"
    path.write_text(text)
    assert main(["serve", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: " in err and words in err and "Traceback" not in err


def test_bad_now_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(W_STS), "--now", "yesterday"]) == 2
    assert "--now 'yesterday'" in capsys.readouterr().err


async def test_serve_describes_the_world_and_stops_on_the_event() -> None:
    stop, ready, out = asyncio.Event(), asyncio.get_running_loop().create_future(), io.StringIO()
    task = asyncio.create_task(serve(W_STS, stop=stop, ready=ready, out=out))
    world: World = await ready
    host, port = world.resolver
    text = out.getvalue()
    assert f"dns: {host}:{port}" in text and f"ca: {world.ca_file}" in text
    assert f"dig @{host} -p {port} +dnssec _mta-sts.example.com TXT" in text
    assert "curl --cacert" in text and "--resolve mta-sts.example.com:" in text
    assert "swaks --server" in text and text.rstrip().endswith("SIGTERM")
    q = dns.message.make_query("_mta-sts.example.com", "TXT")
    reply = await dns.asyncquery.udp(q, host, port=port, timeout=2.0)
    assert "v=STSv1; id=A1" in reply.answer[0].to_text()
    ca_file = world.ca_file
    stop.set()
    assert await task == 0
    assert not ca_file.exists()


@pytest.mark.slow
def test_serve_subprocess_answers_dns_and_stops_on_sigint() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = "import sys; from harness.cli import main; sys.exit(main())"
    with subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(W_STS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:  # blocks until the world prints; no sleeps
                lines.append(line)
                if line.startswith("ready"):
                    break
            match = re.search(r"^dns: ([\d.]+):(\d+)$", "".join(lines), re.MULTILINE)
            assert match, lines
            q = dns.message.make_query("example.com", "MX")
            reply = dns.query.udp(q, match[1], port=int(match[2]), timeout=5.0)
            assert len(reply.answer[0]) == 2
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
