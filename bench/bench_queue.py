"""Queue scaling: a gateway's rates, start-up and memory with a long queue waiting.

For each backlog (by default 0, 10,000 and 100,000 messages waiting for a retry an
hour away, ~2 KB each, over 100 domains), a queue file is filled, ``sts-engine serve``
is started as its own process against a simulated world on loopback (one MTA-STS
``enforce`` domain, one MX, verified TLS), and the bench prints:

* start to listening: from the spawn of the process to its ``listening`` line;
* injection: messages/second for 1,000 messages sent over SMTP by 10 clients in parallel,
  until the last ``250``;
* injection to acceptance: the same messages until the MX has accepted the last one;
* peak RSS of the gateway process (``VmHWM``), in MiB.

``--runs N`` repeats every backlog N times (alternating, so a busy moment of the machine
does not fall on one backlog only) and prints each figure's median and range, and both
rates' medians as a share of the first backlog's. Asserts nothing:
benchmarks print figures (README, Sizing).

    .venv/bin/python bench/bench_queue.py [--backlog 0 10000 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.gateway.queue import Queue
from harness.world.world import World

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 604800\n"
MX = "mx1.example.com"
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
)  # a ~2 KB body, as bench_deliver.py
_READY = re.compile(rb"sts-engine listening on (\S+) port (\d+)")


@dataclass(frozen=True, slots=True)
class Run:
    """One gateway run's figures."""

    backlog: int
    listening: float  # seconds from spawn to the listening line
    injection: float  # msg/s
    acceptance: float  # msg/s, injection to acceptance
    peak_rss: float  # MiB


def fill(path: Path, backlog: int, now: float) -> None:
    """``backlog`` messages waiting for a retry an hour from ``now``, in one transaction."""
    Queue(path).close()  # the schema, as the gateway makes it
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO message (mid, mail_from, data, received_at) VALUES (?, ?, ?, ?)",
            ((m, "a@sender.example", BODY, now - 60) for m in range(1, backlog + 1)),
        )
        db.executemany(
            "INSERT INTO recipient (mid, rid, rcpt, domain, state, attempts, first_attempt_at,"
            " next_attempt_at, last_error) VALUES (?, 0, ?, ?, 'queued', 1, ?, ?, ?)",
            (
                (m, f"r{m}@wait{m % 100}.example", f"wait{m % 100}.example", now - 60,
                 now + 3600, "451 4.3.0 try again later")
                for m in range(1, backlog + 1)
            ),
        )  # fmt: skip
        db.execute("UPDATE counter SET value = ? WHERE name = 'mid'", (backlog,))
    db.close()


def _config(world: World, work: Path) -> Path:
    host, port = world.resolver
    rows = [[a, p, ra, rp] for (a, p), (ra, rp) in world.endpoint_map.items()]
    (work / "endpoints.json").write_text(json.dumps({"endpoints": rows, "loopback_only": True}))
    path = work / "gateway.toml"
    path.write_text(
        f'[dns]\nresolvers = ["{host}:{port}"]\ntimeout = 2.0\n'
        f'[tls]\nca_file = "{world.ca_file}"\n'
        f'[queue]\npath = "{work / "queue.sqlite"}"\n'
        '[listener]\nhost = "127.0.0.1"\nport = 0\n'
        '[destination_controls.default]\ntls = "preferred"\n'
        '[destination_controls."example.com"]\ntls = "required-verify-hosted"\nmta_sts = true\n'
    )
    return path


def _peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one_run(world: World, backlog: int, messages: int, clients: int) -> Run:
    """Fill a queue, start the gateway, inject, wait for the MX, measure, stop it."""
    mx = world.mta(MX)
    mx.clear()
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        work = Path(tmp)
        fill(work / "queue.sqlite", backlog, time.time())
        config = _config(world, work)
        t_spawn = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "serve", "--config", str(config),
            "--endpoints", str(work / "endpoints.json"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        port = 0
        while line := await proc.stdout.readline():
            if m := _READY.search(line):
                port = int(m.group(2))
                break
        t_listening = time.perf_counter() - t_spawn
        if not port:
            raise SystemExit(f"the gateway exited before listening ({await proc.wait()})")

        async def drain() -> None:
            assert proc.stdout is not None
            while await proc.stdout.readline():
                pass

        draining = asyncio.create_task(drain())
        all_accepted = asyncio.Event()
        accept = mx.message_delivered

        def accepted(message: Any) -> None:
            accept(message)
            if len(mx.messages) >= messages:
                all_accepted.set()

        mx.message_delivered = accepted  # type: ignore[method-assign]

        async def client(n: int) -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as c:
                for _ in range(n):
                    await c.sendmail("a@sender.example", ["b@example.com"], BODY)

        t0 = time.perf_counter()
        share = [messages // clients + (i < messages % clients) for i in range(clients)]
        await asyncio.gather(*(client(n) for n in share))
        t_injected = time.perf_counter()
        await asyncio.wait_for(all_accepted.wait(), 300)
        t_done = time.perf_counter()
        mx.message_delivered = accept  # type: ignore[method-assign]
        rss = _peak_rss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        await draining
    return Run(
        backlog,
        t_listening,
        messages / (t_injected - t0),
        messages / (t_done - t0),
        rss,
    )


def _range(values: list[float], fmt: str) -> str:
    """``median (min-max)``, or the one value."""
    lo, hi = min(values), max(values)
    if lo == hi:
        return format(lo, fmt)
    return f"{statistics.median(values):{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


async def main_async(backlogs: list[int], runs: int, messages: int, clients: int) -> None:
    results: list[Run] = []
    async with World(WORLD) as world:
        for n in range(runs):
            for backlog in backlogs:
                run = await one_run(world, backlog, messages, clients)
                results.append(run)
                print(
                    f"run {n + 1} backlog {backlog:>7,}: listening {run.listening:.2f} s, "
                    f"injection {run.injection:.0f} msg/s, to acceptance "
                    f"{run.acceptance:.0f} msg/s, peak RSS {run.peak_rss:.0f} MiB",
                    flush=True,
                )
    print()
    print(f"{messages} messages, {clients} clients, {runs} run(s) per backlog: median (range)")
    base = [r for r in results if r.backlog == backlogs[0]]
    for backlog in backlogs:
        rows = [r for r in results if r.backlog == backlog]
        print(
            f"backlog {backlog:>7,}: listening {_range([r.listening for r in rows], '.2f')} s, "
            f"injection {_range([r.injection for r in rows], '.0f')} msg/s, to acceptance "
            f"{_range([r.acceptance for r in rows], '.0f')} msg/s, peak RSS "
            f"{_range([r.peak_rss for r in rows], '.0f')} MiB"
        )
    inj0 = statistics.median(r.injection for r in base)
    acc0 = statistics.median(r.acceptance for r in base)
    for backlog in backlogs[1:]:
        rows = [r for r in results if r.backlog == backlog]
        inj = statistics.median(r.injection for r in rows) / inj0
        acc = statistics.median(r.acceptance for r in rows) / acc0
        print(
            f"backlog {backlog:,} against {backlogs[0]:,} (medians): injection {100 * inj:.0f} %,"
            f" to acceptance {100 * acc:.0f} %"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, nargs="+", default=[0, 10_000, 100_000])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(args.backlog, args.runs, args.messages, args.clients))


if __name__ == "__main__":
    main()
