"""``sts-harness run``: run scenario files, show progress and a summary, write reports.

``-j N`` runs whole scenarios in N worker processes (a
:class:`~concurrent.futures.ProcessPoolExecutor`; each worker loads and runs one
file at a time, results come back as plain data). Without it, scenarios run one
after another in this process. Under pytest, parallelism is pytest-xdist's instead.

``--engine`` takes an adapter (``inprocess``, ``gateway``, ``sts-engine`` -- our
gateway as a process --, a black-box profile) or ``inprocess-uvloop`` (the
in-process engine and the world on uvloop, :data:`harness.run.single.DEFAULT_WAYS`).
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.adapters.base import AdapterError
from harness.adapters.blackbox.profile import profile_names
from harness.adapters.registry import ADAPTERS, make_adapter
from harness.commands import console as console_for
from harness.commands.catalog import did_you_mean, scenario_names
from harness.errors import HarnessError
from harness.report import write_html, write_json, write_junit
from harness.run.batch.child import run_engine
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import run_file, run_scenario, way
from harness.scenario.explain import explain
from harness.scenario.loader import discover, load_all

__all__ = ["register", "run_paths"]

_EXAMPLE = """example:
  sts-harness run scenarios/examples
  sts-harness run scenarios -j 4 --junit junit.xml --json report.json --html report.html
  sts-harness run --engine sts-engine -j 2      (the gateway as a process: sts-engine serve)

exit status: 0 every scenario passed (or was skipped), 1 a scenario failed, 2 usage error
"""
_STYLE = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}


def register(subparsers: Any) -> None:
    """Add the ``run`` command."""
    p = subparsers.add_parser(
        "run",
        help="run scenario files against an engine",
        description="Run scenario files (default: scenarios/) against an engine, print a "
        "summary and optionally write JUnit XML, JSON and HTML reports.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", type=Path, default=[Path("scenarios")], metavar="PATH")
    p.add_argument(
        "--engine",
        default="inprocess",
        help="engine adapter, or inprocess-uvloop (default: inprocess)",
    )
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="worker processes")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument(
        "--html-full",
        action="store_true",
        help="in the HTML report, also the world, steps and diagram of every passing scenario",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only the failures and the counts"
    )
    p.set_defaults(handler=_handle)


def run_paths(
    paths: list[Path], engine: str, jobs: int, console: Console | None = None
) -> list[ScenarioResult]:
    """Run every scenario under ``paths`` (checked first); results in file order.

    Raises:
        SpecError: a scenario file is wrong (nothing has run then).
        AdapterError: no such engine.
    """
    scenarios = load_all(paths)
    if engine in profile_names():
        # A real MTA: the world runs in a network namespace of its own, with compatible
        # scenarios batched into shared worlds (harness.run.batch.child).
        return run_engine(engine, [s.path for s in scenarios])
    engine, loop = way(engine)
    make_adapter(engine)  # fail fast on an unknown engine name
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console or console_for(stderr=True), transient=True,
        disable=console is None,
    )  # fmt: skip
    results: list[ScenarioResult] = []
    with progress:
        task = progress.add_task("scenarios", total=len(scenarios))
        if jobs > 1:
            files = [s.path for s in scenarios]
            # Ctrl-C reaches the whole process group: the workers ignore it and this
            # process cancels what has not started, stops them and says nothing more.
            pool = ProcessPoolExecutor(max_workers=jobs, initializer=_ignore_sigint)
            try:
                for result in pool.map(run_file, files, [engine] * len(files), [loop] * len(files)):
                    results.append(result)
                    progress.update(task, advance=1, description=result.id)
            except BaseException:
                _stop(pool)
                raise
            pool.shutdown()
        else:
            for s in scenarios:
                progress.update(task, description=s.id)
                results.append(run_scenario(s, engine, loop=loop))
                progress.update(task, advance=1)
    return results


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's queued work and end its workers now (they ignore SIGINT)."""
    workers = list(getattr(pool, "_processes", {}).values())  # no public accessor
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    for process in workers:
        process.join(timeout=5)


def _summary(results: list[ScenarioResult], title: str = "scenarios") -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("scenario", "topic", "verdict", "seconds", "first problem"):
        table.add_column(col, overflow="fold")
    for r in results:
        problems = [m.key for s in r.steps for m in s.mismatches] + [m.key for m in r.final]
        first = problems[0] if problems else (r.reason.strip().splitlines() or [""])[-1]
        style = _STYLE[r.verdict.value]
        table.add_row(r.id, r.topic, f"[{style}]{r.verdict.value}[/]", f"{r.seconds:.2f}", first)
    return table


def _resolve(paths: list[Path]) -> list[Path]:
    """Paths as given; a scenario id (``dane-ee-delivery``) stands for its file under
    ``scenarios/``.

    Raises:
        HarnessError: neither a path nor an id; the closest ids are suggested.
    """
    out: list[Path] = []
    for path in paths:
        if path.exists():
            out.append(path)
            continue
        names = scenario_names(Path("scenarios"))
        if str(path) in names:
            out.append(names[str(path)])
            continue
        raise HarnessError(
            f"{path}: no such file, directory or scenario id"
            + did_you_mean(str(path), Path("scenarios"))
        )
    return out


def _handle(args: argparse.Namespace) -> int:
    out = console_for(file=sys.stdout, width=140 if not sys.stdout.isatty() else None)
    err = console_for(file=sys.stderr)
    if args.jobs < 1:
        print(f"sts-harness run: -j must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        paths = _resolve(args.paths)
        discover(paths)
        results = run_paths(paths, args.engine, args.jobs, None if args.quiet else err)
    except AdapterError as exc:
        adapters = ", ".join(sorted(ADAPTERS))
        print(f"sts-harness run: {exc} (adapters: {adapters})", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"sts-harness run: {exc}", file=sys.stderr)  # one line: no rich wrapping
        return 2
    bad = [r for r in results if r.verdict in (ScenarioVerdict.FAILED, ScenarioVerdict.ERROR)]
    if args.quiet:
        if bad:  # -q: what failed, one row each, and the counts
            out.print(_summary(bad, title="failed"))
    else:
        for r in bad:
            out.print(explain(r), markup=False, highlight=False)
            out.print()
        out.print(_summary(results))
    counts = {v.value: sum(r.verdict is v for r in results) for v in ScenarioVerdict}
    out.print(", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no scenarios")
    for path, write in (
        (args.junit, write_junit),
        (args.json, write_json),
        (args.html, functools.partial(write_html, full=args.html_full)),
    ):
        if path is not None:
            write(results, path)
            out.print(f"wrote {path}")
    return 1 if bad else 0
