"""engine/io/redis_link.py against a real redis-server: timeouts, the breaker, said once."""

from __future__ import annotations

import asyncio

import pytest

from engine.io.redis_link import RedisUnavailable, redacted_url
from harness.redis_server import RedisServer
from tests.cluster.conftest import FakeTime, WatchSink, make_link


async def test_calls_answer_and_say_nothing_while_redis_works(redis_server: RedisServer):
    sink = WatchSink()
    async with make_link(redis_server.url, sink) as link:
        assert await link.call("set", lambda r: r.set(link.key("k"), b"v")) is True
        assert await link.call("get", lambda r: r.get("t:k")) == b"v"
    assert link.available and link.failures == 0
    assert sink.events == []


async def test_an_outage_is_one_warning_fast_failures_then_one_line_when_back(
    redis_server: RedisServer,
):
    sink, clock = WatchSink(), FakeTime()
    async with make_link(redis_server.url, sink, retry_after=5.0, monotonic=clock) as link:
        await link.call("ping", lambda r: r.ping())
        await redis_server.stop()
        with pytest.raises(RedisUnavailable, match="ping"):
            await link.call("ping", lambda r: r.ping())
        assert not link.available
        touched = []

        async def op(r: object) -> None:
            touched.append(r)

        for _ in range(5):  # the breaker is open: no network, no new line
            with pytest.raises(RedisUnavailable, match="circuit open"):
                await link.call("ping", op)
        assert touched == []
        await redis_server.start()
        clock.now += 4.9
        with pytest.raises(RedisUnavailable, match="circuit open"):
            await link.call("ping", op)
        clock.now += 0.2  # retry_after has passed: one call tries, and works
        assert await link.call("ping", lambda r: r.ping()) is True
        assert link.available
    assert [(e.code, e.level) for e in sink.events] == [
        ("cluster.redis.down", "warning"),
        ("cluster.redis.up", "info"),
    ]
    down = sink.events[0].fields
    assert down["redis"] == redis_server.url and "ping" in str(down["detail"])
    assert link.failures == 7


async def test_a_frozen_redis_costs_one_timeout_then_nothing(redis_server: RedisServer):
    sink, clock = WatchSink(), FakeTime()
    async with make_link(redis_server.url, sink, timeout=0.2, monotonic=clock) as link:
        await link.call("ping", lambda r: r.ping())
        redis_server.pause()
        try:
            async with asyncio.timeout(10):  # a hang would fail here, not in the link
                with pytest.raises(RedisUnavailable, match="no answer in time"):
                    await link.call("get", lambda r: r.get("t:k"))
                with pytest.raises(RedisUnavailable, match="circuit open"):
                    await link.call("get", lambda r: r.get("t:k"))
        finally:
            redis_server.resume()
    assert [e.code for e in sink.events] == ["cluster.redis.down"]


async def test_a_redis_that_never_was_is_said_once_at_the_first_call(tmp_path):
    sink, clock = WatchSink(), FakeTime()
    async with make_link(f"unix://{tmp_path}/none.sock", sink, monotonic=clock) as link:
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.call("ping", lambda r: r.ping())
            clock.now += 10  # each try is a probe after the breaker's pause
    assert [e.code for e in sink.events] == ["cluster.redis.down"]


def test_the_url_in_the_lines_never_carries_the_password():
    assert redacted_url("redis://u:secret@h:6379/0") == "redis://u:***@h:6379/0"
    assert redacted_url("redis://:secret@h") == "redis://:***@h"
    assert redacted_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
