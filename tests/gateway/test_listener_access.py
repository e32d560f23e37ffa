"""Relay control, AUTH, connection caps, time limits and resource failures at the listener.

Issue 13.4 and the listener half of 13.5, through real sockets; clients from distinct
loopback addresses (127.0.0.2, 127.0.0.3) stand for distinct hosts.
"""

from __future__ import annotations

import base64
import sqlite3
import ssl

import pytest
from argon2 import PasswordHasher

from certs import CertFactory
from engine.gateway.queue import Queue
from tests.gateway.listener_kit import RawClient, codes, running_listener, session

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n.\r\n"
HOST = "sts-engine.localdomain"
# A cheap Argon2id hash for tests (the parameters travel in the hash).
_CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="module")
def factory() -> CertFactory:
    return CertFactory()


@pytest.fixture
def tls_files(tmp_path, factory):
    cert = factory.issue(HOST)
    (tmp_path / "cert.pem").write_bytes(cert.chain_pem)
    (tmp_path / "key.pem").write_bytes(cert.private_key_pem)
    return {"tls_cert": tmp_path / "cert.pem", "tls_key": tmp_path / "key.pem"}


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"# test users\napp1:{_CHEAP.hash('s3cret')}\n")
    return path


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_relay_networks_from_the_config_decide_who_may_relay(tmp_path):
    async with running_listener(tmp_path, relay_networks=("127.0.0.2/32",)) as (listener, _):
        outside = await session(listener, local="127.0.0.3")
        await outside.cmd("MAIL FROM:<a@sender.example>")
        assert (await outside.cmd("RCPT TO:<b@example.com>")).startswith("550 5.7.1")
        inside = await session(listener, local="127.0.0.2")
        await inside.cmd("MAIL FROM:<a@sender.example>")
        assert (await inside.cmd("RCPT TO:<b@example.com>")).startswith("250")
        await outside.close()
        await inside.close()


async def test_no_auth_is_advertised_or_accepted_without_a_users_file(tmp_path, tls_files, factory):
    # Before: after STARTTLS it advertised AUTH LOGIN PLAIN and answered every try with 535.
    async with running_listener(tmp_path, **tls_files) as (listener, _):
        c = await session(listener)
        await c.starttls(factory.client_context(), HOST)
        ehlo = await c.cmd("EHLO client.example")
        assert "AUTH" not in ehlo and ehlo.startswith("250")
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("502 5.5.1")
        await c.close()


async def test_auth_is_offered_only_after_starttls_and_then_lets_a_user_relay(
    tmp_path, tls_files, users_file, factory
):
    config = {**tls_files, "users_file": users_file, "relay_networks": ("127.0.0.2/32",)}
    async with running_listener(tmp_path, **config) as (listener, sink):
        c = await RawClient.connect(listener.address, local="127.0.0.3")
        ehlo = await c.cmd("EHLO client.example")
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        # RFC 4954 §4: no password over a clear channel.
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("538 5.7.11")
        await c.starttls(factory.client_context(), HOST)
        assert "AUTH LOGIN PLAIN" in await c.cmd("EHLO client.example")
        await c.cmd("MAIL FROM:<a@sender.example>")
        assert (await c.cmd("RCPT TO:<b@example.com>")).startswith("550 5.7.1")
        await c.cmd("RSET")
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "wrong"))).startswith("535 5.7.8")
        assert (await c.cmd("AUTH PLAIN " + _plain("nobody", "s3cret"))).startswith("535 5.7.8")
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("235 2.7.0")
        await c.cmd("MAIL FROM:<a@sender.example>")
        assert (await c.cmd("RCPT TO:<b@example.com>")).startswith("250")
        await c.close()
    results = [
        (e.fields["user"], e.fields["result"]) for e in sink.events if e.code == "listener.auth"
    ]
    assert results == [("app1", "failed"), ("nobody", "failed"), ("app1", "ok")]


async def test_auth_login_exchange(tmp_path, tls_files, users_file, factory):
    async with running_listener(tmp_path, **tls_files, users_file=users_file) as (listener, _):
        c = await session(listener)
        await c.starttls(factory.client_context(), HOST)
        await c.cmd("EHLO client.example")
        assert (await c.cmd("AUTH LOGIN")).startswith("334 ")
        assert (await c.cmd(base64.b64encode(b"app1"))).startswith("334 ")
        assert (await c.cmd(base64.b64encode(b"s3cret"))).startswith("235 2.7.0")
        await c.close()


async def test_connections_past_the_per_client_cap_get_421_4_7_0(tmp_path):
    caps = {"max_connections": 6, "max_connections_per_client": 3}
    async with running_listener(tmp_path, **caps) as (listener, sink):
        held = [await RawClient.connect(listener.address, local="127.0.0.2") for _ in range(3)]
        assert all(c.greeting.startswith("220") for c in held)
        over = await RawClient.connect(listener.address, local="127.0.0.2")
        assert over.greeting.startswith("421 4.7.0 ") and await over.closed()
        other = await RawClient.connect(listener.address, local="127.0.0.3")
        assert other.greeting.startswith("220")  # another client is not locked out
        await held[0].cmd("QUIT")
        await held[0].closed()
        again = await RawClient.connect(listener.address, local="127.0.0.2")
        assert again.greeting.startswith("220")  # a freed slot is usable at once
        for c in [*held, over, other, again]:
            await c.close()
    assert "listener.refused" in codes(sink)


async def test_connections_past_the_global_cap_get_421_4_7_0(tmp_path):
    caps = {"max_connections": 3, "max_connections_per_client": 3}
    async with running_listener(tmp_path, **caps) as (listener, _):
        held = [await RawClient.connect(listener.address, local=f"127.0.0.{i}") for i in (2, 3, 4)]
        over = await RawClient.connect(listener.address, local="127.0.0.5")
        assert over.greeting.startswith("421 4.7.0 ") and await over.closed()
        for c in [*held, over]:
            await c.close()


async def test_an_idle_session_gets_421_4_4_2_before_the_close(tmp_path):
    # Before: the idle close sent nothing.
    async with running_listener(tmp_path, idle_timeout=0.2, session_timeout=30.0) as (
        listener,
        sink,
    ):
        c = await session(listener)
        assert (await c.reply()).startswith("421 4.4.2 ")  # sent by the server, unasked
        assert await c.closed()
        await c.close()
    assert [e.fields["limit"] for e in sink.events if e.code == "listener.timeout"] == ["idle"]


async def test_noops_do_not_keep_a_session_past_its_time_limit(tmp_path):
    # Before: a NOOP every 200 s kept a session forever.
    async with running_listener(tmp_path, idle_timeout=30.0, session_timeout=0.6) as (
        listener,
        sink,
    ):
        c = await session(listener)
        replies = []
        while not (reply := await c.cmd("NOOP")).startswith("421"):
            replies.append(reply)
        assert reply.startswith("421 4.4.2 ") and "Session time limit" in reply
        assert replies and all(r.startswith("250") for r in replies)
        await c.close()
    assert [e.fields["limit"] for e in sink.events if e.code == "listener.timeout"] == ["session"]


async def test_a_failed_inbound_tls_handshake_is_one_log_line(tmp_path, tls_files, caplog):
    # Before: a 17-line traceback per failed handshake.
    async with running_listener(tmp_path, **tls_files) as (listener, sink):
        c = await session(listener)
        assert (await c.cmd("STARTTLS")).startswith("220")
        c.writer.write(b"this is not a TLS ClientHello\r\n" * 4)
        assert await c.closed()
        await c.close()
        good = await session(listener)  # the listener goes on
        await good.close()
    failed = [e for e in sink.events if e.code == "listener.tls.failed"]
    assert len(failed) == 1 and "\n" not in str(failed[0].fields["detail"])
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere


class _UnwritableQueue(Queue):
    def next_icid(self) -> int:
        raise sqlite3.OperationalError("attempt to write a readonly database")


async def test_a_queue_that_cannot_be_written_gets_421_4_3_0_not_a_silent_close(tmp_path):
    # Before: new connections were closed without a greeting.
    queue = _UnwritableQueue(tmp_path / "queue.sqlite")
    async with running_listener(tmp_path, queue) as (listener, sink):
        c = await RawClient.connect(listener.address)
        assert c.greeting.startswith("421 4.3.0 ") and await c.closed()
        await c.close()
    assert "listener.refused" in codes(sink)


async def test_a_full_disk_at_data_is_452_4_3_1_and_nothing_is_promised(tmp_path):
    queue = Queue(tmp_path / "queue.sqlite")
    async with running_listener(tmp_path, queue) as (listener, sink):
        c = await session(listener)
        # A real SQLITE_FULL: the database may not grow past its current size.
        pages = queue._db.execute("PRAGMA page_count").fetchone()[0]
        queue._db.execute(f"PRAGMA max_page_count = {pages}")
        await c.cmd("MAIL FROM:<a@sender.example>")
        await c.cmd("RCPT TO:<b@example.com>")
        await c.cmd("DATA")
        got = await c.send(b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 200 + b".\r\n")
        assert got.startswith("452 4.3.1 ")
        assert (await c.cmd("NOOP")).startswith("250")  # the session stays usable
        await c.close()
    assert "listener.queue.error" in codes(sink)


async def test_the_listener_refuses_to_start_with_an_unloadable_certificate(tmp_path):
    from engine.gateway.listener import ListenerError

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(ListenerError, match=r"tls_cert .*cannot load"):
        async with running_listener(
            tmp_path, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem"
        ):
            pass


def test_server_context_for_the_listener_needs_no_client_certificate(tls_files):
    # aiosmtpd warns when a server context verifies clients: ours does not.
    from engine.config import ListenerConfig
    from engine.core.clock import ManualClock
    from engine.core.events import ListSink
    from engine.gateway.listener import Listener

    config = ListenerConfig(port=0, **tls_files)
    listener = Listener(None, clock=ManualClock(0), sink=ListSink(), config=config)  # type: ignore[arg-type]
    assert listener.tls_context is not None
    assert listener.tls_context.verify_mode == ssl.CERT_NONE


def test_users_hash_prints_a_line_the_users_file_takes(tmp_path, monkeypatch, capsys):
    import io

    from engine.cli import main
    from engine.gateway.auth import load_users

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["users", "hash", "app1"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("app1:$argon2id$") and line.count("\n") == 1
    (tmp_path / "users").write_text(line)
    users = load_users(tmp_path / "users")
    assert users.verify("app1", "s3cret") and not users.verify("app1", "wrong")
    assert main(["users", "hash", "bad:name"]) == 2
