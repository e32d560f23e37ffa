"""The MTA-STS policy cache several gateways share through Redis.

Theory of operation
-------------------
Each gateway keeps its own :class:`~engine.core.cache.PolicyStore` (SQLite) and
decides from it alone, with :func:`engine.core.cache.decide`, as without a cluster.
Redis holds a second copy of what any gateway learned, and this class moves it into
the local store at the two moments it can change a decision:

1. **Before a fetch.** When the local store says "fetch id X" (a cold domain, a new
   id), :meth:`RedisPolicyShare.pull` copies the domain's shared entry and last
   failure into the local store; if another gateway already fetched X (or failed to,
   less than five minutes ago: the FETCH-15 throttle is then the cluster's), the
   caller decides again and no HTTPS request is made.
2. **While another gateway fetches.** :meth:`RedisPolicyShare.lease_or_wait` takes a
   short lease on (domain, X) with ``SET NX PX``. The winner fetches; the others poll
   the shared entry until the winner's result (entry or failure) arrives, the lease
   disappears without one (the winner died), or ``wait`` seconds pass; in the last two
   cases they fetch themselves. A slow policy host costs the waiters no more than
   fetching would have.

After its fetch the winner :meth:`~RedisPolicyShare.publish`\\ es the result and gives
the lease back. The rules of the port hold in Redis too, in one Lua script each: an
entry replaces only an older one (smaller ``fetched_at``), a failure only an older
failure, and a new entry clears an older failure. ``fetched_at`` travels unchanged,
so an entry another gateway fetched expires when it would have there (AMB-14): the
caching rules of RFC 8461 (CACHE-*) are the local store's, unchanged.

Nothing here ever raises to its caller: a Redis failure (:class:`RedisUnavailable`)
means "nothing shared now", and the gateway goes on with its local cache.
``mark_used`` stays local: each gateway refreshes what it uses, and a refresh takes
the same lease, so a policy is refreshed once for all of them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from engine.core.cache import CachedPolicy, FetchFailure, PolicyStore
from engine.core.events import ResultType
from engine.io.redis_link import RedisLink, RedisUnavailable
from engine.io.store import policy_from_json, policy_json

__all__ = ["RedisPolicyShare"]

# KEYS: entry, failure. ARGV: policy JSON, txt_id, fetched_at. Newer wins (the port's rule).
_PUT = """
local old = redis.call('HGET', KEYS[1], 'fetched_at')
if old and tonumber(old) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'policy', ARGV[1], 'txt_id', ARGV[2], 'fetched_at', ARGV[3])
local failed = redis.call('HGET', KEYS[2], 'failed_at')
if failed and tonumber(failed) <= tonumber(ARGV[3]) then redis.call('DEL', KEYS[2]) end
return 1
"""
# KEYS: failure. ARGV: txt_id, failed_at, result_type, detail.
_FAIL = """
local old = redis.call('HGET', KEYS[1], 'failed_at')
if old and tonumber(old) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'txt_id', ARGV[1], 'failed_at', ARGV[2],
           'result_type', ARGV[3], 'detail', ARGV[4])
return 1
"""
# KEYS: lease. ARGV: token. Gives back only our own lease (it may have expired and gone
# to another gateway since).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(domain: str, raw: dict[Any, Any]) -> CachedPolicy | None:
    data = {_text(k): _text(v) for k, v in raw.items()}
    if not {"policy", "txt_id", "fetched_at"} <= data.keys():
        return None
    policy = policy_from_json(data["policy"])
    return CachedPolicy(domain, policy, data["txt_id"], float(data["fetched_at"]))


def _failure(domain: str, raw: dict[Any, Any]) -> FetchFailure | None:
    data = {_text(k): _text(v) for k, v in raw.items()}
    if not {"txt_id", "failed_at", "result_type"} <= data.keys():
        return None
    return FetchFailure(
        domain,
        data["txt_id"],
        float(data["failed_at"]),
        ResultType(data["result_type"]),
        data.get("detail", ""),
    )


def _newer(entry: CachedPolicy, local: CachedPolicy | None) -> bool:
    """Whether the shared ``entry`` replaces ``local`` (the port's rule: not older)."""
    if local is None or entry.fetched_at > local.fetched_at:
        return True
    # Fetched at the same instant (a clock that moves by hand): a different entry
    # replaces, as the store's own put does.
    return entry.fetched_at == local.fetched_at and entry != local


class RedisPolicyShare:
    """The shared policy cache beside a gateway's local store.

    Args:
        link: the gateway's :class:`~engine.io.redis_link.RedisLink`.
        lease: seconds a fetch lease lives (longer than a fetch may take).
        wait: seconds a gateway waits for another's fetch before fetching itself.
        poll: the most seconds between two looks at the shared entry while waiting
            (the first looks come sooner: an eighth of it, doubling).
        monotonic: the wait's time source.
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        lease: float,
        wait: float,
        poll: float = 0.025,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.lease, self.wait, self.poll = lease, wait, poll
        self._monotonic = monotonic
        self._put, self._fail = link.script(_PUT), link.script(_FAIL)
        self._release = link.script(_RELEASE)
        self._held: dict[str, tuple[str, str]] = {}  # domain -> (lease key, token)

    def _keys(self, domain: str) -> tuple[str, str]:
        return self.link.key("sts", "policy", domain), self.link.key("sts", "failure", domain)

    def _lease_key(self, domain: str, txt_id: str) -> str:
        return self.link.key("sts", "lease", domain, txt_id)

    async def _read(
        self, domain: str, lease_key: str | None = None
    ) -> tuple[CachedPolicy | None, FetchFailure | None, bool]:
        entry_key, failure_key = self._keys(domain)

        async def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.hgetall(entry_key)
            pipe.hgetall(failure_key)
            if lease_key is not None:
                pipe.exists(lease_key)
            return list(await pipe.execute())

        replies = await self.link.call("read policy", read)
        leased = bool(replies[2]) if lease_key is not None else False
        return _entry(domain, replies[0]), _failure(domain, replies[1]), leased

    def _merge(
        self,
        store: PolicyStore,
        domain: str,
        entry: CachedPolicy | None,
        failure: FetchFailure | None,
    ) -> bool:
        """Copy what is newer in Redis into ``store``; True when anything changed."""
        changed = False
        local = store.get(domain)
        if entry is not None and _newer(entry, local):
            store.put(entry)
            known = store.get_failure(domain)
            if known is not None and known.failed_at <= entry.fetched_at:
                store.clear_failure(domain)  # as save_result does after a fetch
            changed = True
            self.link.emit(
                "cluster.policy.shared",
                "debug",
                domain=domain,
                txt_id=entry.txt_id,
                fetched_at=entry.fetched_at,
            )
        if failure is not None:
            known, newest = store.get_failure(domain), store.get(domain)
            newer = known is None or failure.failed_at > known.failed_at
            if newer and (newest is None or failure.failed_at >= newest.fetched_at):
                store.record_failure(failure)
                changed = True
        return changed

    async def pull(self, domain: str, store: PolicyStore) -> bool:
        """Copy the domain's shared entry and failure into ``store`` where newer.

        Returns:
            True when the local store changed (decide again); False when nothing
            newer is shared, or Redis cannot be asked now.
        """
        try:
            entry, failure, _ = await self._read(domain)
        except RedisUnavailable:
            return False
        return self._merge(store, domain, entry, failure)

    async def lease_or_wait(self, domain: str, txt_id: str, store: PolicyStore) -> bool:
        """Take the fetch lease for (``domain``, ``txt_id``), or wait for its holder.

        Returns:
            True when another gateway's result arrived in ``store`` (decide again);
            False when this gateway must fetch: it holds the lease, the holder went
            away without a result, the wait ran out, or Redis cannot be asked.
        """
        key, token = self._lease_key(domain, txt_id), secrets.token_hex(8)
        millis = max(1, int(self.lease * 1000))
        try:
            won = await self.link.call(
                "take lease", lambda r: r.set(key, token, nx=True, px=millis)
            )
            if won:
                self._held[domain] = (key, token)
                return False
            self.link.emit("cluster.fetch.wait", "debug", domain=domain, txt_id=txt_id)
            deadline = self._monotonic() + self.wait
            pause = self.poll / 8  # a fetch takes milliseconds: look soon, then less often
            while self._monotonic() < deadline:
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.poll)
                entry, failure, leased = await self._read(domain, key)
                if self._merge(store, domain, entry, failure):
                    return True
                if not leased:
                    return False  # the holder is gone without a result: fetch
        except RedisUnavailable:
            return False
        return False

    async def publish(
        self, domain: str, new_entry: CachedPolicy | None, failure: FetchFailure | None
    ) -> None:
        """Share a fetch's result and give back this gateway's lease on the domain."""
        entry_key, failure_key = self._keys(domain)
        held = self._held.pop(domain, None)
        try:
            if new_entry is not None:
                args = [
                    policy_json(new_entry.policy),
                    new_entry.txt_id,
                    repr(new_entry.fetched_at),
                ]
                await self.link.call(
                    "share policy",
                    lambda r: self._put(keys=[entry_key, failure_key], args=args, client=r),
                )
            if failure is not None:
                fargs = [
                    failure.txt_id,
                    repr(failure.failed_at),
                    str(failure.result_type),
                    failure.detail,
                ]
                await self.link.call(
                    "share failure",
                    lambda r: self._fail(keys=[failure_key], args=fargs, client=r),
                )
            if held is not None:
                await self.link.call(
                    "give back lease",
                    lambda r: self._release(keys=[held[0]], args=[held[1]], client=r),
                )
        except RedisUnavailable:
            return  # kept locally; an unreturned lease expires by itself

    async def forget(self, domain: str) -> bool:
        """Delete the domain's shared entry and failure (``sts-engine policy purge``).

        Returns:
            False when Redis could not be asked.
        """
        keys = self._keys(domain)
        try:
            await self.link.call("purge policy", lambda r: r.delete(*keys))
        except RedisUnavailable:
            return False
        return True
