"""Fixtures for the cluster tests: a real ``redis-server`` per test, and event waits.

The server is Debian's ``redis-server`` on a Unix socket in a directory of its own
(:class:`harness.redis_server.RedisServer`); where it is missing the tests skip with
the reason, so the README's test command passes for anyone (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from engine.core.clock import ManualClock
from engine.core.events import LogEvent
from engine.io.redis_link import RedisLink
from harness.redis_server import REDIS_MISSING, RedisServer, redis_server_path

pytest.importorskip("redis", reason="the redis package is missing (pip install -e '.[test]')")


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A running ``redis-server`` of this test's own."""
    if redis_server_path() is None:
        pytest.skip(REDIS_MISSING)
    async with RedisServer() as server:
        yield server


class WatchSink:
    """An EventSink that keeps every event and wakes whoever waits for one.

    Args:
        bell: an event several sinks share, so one wait can watch them all.
    """

    def __init__(self, bell: asyncio.Event | None = None) -> None:
        self.events: list[LogEvent] = []
        self._changed = bell or asyncio.Event()

    def emit(self, event: LogEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def codes(self, code: str) -> list[LogEvent]:
        """The events with ``code``."""
        return [e for e in self.events if e.code == code]

    async def until(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait until ``check()`` holds, woken by each event (no polling)."""
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()


class FakeTime:
    """A monotonic clock a test moves by hand (the breaker's pause)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_link(
    url: str,
    sink: WatchSink,
    *,
    timeout: float = 2.0,
    retry_after: float = 5.0,
    prefix: str = "t",
    monotonic: Callable[[], float] | None = None,
) -> RedisLink:
    """A link to ``url`` on a manual engine clock."""
    extra = {} if monotonic is None else {"monotonic": monotonic}
    return RedisLink(
        url, timeout=timeout, retry_after=retry_after, prefix=prefix, sink=sink,
        clock=ManualClock(), **extra,
    )  # fmt: skip
