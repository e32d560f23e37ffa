"""Gateway throughput: SMTP injection to acceptance by the receiving MTA, and peak memory.

1,000 messages are injected over SMTP (10 client connections in parallel) into an
in-process gateway, which delivers them to an MTA-STS ``enforce`` domain over
verified TLS in a simulated world on loopback. Prints messages/second and the
process's peak memory (ru_maxrss; with --tracemalloc also the peak of Python
allocations, in a run whose throughput figure is then not meaningful).
Asserts nothing: benchmarks print figures (README, Benchmarks).

    .venv/bin/python bench/bench_deliver.py [--messages N] [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import load_config
from engine.core.clock import ManualClock
from engine.core.events import ListSink
from engine.gateway.gateway import Gateway, GatewaySettings
from engine.io.dialer import Dialer
from engine.io.smtp import SmtpTimeouts
from harness.world.world import World

START = 1_767_225_600.0 + 3600.0  # 2026-01-01T01:00:00Z
POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 604800\n"
MX = "mx1.example.com"
#: One MTA-STS ``enforce`` domain with one MX (certificates from the world's root).
WORLD = {
    "domains": {
        "example.com": {
            "mx": [f"10 {MX}"],
            "mta_sts_txt": ["v=STSv1; id=20260101"],
            "policy": POLICY,
        }
    },
    "hosts": {MX: {"cert": "valid"}},
}

BODY = (
    b"From: a@sender.example\r\nTo: b@example.com\r\nSubject: bench\r\n\r\n"
    + (b"x" * 70 + b"\r\n") * 28
)  # a ~2 KB body


class _CountingSink(ListSink):
    """Keeps no events (memory), only counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, event: object) -> None:
        self.count += 1


def _config(world: World, queue: Path) -> str:
    host, port = world.resolver
    return (
        f'[dns]\nresolvers = ["{host}:{port}"]\ntimeout = 2.0\n'
        f'[tls]\nca_file = "{world.ca_file}"\n'
        f'[queue]\npath = "{queue}"\n'
        '[listener]\nhost = "127.0.0.1"\nport = 0\n'
        '[destination_controls.default]\ntls = "preferred"\n'
        '[destination_controls."example.com"]\ntls = "required-verify-hosted"\nmta_sts = true\n'
    )


async def run(messages: int, clients: int, trace: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    clock = ManualClock(START)
    async with World(WORLD, now=clock.now) as world:
        config = tmp / "gateway.toml"
        config.write_text(_config(world, tmp / "queue.sqlite"))
        sink = _CountingSink()
        gw = Gateway(
            load_config(config),
            clock=clock,
            sink=sink,
            dialer=Dialer(endpoint_map=world.endpoint_map, loopback_only=True),
            smtp_timeouts=SmtpTimeouts.uniform(10.0),
            settings=GatewaySettings(report=None),
        )
        if trace:  # tracemalloc slows Python several-fold: off for the throughput figure
            tracemalloc.start()
        async with gw:
            stop = asyncio.Event()
            serving = asyncio.create_task(gw.serve(stop))
            assert gw.listener is not None
            host, port = gw.listener.address

            async def client(n: int) -> None:
                async with aiosmtplib.SMTP(hostname=host, port=port, timeout=30) as c:
                    for _ in range(n):
                        await c.sendmail("a@sender.example", ["b@example.com"], BODY)

            # Readiness: the receiving MTA signals when the last message is accepted.
            all_accepted = asyncio.Event()
            mx = world.mta(MX)
            accept = mx.message_delivered

            def accepted(message: Any) -> None:
                accept(message)
                if len(mx.messages) >= messages:
                    all_accepted.set()

            mx.message_delivered = accepted  # type: ignore[method-assign]
            t0 = time.perf_counter()
            share = [messages // clients + (i < messages % clients) for i in range(clients)]
            await asyncio.gather(*(client(n) for n in share))
            t_injected = time.perf_counter()
            await all_accepted.wait()
            t_done = time.perf_counter()
            stop.set()
            gw.notify()
            await serving
        _, peak = tracemalloc.get_traced_memory() if trace else (0, 0)
        tracemalloc.stop()
    tls = {m.tls_version for m in mx.messages}
    print(f"messages delivered        {len(mx.messages)} (TLS: {sorted(tls)})")
    print(f"injection only            {messages / (t_injected - t0):8.1f} msg/s")
    print(
        f"injection -> acceptance   {messages / (t_done - t0):8.1f} msg/s "
        f"({t_done - t0:.2f} s total)"
    )
    if trace:
        print(f"tracemalloc peak          {peak / 2**20:8.1f} MiB (Python allocations)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"ru_maxrss                 {rss / 1024:8.1f} "
        "MiB (whole process: gateway + simulated world)"
    )
    print(f"events emitted            {sink.count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python memory")
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.clients, args.tracemalloc))


if __name__ == "__main__":
    main()
