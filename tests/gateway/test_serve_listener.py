"""``sts-engine serve`` as a process: its listener under pressure, its options, its reload.

Issue 13.4 (connection caps with few file descriptors), 13.7 (one-line option and
configuration errors, a reload that cannot apply a change says so).
"""

from __future__ import annotations

import asyncio
import base64
import re
import resource
import sys
from pathlib import Path

import pytest

from certs import CertFactory
from engine.cli import main
from tests.gateway.listener_kit import RawClient

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
_READY = re.compile(rb"sts-engine listening on (\S+) port (\d+)")


def _config(tmp_path: Path, listener: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    (tmp_path / "roots.pem").write_bytes(CertFactory().ca_bundle_pem)
    path.write_text(
        f'[queue]\npath = "{tmp_path / "queue.sqlite"}"\n[tls]\nca_file = "roots.pem"\n'
        '[dns]\nresolvers = ["127.0.0.1:9"]\ntimeout = 1.0\n'
        '[listener]\nhost = "127.0.0.1"\nport = 0\n' + listener
    )
    return path


async def _serve(config: Path, nofile: int | None = None) -> tuple[asyncio.subprocess.Process, int]:
    def limit() -> None:  # in the child, before exec
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, preexec_fn=limit,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        while line := await proc.stdout.readline():
            if m := _READY.search(line):
                return proc, int(m.group(2))
    raise AssertionError(f"serve exited before it was ready: {await proc.wait()}")


async def _stop(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    proc.terminate()
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out, err


async def test_200_idle_clients_with_128_descriptors_do_not_lock_everyone_out(tmp_path):
    # Before: with 128 file descriptors, 200 idle clients took every descriptor and
    # nobody else could connect (accept() failed with EMFILE).
    config = _config(tmp_path, "max_connections = 60\nmax_connections_per_client = 40\n")
    proc, port = await _serve(config, nofile=128)
    held: list[RawClient] = []
    try:
        refused = 0
        for _ in range(200):
            c = await RawClient.connect(("127.0.0.1", port), local="127.0.0.2")
            if c.greeting.startswith("220"):
                held.append(c)
            else:
                assert c.greeting.startswith("421 4.7.0 "), c.greeting
                assert await c.closed()
                await c.close()
                refused += 1
        assert (len(held), refused) == (40, 160)
        # Another client still gets in and its mail is taken.
        c = await RawClient.connect(("127.0.0.1", port), local="127.0.0.3")
        assert c.greeting.startswith("220"), c.greeting
        await c.cmd("EHLO client.example")
        await c.cmd("MAIL FROM:<a@sender.example>")
        await c.cmd("RCPT TO:<b@example.com>")
        await c.cmd("DATA")
        assert (await c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")).startswith("250 2.0.0")
        await c.close()
    finally:
        for c in held:
            await c.close()
        out, err = await _stop(proc)
    assert b"Too many connections" not in err and err == b""
    assert out.count(b"refused: too many connections from 127.0.0.2") == 160


async def test_a_failed_inbound_handshake_is_one_line_in_serve_s_log(tmp_path):
    cert = CertFactory().issue("sts-engine.localdomain")
    (tmp_path / "c.pem").write_bytes(cert.chain_pem)
    (tmp_path / "k.pem").write_bytes(cert.private_key_pem)
    config = _config(tmp_path, 'tls_cert = "c.pem"\ntls_key = "k.pem"\n')
    proc, port = await _serve(config)
    try:
        c = await RawClient.connect(("127.0.0.1", port))
        await c.cmd("EHLO client.example")
        assert (await c.cmd("STARTTLS")).startswith("220")
        c.writer.write(b"GET / HTTP/1.0\r\n\r\n" * 8)
        assert await c.closed()
        await c.close()
    finally:
        out, err = await _stop(proc)
    assert err == b""  # before: a 17-line traceback per failed handshake
    lines = [ln for ln in out.splitlines() if b"TLS handshake failed" in ln]
    assert len(lines) == 1, out


async def test_password_guessing_is_cut_short_by_serve_on_its_own_loop(tmp_path):
    # The listener's AUTH limits, in the process users run (uvloop where installed): a
    # session's third failure is answered 421; the client's fourth (of 4 allowed within
    # the window) blocks it, and even its right password then gets 454 unchecked.
    from argon2 import PasswordHasher

    factory = CertFactory()
    cert = factory.issue("sts-engine.localdomain")
    (tmp_path / "c.pem").write_bytes(cert.chain_pem)
    (tmp_path / "k.pem").write_bytes(cert.private_key_pem)
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    (tmp_path / "users").write_text(f"app1:{cheap.hash('s3cret')}\n")
    config = _config(
        tmp_path,
        'tls_cert = "c.pem"\ntls_key = "k.pem"\nusers_file = "users"\n'
        "max_auth_failures = 3\nmax_auth_failures_per_client = 4\n",
    )

    async def tls_session(port: int) -> RawClient:
        c = await RawClient.connect(("127.0.0.1", port), local="127.0.0.2")
        await c.cmd("EHLO client.example")
        await c.starttls(factory.client_context(), "sts-engine.localdomain")
        await c.cmd("EHLO client.example")
        return c

    def plain(password: str) -> str:
        return "AUTH PLAIN " + base64.b64encode(f"\0app1\0{password}".encode()).decode()

    proc, port = await _serve(config)
    try:
        first = await tls_session(port)
        assert (await first.cmd(plain("guess1"))).startswith("535 5.7.8")
        assert (await first.cmd(plain("guess2"))).startswith("535 5.7.8")
        assert (await first.cmd(plain("guess3"))).startswith("421 4.7.0")
        assert await first.closed()
        second = await tls_session(port)
        assert (await second.cmd(plain("guess4"))).startswith("535 5.7.8")
        assert (await second.cmd(plain("s3cret"))).startswith("454 4.7.0")
        await first.close()
        await second.close()
    finally:
        out, err = await _stop(proc)
    assert err == b""
    assert out.count(b"AUTH PLAIN user 'app1' failed") == 4
    assert b"AUTH from 127.0.0.2 refused for now: 4 failed attempts within 600 s" in out
    assert out.count(b"AUTH refused:") == 2  # the 421 and the 454


async def test_commit_that_changes_the_listener_port_says_so_and_exits_1(tmp_path, capsys):
    # Before: "Configuration reloaded", exit 0, and the old port kept.
    config = _config(tmp_path)
    proc, port = await _serve(config)
    try:
        text = config.read_text().replace("port = 0", "port = 1")
        config.write_text(text)
        code = await asyncio.to_thread(main, ["commit", "--config", str(config)])
        captured = capsys.readouterr()
        assert code == 1
        assert captured.err.count("\n") == 1
        assert "[listener] port changed" in captured.err and f"port {port}" in captured.err
        assert "restart" in captured.err
        # The listener still answers where it was.
        c = await RawClient.connect(("127.0.0.1", port))
        assert c.greeting.startswith("220")
        await c.close()
        # A change that applies: exit 0.
        config.write_text(
            text.replace("port = 1", "port = 0").replace("timeout = 1.0", "timeout = 2.0")
        )
        assert await asyncio.to_thread(main, ["commit", "--config", str(config)]) == 0
    finally:
        out, _ = await _stop(proc)
    assert b"Configuration reload incomplete: [listener] port changed" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--relay-network", "junk"], "--relay-network: 'junk' is not an IP network"),
        (["--relay-network", "0.0.0.0/0"], "--relay-network: relay network 0.0.0.0/0 lets any"),
        (["--max-size", "0"], "--max-size must be at least 65536 bytes, not 0"),
        (["--max-size", "-1"], "--max-size must be at least 65536 bytes, not -1"),
        (["--grace", "-1"], "--grace must be 0 seconds or more, not -1.0"),
        (["--grace", "nan"], "--grace must be 0 seconds or more, not nan"),
        (["--smtp-port", "99999"], "--smtp-port must be a port number 1..65535, not 99999"),
        (["--smtp-timeout", "inf"], "--smtp-timeout must be more than 0 seconds, not inf"),
    ],
)
def test_serve_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["serve", "--config", str(_config(tmp_path)), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sts-engine: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("listener", "message"),
    [
        ('host = ""\n', "listener.host: invalid value"),
        ('relay_networks = ["0.0.0.0/0"]\n', "listener.relay_networks: relay network 0.0.0.0/0"),
        ('relay_networks = ["::/0"]\n', "lets any client relay (an open relay)"),
        ("max_message_size = 0\n", "listener.max_message_size"),
        ("max_recipients = 0\n", "listener.max_recipients"),
        ("idle_timeout = inf\n", "listener.idle_timeout"),
        ('tls_cert = "c.pem"\n', "listener.tls_key"),
    ],
)
def test_listener_configuration_errors_are_one_line(tmp_path, capsys, listener, message):
    text = _config(tmp_path).read_text().replace('host = "127.0.0.1"\n', "") + listener
    (tmp_path / "gateway.toml").write_text(text)
    assert main(["serve", "--config", str(tmp_path / "gateway.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sts-engine: error: ") and message in err and err.count("\n") == 1


def test_a_users_file_that_is_not_argon2_is_one_line(tmp_path, capsys):
    cert = CertFactory().issue("sts-engine.localdomain")
    (tmp_path / "c.pem").write_bytes(cert.chain_pem)
    (tmp_path / "k.pem").write_bytes(cert.private_key_pem)
    (tmp_path / "users").write_text("app1:plaintext-password\n")
    extra = 'tls_cert = "c.pem"\ntls_key = "k.pem"\nusers_file = "users"\n'
    assert main(["serve", "--config", str(_config(tmp_path, extra))]) == 2
    err = capsys.readouterr().err
    assert "users:1: the hash of 'app1' is not Argon2id" in err and err.count("\n") == 1
