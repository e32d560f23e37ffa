"""The gateway's one connection to Redis: short timeouts and a circuit breaker.

Theory of operation
-------------------
Redis is where several gateways share what they learn (docs/cluster.md); it is never
something delivery waits on. So every call goes through :meth:`RedisLink.call`:

* it is bounded by ``timeout`` (connecting included); redis-py's own retries are off,
  so one call costs at most that;
* a failure of any kind (refused, reset, timed out, an error reply) raises
  :class:`RedisUnavailable`, which the callers take as "go on with the local state";
* the first failure opens the breaker: for ``retry_after`` seconds every call fails at
  once, without touching the network, so a dead Redis costs a round nothing. Then one
  call (the probe) tries; its success closes the breaker, its failure opens it again.

Said once: the first failure after Redis worked (or at start, before it ever did) is
one ``cluster.redis.down`` warning; the first success after that is one
``cluster.redis.up`` line. Nothing in between is logged, however many calls fail.

The breaker's time is ``monotonic`` (injected; the wall's by default), not the engine
clock: an outage is measured in real seconds even when a harness moves the engine's
clock by hand. The URL is never logged with its password.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from engine.core.clock import Clock
from engine.core.errors import StsError
from engine.core.events import EventSink, LogEvent

__all__ = ["RedisLink", "RedisUnavailable", "redacted_url"]

_T = TypeVar("_T")


class RedisUnavailable(StsError):
    """Redis did not answer in time, or at all, or the breaker is open.

    Attributes:
        detail: what happened, in one line.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def redacted_url(url: str) -> str:
    """``url`` without its password (``redis://user:***@host:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _client(url: str, timeout: float) -> Any:
    """A redis-py asyncio client for ``url`` that never retries by itself."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisLink:
    """Redis calls with a deadline each and a circuit breaker (async context manager).

    Args:
        url: the Redis URL (``redis://``, ``rediss://``, ``unix://``), checked by the
            configuration.
        timeout: seconds per call.
        retry_after: seconds the breaker stays open after a failure.
        prefix: the start of every key (:meth:`key`).
        sink: where ``cluster.redis.down`` / ``cluster.redis.up`` go.
        clock: stamps those events.
        monotonic: the breaker's time source.
        client: a redis-py asyncio client to use instead of one made from ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retry_after: float,
        prefix: str,
        sink: EventSink,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        self.url = redacted_url(url)
        self.timeout = timeout
        self.retry_after = retry_after
        self.prefix = prefix
        self._sink, self._clock, self._monotonic = sink, clock, monotonic
        self.client: Any = client if client is not None else _client(url, timeout)
        self._open_until: float | None = None
        self._probing = False
        self._said_down = False
        #: Calls that failed or were refused by the open breaker (for tests and status).
        self.failures = 0

    async def __aenter__(self) -> RedisLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections."""
        close = getattr(self.client, "aclose", None) or self.client.close
        # Closing a link to a dead server: nothing is left to do.
        with contextlib.suppress(Exception):
            await close()

    def key(self, *parts: str) -> str:
        """``prefix:part:part...``: every key the gateway uses is named here."""
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        """False while the breaker is open (calls fail at once)."""
        return self._open_until is None

    def script(self, lua: str) -> Any:
        """A registered Lua script (EVALSHA, loaded again after a Redis restart)."""
        return self.client.register_script(lua)

    async def call(self, what: str, op: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run ``op(client)`` within the timeout, through the breaker.

        Args:
            what: names the call in the ``cluster.redis.down`` line.
            op: the redis-py calls to make.

        Raises:
            RedisUnavailable: the call failed or timed out, or the breaker is open.
        """
        if self._open_until is not None:
            if self._probing or self._monotonic() < self._open_until:
                self.failures += 1
                raise RedisUnavailable("circuit open: Redis failed recently")
            self._probing = True
        try:
            async with asyncio.timeout(self.timeout):
                result = await op(self.client)
        except Exception as exc:  # any failure is "no Redis now"; delivery goes on
            self._failed(what, exc)
            raise RedisUnavailable(f"{what}: {_describe(exc)}") from exc
        finally:
            self._probing = False
        self._worked()
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self._open_until = self._monotonic() + self.retry_after
        if not self._said_down:
            self._said_down = True
            self.emit(
                "cluster.redis.down",
                "warning",
                redis=self.url,
                detail=f"{what}: {_describe(exc)}",
                retry_after=self.retry_after,
            )

    def _worked(self) -> None:
        self._open_until = None
        if self._said_down:
            self._said_down = False
            self.emit("cluster.redis.up", "info", redis=self.url)

    def emit(self, code: str, level: str, **fields: object) -> None:
        """Send one event to the gateway's sink, stamped with the engine clock."""
        self._sink.emit(LogEvent(code, fields, level, self._clock.now()))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
