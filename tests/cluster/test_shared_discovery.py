"""Policy discovery and refresh on three engines sharing one Redis, in one world.

The engines are built as the in-process adapter builds its own
(harness.adapters.inprocess.engine_for), each with the Redis policy share a gateway of
a cluster has (engine/gateway/cluster.py), and run in the test's loop, so a gate on
their fetchers makes the race of three cold resolutions deterministic: one holds the
lease and fetches, the two others wait for its result, and the world's policy host
counts one request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from engine.config import parse_config
from engine.core.cache import MemoryPolicyStore
from engine.core.clock import ManualClock
from engine.core.discovery import DiscoveryResult, PolicySource
from engine.delivery.agent import Engine
from engine.delivery.mtasts import discover_policy
from engine.io.redis_policy import RedisPolicyShare
from harness.adapters.inprocess import engine_for
from harness.redis_server import RedisServer
from harness.world import World
from tests.cluster.conftest import WatchSink, make_link
from tests.integration.sim import DNS_TIMEOUT, cert_factory, controls_toml, sts_world

D = "example.com"
POLICY_HOST = f"mta-sts.{D}"


@dataclass
class Node:
    engine: Engine
    sink: WatchSink
    share: RedisPolicyShare

    async def discover(self) -> DiscoveryResult:
        s = self.engine.services
        return await discover_policy(
            D, resolver=s.resolver, fetcher=s.fetcher, store=s.store, clock=s.clock,
            sink=self.sink, share=self.share,
        )  # fmt: skip


@asynccontextmanager
async def three_nodes(redis: RedisServer, **world: Any) -> AsyncIterator[tuple[World, list[Node]]]:
    clock = ManualClock()
    async with World(sts_world(**world), now=clock.now, certs=cert_factory()) as w:
        host, port = w.resolver
        text = controls_toml(tls="required-verify", mta_sts=True)
        text += f'[dns]\nresolvers = ["{host}:{port}"]\ntimeout = {DNS_TIMEOUT}\n'
        nodes, bell = [], asyncio.Event()
        for _ in range(3):
            sink = WatchSink(bell)
            share = RedisPolicyShare(make_link(redis.url, sink), lease=5.0, wait=5.0, poll=0.01)
            engine = engine_for(
                w, parse_config(text), clock=clock, sink=sink, store=MemoryPolicyStore(),
                seed=7, share=share,
            )  # fmt: skip
            nodes.append(Node(engine, sink, share))
        try:
            yield w, nodes
        finally:
            for n in nodes:
                await n.engine.aclose()
                await n.share.link.aclose()


def gate_fetches(nodes: list[Node]) -> asyncio.Event:
    """Hold every policy fetch until the returned event is set."""
    gate = asyncio.Event()
    for n in nodes:
        fetcher = n.engine.services.fetcher
        real = fetcher.fetch

        async def held(domain: str, real: Any = real) -> Any:
            await gate.wait()
            return await real(domain)

        fetcher.fetch = held  # type: ignore[method-assign]
    return gate


async def test_three_cold_resolutions_at_once_fetch_the_policy_once(redis_server: RedisServer):
    async with three_nodes(redis_server) as (world, nodes):
        gate = gate_fetches(nodes)
        runs = [asyncio.create_task(n.discover()) for n in nodes]
        # Two wait for the lease holder, whose fetch is held at the gate (the sinks
        # share one bell, so one wait watches all three).
        await nodes[0].sink.until(
            lambda: sum(bool(n.sink.codes("cluster.fetch.wait")) for n in nodes) == 2
        )
        waiting = [n for n in nodes if n.sink.codes("cluster.fetch.wait")]
        assert len(waiting) == 2 and world.policy_host.count(POLICY_HOST) == 0
        gate.set()
        results = await asyncio.gather(*runs)
        assert world.policy_host.count(POLICY_HOST) == 1
        assert sorted(r.source for r in results) == sorted(
            [PolicySource.FETCHED, PolicySource.CACHE, PolicySource.CACHE]
        )
        assert {r.policy for r in results} == {results[0].policy}
        assert results[0].policy is not None and results[0].policy.mode == "enforce"
        fetched = next(r for r in results if r.source is PolicySource.FETCHED).new_entry
        for n in nodes:  # the entry expires everywhere when it does where it was fetched
            assert n.engine.services.store.get(D) == fetched
        for n in waiting:
            assert [e.fields["txt_id"] for e in n.sink.codes("cluster.policy.shared")] == ["A1"]


async def test_a_policy_fetched_by_one_gateway_is_applied_by_the_others_without_a_fetch(
    redis_server: RedisServer,
):
    async with three_nodes(redis_server) as (world, nodes):
        for n in nodes:
            result = await n.discover()
            assert result.policy is not None
        assert world.policy_host.count(POLICY_HOST) == 1
        # A new id: fetched once more, for all of them.
        await world.update_domain(D, mta_sts_txt=["v=STSv1; id=B2"])
        for n in reversed(nodes):
            await n.discover()
        assert world.policy_host.count(POLICY_HOST) == 2
        assert {n.engine.services.store.get(D).txt_id for n in nodes} == {"B2"}  # type: ignore[union-attr]


async def test_a_policy_is_refreshed_once_for_all_gateways(redis_server: RedisServer):
    async with three_nodes(redis_server) as (world, nodes):
        for n in nodes:
            await n.discover()  # each uses it: each would refresh it alone
        clock = nodes[0].engine.clock
        assert isinstance(clock, ManualClock)
        clock.advance(86_400 / 2 * 1.1 + 1)  # max_age 86400: due after half of it + jitter
        done = [await n.engine.refresh_policies() for n in nodes]
        assert done == [1, 0, 0]
        assert world.policy_host.count(POLICY_HOST) == 2
        fresh = nodes[0].engine.services.store.get(D)
        assert fresh is not None and fresh.fetched_at == clock.now()
        assert [n.engine.services.store.get(D) for n in nodes[1:]] == [fresh, fresh]


async def test_without_redis_each_gateway_fetches_alone_and_says_so_once(
    redis_server: RedisServer,
):
    async with three_nodes(redis_server) as (world, nodes):
        await redis_server.stop()
        for _ in range(2):
            for n in nodes:
                result = await n.discover()
                assert result.policy is not None
        assert world.policy_host.count(POLICY_HOST) == 3  # one per gateway, as alone
        for n in nodes:
            assert [e.code for e in n.sink.events if e.code.startswith("cluster.")] == [
                "cluster.redis.down"
            ]
