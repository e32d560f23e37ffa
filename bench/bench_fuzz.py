"""Benchmark: generated worlds per second, in process and against one black-box engine.

Draws the same kind of worlds for both (a fixed seed; for the real MTA with its
profile's fixed Destination Controls and without the faults that wait out its
timeouts, as ``sts-harness fuzz`` does), runs them through the runners of
``sts-harness fuzz`` (:func:`harness.fuzz.engines.runners`: one by one in process;
one namespace world per chunk for the real MTA) and prints worlds per second for
each and their ratio. Drawing is timed apart; shrinking is not part of it. It
prints, never asserts: rates depend on the machine. The black-box engine needs root
and the MTA installed (``scripts/install-blackbox.sh``); without them it says why and
prints the in-process figure only.

    python bench/bench_fuzz.py [--worlds 100] [--blackbox postfix-sts] [--inprocess inprocess]
"""

from __future__ import annotations

import argparse
import time

from harness.fuzz.campaign import draw_worlds
from harness.fuzz.engines import runners
from harness.run.batch.child import unavailable


def measure(engine: str, worlds: int, seed: int) -> tuple[float, float, int]:
    """(seconds drawing, seconds running, worlds run) for ``engine``."""
    batch, _, controls, waits = runners(engine)
    began = time.perf_counter()
    docs = draw_worlds(worlds, seed, controls, waits=waits)
    drawn = time.perf_counter()
    judged = batch(docs)
    ran = time.perf_counter()
    return drawn - began, ran - drawn, sum(1 for j in judged if not j.skipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=100, help="worlds per engine")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inprocess", default="inprocess", help="the in-process engine")
    parser.add_argument("--blackbox", default="postfix-sts", help="the black-box profile")
    args = parser.parse_args(argv)
    rates: dict[str, float] = {}
    for engine in (args.inprocess, args.blackbox):
        if engine == args.blackbox and (why := unavailable(engine)):
            print(f"{engine}: not run ({why})")
            continue
        draw_s, run_s, ran = measure(engine, args.worlds, args.seed)
        rates[engine] = ran / run_s if run_s > 0 else 0.0
        print(
            f"{engine:>16}: {ran} worlds run in {run_s:.1f} s = {rates[engine]:.2f} worlds/s "
            f"(drawing {args.worlds} took {draw_s:.1f} s)"
        )
    if len(rates) == 2 and rates[args.blackbox] > 0:
        ratio = rates[args.inprocess] / rates[args.blackbox]
        print(f"ratio: {args.inprocess} runs {ratio:.2f}x the worlds per second of {args.blackbox}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
