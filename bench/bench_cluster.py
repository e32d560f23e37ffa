"""Cold MTA-STS resolutions on three gateways: one shared cache (Redis) or three caches.

Run as ``python bench/bench_cluster.py [--domains N] [--concurrency C] [--rounds R]``.
Needs ``redis-server`` (Debian's package) and the ``redis`` package (the ``test`` or
``cluster`` extra). Prints, for each way, the cold resolutions made, the best round's
seconds and rate, and how many times the policy hosts were asked: three separate caches
fetch every policy three times, one shared cache once (docs/cluster.md). Benchmarks
print; they never assert times.

What is measured
----------------
One simulated world on loopback, in a child process (so its servers' CPU is not charged
to the gateways), with N domains ``d<i>.bench.example`` publishing ``_mta-sts`` TXT and
an enforce policy. Three engines ("nodes"), each with its own policy store, resolver and
HTTPS client, as three gateways have, resolve every domain at once (concurrency C each;
3N cold resolutions) with :func:`engine.delivery.mtasts.discover_policy`:

* **separate**: each node alone, as three gateways without ``[cluster]``;
* **shared**: each node also holds a :class:`~engine.io.redis_policy.RedisPolicyShare`
  on its own connection to one ``redis-server`` (a Unix socket), as three gateways
  with ``[cluster] redis`` do: a node whose cache is cold pulls the shared entry,
  takes the fetch lease or waits for its holder.

The three nodes share this process's event loop (the standard one, or uvloop with
``--loop uvloop``); real gateways are three processes, possibly on three machines, so
a fetch saved here is CPU saved on one of them and on the policy host. Redis is
flushed and the world's logs cleared before every run; the bench checks that every
resolution found its policy and counts the fetches from the policy host's log.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from certs import CertFactory
from engine.config import parse_config
from engine.core.cache import MemoryPolicyStore
from engine.core.clock import ManualClock
from engine.core.events import LogEvent
from engine.delivery.agent import Engine
from engine.delivery.mtasts import discover_policy
from engine.eventloop import loop_factory
from engine.io.dialer import Dialer
from engine.io.redis_link import RedisLink
from engine.io.redis_policy import RedisPolicyShare
from harness.redis_server import REDIS_MISSING, RedisServer, redis_server_path
from harness.world import World

NODES = 3


class NullSink:
    """Discards events (a gateway at info level builds no debug lines either)."""

    debug_enabled = False

    def emit(self, event: LogEvent) -> None:
        """Drop ``event``."""


def spec(n: int) -> dict[str, Any]:
    return {
        "domains": {
            f"d{i}.bench.example": {
                "mta_sts_txt": ["v=STSv1; id=C1"],
                "policy": f"version: STSv1\nmode: enforce\nmx: mx1.d{i}.bench.example\n"
                "max_age: 86400\n",
            }
            for i in range(n)
        }
    }


def _world_process(n: int, conn: Connection) -> None:
    """The world in its own process: ``fetches`` / ``clear`` / ``stop`` over a pipe."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with World(spec(n), certs=CertFactory()) as w:
            conn.send((w.resolver, w.ca_pem, w.endpoint_map))
            while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
                if command == "fetches":
                    conn.send(w.policy_host.count())
                elif command == "cpu":  # this process's CPU seconds so far
                    conn.send(time.process_time())
                else:
                    w.servers.clear_logs()
                    conn.send("ok")

    asyncio.run(run())


def _roots(pem: bytes) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


async def one_run(
    world: tuple[Any, bytes, Any], redis_url: str | None, names: list[str], concurrency: int
) -> float:
    """Three nodes resolve every name, cold; the seconds it took."""
    (host, port), ca_pem, endpoints = world
    clock = ManualClock(time.time())  # the child issued its certificates at the wall clock
    text = f'[dns]\nresolvers = ["{host}:{port}"]\ntimeout = 5.0\n[policy_fetch]\ntimeout = 10.0\n'
    nodes = []
    for _ in range(NODES):
        share = None
        if redis_url is not None:
            link = RedisLink(
                redis_url, timeout=0.5, retry_after=5.0, prefix="bench", sink=NullSink(),
                clock=clock,
            )  # fmt: skip
            share = RedisPolicyShare(link, lease=12.0, wait=12.0)
        engine = Engine(
            parse_config(text), clock=clock, sink=NullSink(), store=MemoryPolicyStore(),
            dialer=Dialer(endpoint_map=endpoints, loopback_only=True),
            roots=_roots(ca_pem), rng=random.Random(1), share=share,
        )  # fmt: skip
        nodes.append((engine, share))

    async def resolve_all(engine: Engine, share: RedisPolicyShare | None) -> int:
        gate = asyncio.Semaphore(concurrency)
        s = engine.services

        async def one(name: str) -> bool:
            async with gate:
                result = await discover_policy(
                    name, resolver=s.resolver, fetcher=s.fetcher, store=s.store,
                    clock=clock, sink=engine.sink, share=share,
                )  # fmt: skip
                return result.policy is not None

        return sum(await asyncio.gather(*(one(n) for n in names)))

    try:
        start = time.perf_counter()
        found = await asyncio.gather(*(resolve_all(e, s) for e, s in nodes))
        seconds = time.perf_counter() - start
    finally:
        for engine, share in nodes:
            await engine.aclose()
            if share is not None:
                await share.link.aclose()
    if found != [len(names)] * NODES:
        raise RuntimeError(f"policies found per node: {found}, expected {len(names)} each")
    return seconds


async def bench(args: argparse.Namespace, conn: Connection, world: Any) -> None:
    names = [f"d{i}.bench.example" for i in range(args.domains)]
    best: dict[str, tuple[float, int, float, float]] = {}
    async with RedisServer() as redis:
        from redis.asyncio import Redis

        flusher = Redis.from_url(redis.url)
        for _ in range(args.rounds):
            for way, url in (("separate", None), ("shared", redis.url)):
                await flusher.flushall()
                conn.send("clear")
                conn.recv()
                conn.send("cpu")
                cpu, world_cpu = time.process_time(), float(conn.recv())
                seconds = await one_run(world, url, names, args.concurrency)
                cpu = time.process_time() - cpu
                conn.send("cpu")
                world_cpu = float(conn.recv()) - world_cpu
                conn.send("fetches")
                fetches = int(conn.recv())
                if way not in best or seconds < best[way][0]:
                    best[way] = (seconds, fetches, cpu, world_cpu)
        await flusher.aclose()
    cold = NODES * len(names)
    print(
        f"{NODES} nodes x {len(names)} domains = {cold} cold resolutions, concurrency "
        f"{args.concurrency} per node, {args.loop}, best of {args.rounds} rounds"
    )
    print("CPU ms per resolution: the three nodes together, and the world's servers")
    head = f"{'caches':10} {'seconds':>8} {'resolutions/s':>14} {'policy fetches':>15}"
    print(f"{head} {'nodes CPU':>10} {'world CPU':>10}")
    for way in ("separate", "shared"):
        seconds, fetches, cpu, world_cpu = best[way]
        print(
            f"{way:10} {seconds:8.3f} {cold / seconds:14.1f} {fetches:15d} "
            f"{1000 * cpu / cold:10.3f} {1000 * world_cpu / cold:10.3f}"
        )
    ratio = best["separate"][0] / best["shared"][0]
    print(f"shared / separate rate: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    if redis_server_path() is None:
        print(REDIS_MISSING, file=sys.stderr)
        return 2
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_world_process, args=(args.domains, child), daemon=True)
    proc.start()
    try:
        world = parent.recv()
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            runner.run(bench(args, parent, world))
    finally:
        parent.send("stop")
        proc.join(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
