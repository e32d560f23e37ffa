"""Gateway throughput: SMTP injection to acceptance by the receiving MTA, and peak memory.

1,000 messages are injected over SMTP (10 client connections in parallel) into an
in-process gateway, which delivers them to an MTA-STS ``enforce`` domain over
verified TLS in a simulated world on loopback. Prints messages/second and the
process's peak memory (ru_maxrss; with --tracemalloc also the peak of Python
allocations, in a run whose throughput figure is then not meaningful).
Asserts nothing (DESIGN.md §5).

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
from engine.core.events import ListSink
from engine.gateway.gateway import Gateway, GatewaySettings
from engine.io.smtp import SmtpTimeouts
from tests.gateway.sim import SimWorld

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


async def run(messages: int, clients: int, trace: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    async with SimWorld(tmp) as sim:
        config = tmp / "gateway.toml"
        config.write_text(sim.config_text(tmp / "queue.sqlite"))
        sink = _CountingSink()
        gw = Gateway(
            load_config(config),
            clock=sim.clock,
            sink=sink,
            dialer=sim.dialer(),
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
            accept = sim.mx1.message_delivered

            def accepted(message: Any) -> None:
                accept(message)
                if len(sim.mx1.messages) >= messages:
                    all_accepted.set()

            sim.mx1.message_delivered = accepted  # type: ignore[method-assign]
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
    tls = {m.tls_version for m in sim.mx1.messages}
    print(f"messages delivered        {len(sim.mx1.messages)} (TLS: {sorted(tls)})")
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
