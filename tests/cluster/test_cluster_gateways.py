"""Three ``sts-engine serve`` processes, one Redis, one world (issue 17 item 3).

Each gateway is the harness's ``sts-engine`` adapter (:mod:`harness.adapters.process`):
its own process, queue, SQLite policy cache and report state, fed over SMTP, settled
and advanced through its control socket, on a manual clock. The three share only
``[cluster] redis``. What the world sees is the judge: the policy host's request log
and the report sink's reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from harness.adapters.process import ProcessEngine
from harness.redis_server import RedisServer
from harness.scenario.model import Capability
from harness.world.world import World, shared_cert_factory

DOMAINS = ("a.example", "b.example")
SINK = "reports.rpt.example"
MESSAGE = b"From: alice@sender.example\r\nSubject: hi\r\n\r\nhello\r\n"


def world_spec() -> dict[str, Any]:
    domains: dict[str, Any] = {
        d: {
            "mx": [f"10 mx.{d}"],
            "mta_sts_txt": ["v=STSv1; id=A1"],
            "policy": f"version: STSv1\nmode: enforce\nmx: mx.{d}\nmax_age: 86400\n",
            "tlsrpt_txt": [f"v=TLSRPTv1; rua=https://{SINK}/tlsrpt"],
        }
        for d in DOMAINS
    }
    hosts = {f"mx.{d}": {"cert": "valid"} for d in DOMAINS}
    return {"domains": domains, "hosts": hosts, "report_sink": {"name": SINK}}


def sender(redis: RedisServer) -> dict[str, Any]:
    return {
        "destination_controls": {d: {"tls": "preferred", "mta_sts": True} for d in DOMAINS},
        # A short pause of the breaker: the test's next sends are its probes.
        "cluster": {"redis": redis.url, "retry_after": 0.05, "prefix": "it"},
    }


@asynccontextmanager
async def three_gateways(
    redis: RedisServer, tmp: Path
) -> AsyncIterator[tuple[World, list[ProcessEngine]]]:
    nodes = [ProcessEngine() for _ in range(3)]
    for n in nodes:
        n.plan(frozenset({Capability.CLOCK}))
    async with World(world_spec(), now=nodes[0].now, certs=shared_cert_factory()) as world:
        started: list[ProcessEngine] = []
        try:
            for i, n in enumerate(nodes):
                workdir = tmp / f"gw{i}"
                workdir.mkdir()
                await n.start(world, sender(redis), workdir)
                started.append(n)
            yield world, nodes
        finally:
            for n in started:
                await n.stop()  # raises if a gateway wrote to stderr or exited badly


async def send_everywhere(nodes: Sequence[ProcessEngine], rcpt: str) -> list[str]:
    """The same recipient domain through all three gateways at once; their verdicts."""
    sent = await asyncio.gather(*(n.send("alice@sender.example", [rcpt], MESSAGE) for n in nodes))
    return [r.status for records in sent for r in records]


def events(node: ProcessEngine, code: str) -> list[Any]:
    return [e for e in node.events() if e.code == code]


async def test_three_gateways_fetch_each_policy_once_and_send_one_report_per_domain(
    redis_server: RedisServer, tmp_path: Path
):
    async with three_gateways(redis_server, tmp_path) as (world, nodes):
        for d in DOMAINS:
            assert await send_everywhere(nodes, f"rcpt@{d}") == ["delivered"] * 3
            assert await send_everywhere(nodes, f"again@{d}") == ["delivered"] * 3
        # Twelve deliveries, all under the enforce policy; one fetch per policy id.
        for d in DOMAINS:
            assert world.policy_host.count(f"mta-sts.{d}") == 1
        applied = [e for n in nodes for e in events(n, "sts.success")]
        assert len(applied) == 12
        for n in nodes:  # the day is over: each walks to its report time
            await n.advance(86_400 + 3_600)
        await world.settle()
        reports = world.report_sink.reports("/tlsrpt")
        assert sorted(r.report["policies"][0]["policy"]["policy-domain"] for r in reports) == list(
            DOMAINS
        )
        for r in reports:  # one report per domain and day, with every gateway's sessions
            (policy,) = r.report["policies"]
            assert policy["summary"] == {
                "total-successful-session-count": 6,
                "total-failure-session-count": 0,
            }
        sent = [e for n in nodes for e in events(n, "tlsrpt.sent")]
        assert len(sent) == len(DOMAINS)
        for n in nodes:
            assert [e for e in n.events() if e.level == "warning"] == []


async def test_a_redis_outage_is_one_warning_per_gateway_delivery_goes_on_then_recovery(
    redis_server: RedisServer, tmp_path: Path
):
    async with three_gateways(redis_server, tmp_path) as (world, nodes):
        assert await send_everywhere(nodes, f"rcpt@{DOMAINS[0]}") == ["delivered"] * 3
        assert world.policy_host.count(f"mta-sts.{DOMAINS[0]}") == 1
        await redis_server.stop()
        # Delivery goes on, each gateway on its own cache: the cold domain is fetched
        # by each, as three gateways without a cluster would.
        for round_ in range(3):
            rcpt = f"r{round_}@{DOMAINS[1]}"
            assert await send_everywhere(nodes, rcpt) == ["delivered"] * 3
        assert world.policy_host.count(f"mta-sts.{DOMAINS[1]}") == 3
        for n in nodes:
            (down,) = events(n, "cluster.redis.down")
            assert down.level == "warning"
            assert "unreachable" in down.line and "local cache" in down.line
            assert events(n, "cluster.redis.up") == []
        await redis_server.start()
        # Back: each gateway's next Redis call after the breaker's pause says so once.
        for round_ in range(20):
            if all(events(n, "cluster.redis.up") for n in nodes):
                break
            rcpt = f"back{round_}@{DOMAINS[0]}"
            assert await send_everywhere(nodes, rcpt) == ["delivered"] * 3
        for n in nodes:
            assert len(events(n, "cluster.redis.down")) == 1
            assert len(events(n, "cluster.redis.up")) == 1
        # Sharing works again: a new policy id is fetched once for all three.
        await world.update_domain(DOMAINS[0], mta_sts_txt=["v=STSv1; id=B2"])
        before = world.policy_host.count(f"mta-sts.{DOMAINS[0]}")
        assert await send_everywhere(nodes, f"new@{DOMAINS[0]}") == ["delivered"] * 3
        assert world.policy_host.count(f"mta-sts.{DOMAINS[0]}") == before + 1
