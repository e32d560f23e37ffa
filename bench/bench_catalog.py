"""Benchmark: the scenario catalog under pytest-xdist with 1 and 2 workers.

Runs ``pytest scenarios -n N`` for each N, reads per-scenario durations from a JUnit
XML report, and prints wall time, median and p95 per scenario. It prints, never
asserts: wall times depend on the machine.

    python bench/bench_catalog.py [--workers 1 2] [--rounds 1] [PATH ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _plugin_args() -> list[str]:
    import harness.pytest_plugin

    wired = hasattr(harness.pytest_plugin, "pytest_collect_file")
    return [] if wired else ["-p", "harness.scenario.collect"]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else 0.0


def run_once(paths: list[str], workers: int) -> tuple[float, list[float], str]:
    """One pytest run: (wall seconds, per-scenario seconds, pytest's last line)."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", *_plugin_args(), "-q", "-p", "no:cacheprovider",
                "-n", str(workers), f"--junitxml={junit}", *paths]  # fmt: skip
        began = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - began
        times = []
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                times.append(float(case.get("time", "0")))
        tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        return wall, times, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["scenarios"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    head = ("workers", "round", "wall s", "items", "median s", "p95 s")
    print("{:>7} {:>5} {:>8} {:>5} {:>9} {:>7}  result".format(*head))
    walls: dict[int, list[float]] = {}
    for n in args.workers:
        for r in range(args.rounds):
            wall, times, tail = run_once(args.paths, n)
            walls.setdefault(n, []).append(wall)
            med = statistics.median(times) if times else 0.0
            p95 = _p95(times)
            print(f"{n:>7} {r:>5} {wall:>8.2f} {len(times):>5} {med:>9.3f} {p95:>7.3f}  {tail}")
    if len(walls) > 1:
        base = min(walls)
        for n, values in walls.items():
            if n == base:
                continue
            ratio = min(walls[base]) / min(values)
            print(f"speed-up with {n} workers vs {base}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
