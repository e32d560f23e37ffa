"""Relay control, AUTH, connection caps, time limits and resource failures at the listener.

Issue 13.4 and the listener half of 13.5, through real sockets; clients from distinct
loopback addresses (127.0.0.2, 127.0.0.3) stand for distinct hosts.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import sqlite3
import ssl
import threading
from dataclasses import replace

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


async def _tls_session(listener, factory, local: str) -> RawClient:
    c = await RawClient.connect(listener.address, local=local)
    await c.cmd("EHLO client.example")
    await c.starttls(factory.client_context(), HOST)
    await c.cmd("EHLO client.example")
    return c


async def test_a_session_that_keeps_failing_auth_is_closed_with_421(
    tmp_path, tls_files, users_file, factory
):
    config = {**tls_files, "users_file": users_file, "max_auth_failures": 3}
    async with running_listener(tmp_path, **config) as (listener, sink):
        c = await _tls_session(listener, factory, "127.0.0.2")
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "guess1"))).startswith("535 5.7.8")
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "guess2"))).startswith("535 5.7.8")
        # RFC 5321 §3.8: the third failure ends the session, with a 421 first.
        third = await c.cmd("AUTH PLAIN " + _plain("app1", "guess3"))
        assert third.startswith(f"421 4.7.0 {HOST} Too many failed AUTH attempts")
        assert await c.closed()
        # Another session from the same client may try again (3 of its 10 are used).
        again = await _tls_session(listener, factory, "127.0.0.2")
        assert (await again.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("235")
        await again.close()
        await c.close()
    refused = [e.fields["reason"] for e in sink.events if e.code == "listener.auth.refused"]
    assert refused == ["3 failed AUTH attempts in the session"]


async def test_a_client_that_failed_too_often_is_refused_unchecked_until_the_window_moves(
    tmp_path, tls_files, users_file, factory
):
    config = {
        **tls_files,
        "users_file": users_file,
        "max_auth_failures": 10,
        "max_auth_failures_per_client": 4,
        "auth_failure_window": 600.0,
    }
    async with running_listener(tmp_path, **config) as (listener, sink):
        guesser = await _tls_session(listener, factory, "127.0.0.2")
        for n in range(4):
            reply = await guesser.cmd("AUTH PLAIN " + _plain("app1", f"guess{n}"))
            assert reply.startswith("535 5.7.8")
        # Blocked now: even the right password is not checked (RFC 4954 §6: 454 4.7.0).
        blocked = await guesser.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))
        assert blocked.startswith("454 4.7.0 Too many failed AUTH attempts from 127.0.0.2")
        assert (await guesser.cmd("AUTH LOGIN")).startswith("454 4.7.0")  # no 334 either
        # A new session from the same address is refused too; another address is not.
        same = await _tls_session(listener, factory, "127.0.0.2")
        assert (await same.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("454")
        other = await _tls_session(listener, factory, "127.0.0.3")
        assert (await other.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("235")
        # Once the window has moved past the failures, the client may try again.
        listener.clock.advance(600.0)
        later = await same.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))
        assert later.startswith("235 2.7.0")
        for c in (guesser, same, other):
            await c.close()
    checked = [e for e in sink.events if e.code == "listener.auth"]
    # 4 failures, then the 2 right passwords from 127.0.0.3 and after the window: the
    # three refused attempts never reached the hash.
    assert [e.fields["result"] for e in checked] == ["failed"] * 4 + ["ok", "ok"]
    blocked_lines = [e for e in sink.events if e.code == "listener.auth.blocked"]
    assert [e.fields["address"] for e in blocked_lines] == ["127.0.0.2"]


async def test_a_reload_changes_the_auth_limits_for_the_next_attempt(
    tmp_path, tls_files, users_file, factory
):
    config = {**tls_files, "users_file": users_file, "max_auth_failures_per_client": 10}
    async with running_listener(tmp_path, **config) as (listener, _):
        c = await _tls_session(listener, factory, "127.0.0.2")
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "guess1"))).startswith("535")
        listener.reconfigure(replace(listener.config, max_auth_failures_per_client=2))
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "guess2"))).startswith("535")
        # Two failures now reach the reloaded limit: the right password is refused.
        assert (await c.cmd("AUTH PLAIN " + _plain("app1", "s3cret"))).startswith("454 4.7.0")
        await c.close()


@pytest.mark.parametrize("checks", [2, 6])
async def test_password_checks_run_a_few_at_a_time(
    tmp_path, tls_files, factory, monkeypatch, checks
):
    # Each Argon2id check takes its memory cost: a burst of AUTH commands must not run
    # them all at once. Six sessions AUTH together; the checks running at once are
    # counted. With max_auth_checks = 6 (as many as asyncio's worker threads here, the
    # control) they do overlap past 2, so the limit of 2 is what holds them.
    from engine.gateway import auth

    slow = PasswordHasher(time_cost=4, memory_cost=16 * 1024, parallelism=1)
    users = tmp_path / "slow-users"
    users.write_text(f"app1:{slow.hash('s3cret')}\n")
    running, most = 0, 0
    lock = threading.Lock()
    real_verify = auth.Users.verify

    def counting(self: auth.Users, name: str, password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real_verify(self, name, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(auth.Users, "verify", counting)
    config = {**tls_files, "users_file": users, "max_auth_checks": checks}
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(6))
    async with running_listener(tmp_path, **config) as (listener, _):
        clients = [await _tls_session(listener, factory, f"127.0.0.{i}") for i in range(2, 8)]
        replies = await asyncio.gather(
            *(c.cmd("AUTH PLAIN " + _plain("app1", "s3cret")) for c in clients)
        )
        assert all(r.startswith("235") for r in replies)
        for c in clients:
            await c.close()
    if checks == 2:
        assert 1 <= most <= 2
    else:
        assert most > 2


def test_the_throttle_forgets_the_oldest_client_when_full():
    from engine.gateway.auth import AuthThrottle

    throttle = AuthThrottle(2, 60.0, max_clients=3)
    for i, client in enumerate(["a", "b", "c"]):
        throttle.failed(client, float(i))
    assert throttle.failed("a", 3.0)  # a's second failure: blocked, and now the newest
    throttle.failed("d", 4.0)  # full: b (oldest last failure) is forgotten
    assert len(throttle) == 3 and throttle.blocked("a", 4.0)
    assert not throttle.failed("b", 5.0)  # b starts again from one failure
    assert not throttle.blocked("a", 63.0)  # a's failures at 0 and 3 are past the window


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
