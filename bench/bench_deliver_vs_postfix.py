"""Delivery throughput, our gateway vs Postfix + postfix-mta-sts-resolver, same world.

The issue's ``bench_deliver.py --vs postfix``, as its own file (bench_deliver.py
measures the gateway in process). One network namespace, one world: an MTA-STS
``enforce`` domain (W-STS: mx1 and mx2 with valid certificates, the policy lists
both) on the standard ports. Each engine runs as a separate process under the
black-box adapter -- ``sts-engine serve`` and Postfix 3.7 with the resolver's
socketmap -- and gets the same N messages over SMTP (``--clients`` connections in
parallel, one recipient each). The clock runs from the first submission until the
world's MXs have accepted all N (the world counts; the MTAs' logs only wake us).
Prints messages per second for each and the ratio. Asserts nothing (README, Benchmarks:
benchmarks print figures and never assert times).

Both engines use their default connection handling (Postfix caches SMTP sessions on
demand, as shipped). The world, the submitting client and the engine share the
machine's cores, equally for both.

    .venv/bin/python bench/bench_deliver_vs_postfix.py [--messages 1000] [--clients 10]

Needs root, ``ip netns``, ``nft``, Postfix and postfix-mta-sts-resolver
(scripts/install-blackbox.sh); re-executes itself inside a fresh namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.adapters.blackbox.adapter import SUBMIT_PORT, BlackBoxEngine
from harness.netns import Namespace, current_namespace, sweep_stale
from harness.run.batch.child import unavailable
from harness.world.world import World

DOMAIN = "example.com"
WORLD = {
    "domains": {
        DOMAIN: {
            "mx": ["10 mx1.example.com", "20 mx2.example.com"],
            "mta_sts_txt": ["v=STSv1; id=B1"],
            "policy": "version: STSv1\nmode: enforce\nmx: mx1.example.com\n"
            "mx: mx2.example.com\nmax_age: 86400\n",
        }
    }
}
SENDER = {"destination_controls": {DOMAIN: {"tls": "preferred", "mta_sts": True}}}
BODY = (
    b"From: a@sender.example\r\nTo: b@example.com\r\nSubject: bench\r\n\r\n"
    + (b"x" * 70 + b"\r\n") * 28
)  # a ~2 KB body, as bench_deliver.py


async def _submit(n: int, first: int) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=SUBMIT_PORT, timeout=30) as smtp:
        for i in range(first, first + n):
            await smtp.sendmail("a@sender.example", [f"rcpt{i}@{DOMAIN}"], BODY)


async def _one(engine: str, world: World, messages: int, clients: int) -> float:
    adapter = BlackBoxEngine(engine)
    before = len(world.messages())
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as tmp:
        await adapter.start(world, SENDER, Path(tmp))
        try:
            # One message first: the policy is fetched and cached before timing starts.
            await _submit(1, 0)
            await adapter.wait_until(lambda: len(world.messages()) >= before + 1, 30)
            start = time.perf_counter()
            per = [messages // clients + (c < messages % clients) for c in range(clients)]
            firsts = [1 + sum(per[:c]) for c in range(clients)]
            await asyncio.gather(*(_submit(n, f) for n, f in zip(per, firsts, strict=True)))
            target = before + 1 + messages
            await adapter.wait_until(lambda: len(world.messages()) >= target, 600)
            return time.perf_counter() - start
        finally:
            await adapter.stop()


async def _inside(messages: int, clients: int) -> None:
    async with World(WORLD) as world:
        rates = {}
        for engine in ("sts-engine", "postfix-sts"):
            seconds = await _one(engine, world, messages, clients)
            rates[engine] = messages / seconds
            print(
                f"{engine:12} {messages} messages in {seconds:6.2f} s: {rates[engine]:8.1f} msg/s",
                flush=True,
            )
        ratio = rates["sts-engine"] / rates["postfix-sts"]
        print(f"ratio sts-engine / postfix-sts: {ratio:.2f}x", flush=True)


def main() -> int:
    """Re-execute inside a namespace, or run the bench when already inside one."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--clients", type=int, default=10)
    args = p.parse_args()
    if current_namespace() is not None:
        asyncio.run(_inside(args.messages, args.clients))
        return 0
    for engine in ("sts-engine", "postfix-sts"):
        reason = unavailable(engine)
        if reason:
            print(f"bench_deliver_vs_postfix: {engine} cannot run here: {reason}")
            return 0
    sweep_stale()
    with Namespace() as ns:
        argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
        return subprocess.run(ns.argv(argv), env=ns.env(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
