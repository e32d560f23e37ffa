"""World start-up and round-trip cost.

Run as ``python bench/bench_world.py [--runs N] [--profile]``. Prints the median and
p90 of:

* bringing up and tearing down a world of one domain (DNS, policy host, two MXs);
* the same for ten domains (DNS, ten policy hosts, twenty MXs);
* one round trip against the one-domain world: a TXT query with dnspython, a
  policy fetch with httpx, an SMTP session with STARTTLS (asyncio streams).

Each is measured after a warm-up, in one process, with one CertFactory, as a test
session would run. ``--profile`` prints the top of a cProfile of the one-domain
up+down. Benchmarks print; they never assert times (target: one-domain up+down
under 20 ms median).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.message
import httpx

from certs import CertFactory
from harness.world import World


def spec(domains: int) -> dict[str, Any]:
    """A world of ``domains`` W-STS-like domains."""
    out: dict[str, Any] = {"domains": {}}
    for i in range(domains):
        name = f"d{i}.example"
        out["domains"][name] = {
            "mx": [[10, f"mx1.{name}"], [20, f"mx2.{name}"]],
            "mta_sts_txt": ["v=STSv1; id=A1"],
            "policy": f"version: STSv1\nmode: enforce\nmx: mx1.{name}\nmax_age: 86400\n",
        }
    return out


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def round_trip(w: World, client: httpx.AsyncClient, tls: ssl.SSLContext) -> None:
    """TXT query, policy fetch, SMTP session with STARTTLS."""
    host, port = w.resolver
    q = dns.message.make_query("_mta-sts.d0.example", "TXT")
    await dns.asyncquery.udp(q, host, port=port, timeout=2.0)
    name = "mta-sts.d0.example"
    address, real = w.endpoint_map[(w.address_of(name), 443)]
    response = await client.get(
        f"https://{address}:{real}/.well-known/mta-sts.txt",
        headers={"Host": name},
        extensions={"sni_hostname": name},
    )
    assert response.status_code == 200
    mx = "mx1.d0.example"
    reader, writer = await asyncio.open_connection(*w.endpoint_map[(w.address_of(mx), 25)])
    await _reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await _reply(reader)
    writer.write(b"STARTTLS\r\n")
    await _reply(reader)
    await writer.start_tls(tls, server_hostname=mx)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


async def measure(runs: int, step: Callable[[], Awaitable[None]]) -> list[float]:
    """Times of ``runs`` calls of ``step`` after ``runs // 10 + 3`` warm-up calls, in ms."""
    for _ in range(runs // 10 + 3):
        await step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await step()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(label: str, times: list[float]) -> None:
    """Print median and p90 in ms."""
    p90 = statistics.quantiles(times, n=10)[-1]
    print(f"{label:<34} median {statistics.median(times):7.2f} ms   p90 {p90:7.2f} ms")


async def bench(runs: int, profile: bool) -> None:
    """Run every measurement and print it."""
    certs = CertFactory()
    one, ten = spec(1), spec(10)

    async def up_down(data: dict[str, Any]) -> None:
        async with World(data, certs=certs):
            pass

    report("world up+down, 1 domain (4 hosts)", await measure(runs, lambda: up_down(one)))
    report("world up+down, 10 domains (31 hosts)", await measure(runs, lambda: up_down(ten)))
    tls = certs.client_context()
    async with (
        World(one, certs=certs) as w,
        httpx.AsyncClient(verify=tls, timeout=5.0) as client,
    ):
        times = await measure(runs, lambda: round_trip(w, client, tls))
    report("round trip (TXT, HTTPS, SMTP+TLS)", times)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            await up_down(one)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    certs.close()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(bench(args.runs, args.profile))


if __name__ == "__main__":
    main()
