"""engine/io/redis_policy.py against a real redis-server: the shared cache and the lease."""

from __future__ import annotations

import asyncio

from engine.core.cache import CachedPolicy, FetchFailure, MemoryPolicyStore
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.io.redis_policy import RedisPolicyShare
from harness.redis_server import RedisServer
from tests.cluster.conftest import WatchSink, make_link

D = "example.com"
POLICY = Policy(mode=Mode.ENFORCE, max_age=86_400, mx=(MxPattern("mx1.example.com", False),))


def entry(txt_id: str, at: float) -> CachedPolicy:
    return CachedPolicy(D, POLICY, txt_id, at)


def failure(txt_id: str, at: float) -> FetchFailure:
    return FetchFailure(D, txt_id, at, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 500")


def share(url: str, sink: WatchSink, **kw: float) -> RedisPolicyShare:
    lease, wait = kw.pop("lease", 5.0), kw.pop("wait", 5.0)
    return RedisPolicyShare(make_link(url, sink, **kw), lease=lease, wait=wait, poll=0.01)


async def test_what_one_gateway_fetched_reaches_another_unchanged(redis_server: RedisServer):
    a, b = share(redis_server.url, WatchSink()), share(redis_server.url, WatchSink())
    fetched = entry("A1", 1_767_225_600.123456)
    await a.publish(D, fetched, None)
    store = MemoryPolicyStore()
    assert await b.pull(D, store) is True
    assert store.get(D) == fetched  # fetched_at travels exactly: it expires as it would there
    assert await b.pull(D, store) is False  # nothing newer now
    await a.link.aclose()
    await b.link.aclose()


async def test_an_older_entry_never_replaces_a_newer_one(redis_server: RedisServer):
    a = share(redis_server.url, WatchSink())
    await a.publish(D, entry("B2", 2000.0), None)
    await a.publish(D, entry("A1", 1000.0), None)  # a slow gateway's older fetch
    store = MemoryPolicyStore()
    store.put(entry("A1", 1500.0))
    assert await a.pull(D, store) is True
    assert store.get(D) == entry("B2", 2000.0)
    local_newer = MemoryPolicyStore()
    local_newer.put(entry("C3", 3000.0))
    assert await a.pull(D, local_newer) is False
    assert local_newer.get(D) == entry("C3", 3000.0)
    await a.link.aclose()


async def test_a_failed_fetch_is_shared_and_a_later_success_clears_it(redis_server: RedisServer):
    a = share(redis_server.url, WatchSink())
    await a.publish(D, None, failure("A1", 1000.0))
    store = MemoryPolicyStore()
    assert await a.pull(D, store) is True
    assert store.get_failure(D) == failure("A1", 1000.0)  # the FETCH-15 throttle, cluster-wide
    await a.publish(D, entry("A1", 1100.0), None)
    fresh = MemoryPolicyStore()
    assert await a.pull(D, fresh) is True
    assert (fresh.get(D), fresh.get_failure(D)) == (entry("A1", 1100.0), None)
    assert await a.pull(D, store) is True  # the old failure goes with the new entry
    assert store.get_failure(D) is None
    await a.link.aclose()


async def test_one_gateway_holds_the_lease_and_the_others_wait_for_its_result(
    redis_server: RedisServer,
):
    sinks = [WatchSink() for _ in range(3)]
    nodes = [share(redis_server.url, s) for s in sinks]
    stores = [MemoryPolicyStore() for _ in nodes]
    assert await nodes[0].lease_or_wait(D, "A1", stores[0]) is False  # won: fetch
    waiting = [
        asyncio.create_task(n.lease_or_wait(D, "A1", s))
        for n, s in zip(nodes[1:], stores[1:], strict=True)
    ]
    for sink in sinks[1:]:
        await sink.until(lambda s=sink: bool(s.codes("cluster.fetch.wait")))
    assert not any(t.done() for t in waiting)
    await nodes[0].publish(D, entry("A1", 1000.0), None)  # the winner's result
    assert await asyncio.gather(*waiting) == [True, True]
    assert [s.get(D) for s in stores[1:]] == [entry("A1", 1000.0)] * 2
    # The lease was given back: the next fetch of another id is anyone's at once.
    assert await nodes[1].lease_or_wait(D, "B2", stores[1]) is False
    for n in nodes:
        await n.link.aclose()


async def test_a_waiter_fetches_itself_when_the_holder_dies_or_takes_too_long(
    redis_server: RedisServer,
):
    holder = share(redis_server.url, WatchSink(), lease=0.3)
    waiter = share(redis_server.url, WatchSink(), wait=30.0)
    assert await holder.lease_or_wait(D, "A1", MemoryPolicyStore()) is False
    # The holder never publishes (it died): its lease runs out, the waiter goes.
    assert await waiter.lease_or_wait(D, "A1", MemoryPolicyStore()) is False
    slow = share(redis_server.url, WatchSink(), lease=60.0)
    impatient = share(redis_server.url, WatchSink(), wait=0.1)
    assert await slow.lease_or_wait(D, "B2", MemoryPolicyStore()) is False
    assert await impatient.lease_or_wait(D, "B2", MemoryPolicyStore()) is False
    for n in (holder, waiter, slow, impatient):
        await n.link.aclose()


async def test_without_redis_nothing_is_shared_and_nothing_raises(redis_server: RedisServer):
    sink = WatchSink()
    node = share(redis_server.url, sink)
    await redis_server.stop()
    store = MemoryPolicyStore()
    assert await node.pull(D, store) is False
    assert await node.lease_or_wait(D, "A1", store) is False  # fetch, as alone
    await node.publish(D, entry("A1", 1000.0), None)
    assert await node.forget(D) is False
    assert store.get(D) is None
    assert [e.code for e in sink.events] == ["cluster.redis.down"]
    await node.link.aclose()


async def test_purge_forgets_the_shared_entry(redis_server: RedisServer):
    node = share(redis_server.url, WatchSink())
    await node.publish(D, entry("A1", 1000.0), failure("A1", 900.0))
    assert await node.forget(D) is True
    store = MemoryPolicyStore()
    assert await node.pull(D, store) is False
    assert (store.get(D), store.get_failure(D)) == (None, None)
    await node.link.aclose()
