"""``sts-harness fuzz``: world fuzzing against any engine, findings as scenario files.

Draws worlds with hypothesis (:mod:`harness.fuzz.strategies`), runs them against the
engine (in this process, or for a real MTA many per namespace world:
:mod:`harness.fuzz.blackbox`), judges each by the invariants of
:mod:`harness.fuzz.invariants`, shrinks the first world that broke each invariant
and writes it as a scenario file that ``sts-harness run --engine NAME FILE`` fails
on (:mod:`harness.fuzz.campaign`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.adapters.base import AdapterError
from harness.adapters.registry import ADAPTERS
from harness.commands import console as console_for
from harness.commands import positive, seed
from harness.fuzz.campaign import Summary, run_campaign
from harness.fuzz.engines import runners
from harness.fuzz.invariants import INVARIANTS
from harness.fuzz.known import label

__all__ = ["register"]

_EXAMPLE = """example:
  sts-harness fuzz --engine inprocess --worlds 500 --seed 7 --findings findings/
  sts-harness fuzz --engine postfix-sts --worlds 2000 --time-budget 1800   (root)

exit status: 0 no invariant broken, 1 a finding (written under --findings), 2 usage error
"""


def register(subparsers: Any) -> None:
    """Add the ``fuzz`` command."""
    p = subparsers.add_parser(
        "fuzz",
        help="draw random worlds and check the invariants against an engine",
        description="World fuzzing: draw worlds with hypothesis, run each against the "
        "engine, check the invariants (no downgrade, no unpermitted MX, nothing lost, "
        "every failure explained, a healthy MX reached), shrink what breaks one and "
        "write it as a scenario file.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--engine",
        default="inprocess",
        help="inprocess, inprocess-uvloop, sts-engine, or a black-box profile",
    )
    p.add_argument(
        "--worlds",
        type=positive(int, "--worlds"),
        default=200,
        metavar="N",
        help="worlds to draw (default: 200)",
    )
    p.add_argument("--seed", type=seed, default=0, metavar="S", help="hypothesis seed")
    p.add_argument(
        "--time-budget",
        type=positive(float, "--time-budget"),
        metavar="SECONDS",
        help="stop drawing new worlds after this long (shrinking comes after)",
    )
    p.add_argument(
        "--findings",
        type=Path,
        metavar="DIR",
        help="write each finding's scenario file here (default: not written)",
    )
    p.add_argument(
        "--chunk",
        type=positive(int, "--chunk"),
        metavar="N",
        help="worlds per batch (default: 25 in process, 150 for a real MTA)",
    )
    p.add_argument(
        "--shrink-time",
        type=positive(float, "--shrink-time"),
        default=60.0,
        metavar="SECONDS",
        help="time each finding may spend shrinking (default: 60)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_handle)


def _table(s: Summary) -> Table:
    t = Table(title=f"fuzz {s.engine}: seed {s.seed}")
    for col in ("invariant", "worlds", "unlabelled", "first finding", "file"):
        t.add_column(col, overflow="fold")
    for name in INVARIANTS:
        n = s.violations.get(name, 0)
        f = next((f for f in s.findings if f.invariant == name), None)
        if f is None:
            t.add_row(name, "[green]0[/]", "", "", "")
            continue
        what = f.label or f"[red]new[/]: {f.violations[0].detail}"
        small = "shrunk" if f.shrunk else "not shrunk"
        other = s.unlabelled.get(name, 0)
        t.add_row(name, f"[red]{n}[/]", str(other), what, f"{f.path or '-'} ({small})")
    return t


def _handle(args: argparse.Namespace) -> int:
    out = console_for(file=sys.stdout, width=140 if not sys.stdout.isatty() else None)
    err = console_for(file=sys.stderr)
    if args.findings is not None and args.findings.exists() and not args.findings.is_dir():
        print(f"sts-harness fuzz: --findings {args.findings}: not a directory", file=sys.stderr)
        return 2
    try:
        batch, one, controls, waits = runners(args.engine)
    except AdapterError as exc:
        names = ", ".join(sorted({*ADAPTERS, "inprocess-uvloop"}))
        print(f"sts-harness fuzz: {exc} (engines: {names})", file=sys.stderr)
        return 2
    chunk = args.chunk or (25 if controls is None else 150)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=args.quiet,
    )  # fmt: skip
    with progress:
        task = progress.add_task("worlds", total=args.worlds)

        def advance(done: int, total: int, bad: int) -> None:
            progress.update(task, completed=done, total=total, description=f"worlds ({bad} bad)")

        summary = run_campaign(
            args.engine,
            batch,
            one,
            worlds=args.worlds,
            at_seed=args.seed,
            budget=args.time_budget,
            chunk=chunk,
            findings=args.findings,
            controls=controls,
            waits=waits,
            label=label,
            shrink_seconds=args.shrink_time,
            progress=advance,
        )
    out.print(_table(summary))
    for reason, n in sorted(summary.skip_reasons.items(), key=lambda kv: -kv[1]):
        out.print(f"skipped {n}: {reason}", markup=False, highlight=False)
    new = [f for f in summary.findings if not f.label]
    unlabelled = sum(summary.unlabelled.values())
    out.print(
        f"{summary.run} worlds run ({summary.skipped} skipped, {summary.drawn} drawn) in "
        f"{summary.seconds:.1f} s: {summary.rate:.2f} worlds/s; "
        f"{sum(summary.violations.values())} violations, {len(summary.findings)} distinct "
        f"findings ({len(new)} new); {unlabelled} violations no known divergence explains",
        markup=False,
        highlight=False,
    )
    return 1 if summary.findings else 0
