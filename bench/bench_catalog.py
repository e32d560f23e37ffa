"""Benchmark: the scenario catalog under pytest-xdist, in process and against the process.

Runs ``pytest scenarios -n N --engine E`` for each worker count N and each engine E,
reads per-scenario durations from a JUnit XML report, and prints wall time, median and
p95 per scenario. With ``--engine sts-engine`` it runs the in-process engine
(``inprocess``) and ``sts-engine serve`` as a process (``sts-engine``) back to back
with the same workers, and prints the ratio of their wall times. It prints, never
asserts: wall times depend on the machine.

    python bench/bench_catalog.py [--engine sts-engine] [--workers 1 2] [--rounds 1] [PATH ...]
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
BASELINE = "inprocess"


def _plugin_args() -> list[str]:
    import harness.pytest_plugin

    wired = hasattr(harness.pytest_plugin, "pytest_collect_file")
    return [] if wired else ["-p", "harness.run.collect"]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else 0.0


def run_once(paths: list[str], workers: int, engine: str) -> tuple[float, list[float], str]:
    """One pytest run: (wall seconds, per-scenario seconds, pytest's last line)."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", *_plugin_args(), "-q", "-p", "no:cacheprovider",
                "-n", str(workers), "--engine", engine, f"--junitxml={junit}", *paths]  # fmt: skip
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
    parser.add_argument(
        "--engine",
        default=BASELINE,
        help=f"also run this engine and compare it with {BASELINE!r} (e.g. sts-engine)",
    )
    args = parser.parse_args(argv)
    engines = [BASELINE] if args.engine == BASELINE else [BASELINE, args.engine]
    head = ("engine", "workers", "round", "wall s", "items", "median s", "p95 s")
    print("{:>12} {:>7} {:>5} {:>8} {:>5} {:>9} {:>7}  result".format(*head))
    walls: dict[tuple[str, int], list[float]] = {}
    for n in args.workers:
        for r in range(args.rounds):
            for engine in engines:  # interleaved: both see the same machine load
                wall, times, tail = run_once(args.paths, n, engine)
                walls.setdefault((engine, n), []).append(wall)
                med = statistics.median(times) if times else 0.0
                print(
                    f"{engine:>12} {n:>7} {r:>5} {wall:>8.2f} {len(times):>5} {med:>9.3f} "
                    f"{_p95(times):>7.3f}  {tail}"
                )
    for engine in engines:
        counts = sorted({n for e, n in walls if e == engine})
        if len(counts) > 1:
            base = counts[0]
            for n in counts[1:]:
                ratio = min(walls[engine, base]) / min(walls[engine, n])
                print(f"{engine}: speed-up with {n} workers vs {base}: {ratio:.2f}x")
    if len(engines) > 1:
        for n in args.workers:
            ours, base = min(walls[args.engine, n]), min(walls[BASELINE, n])
            print(
                f"{args.engine} vs {BASELINE} with {n} worker(s): {ours:.2f} s / {base:.2f} s "
                f"= {ours / base:.2f}x (best of {args.rounds})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
