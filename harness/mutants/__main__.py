"""``python -m harness.mutants``: run every mutant, print the table and the score.

Exit status: 0 every mutant ran and the score reaches ``--min-score``; 1 a mutant did
not apply or its run broke, or the score is below ``--min-score``; 2 usage error; 130
stopped by Ctrl-C or SIGTERM (the catalog run is ended and the scratch copy removed).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness.mutants.model import MUTANTS_FILE, MutantError, load_mutants, mutated_files
from harness.mutants.report import (
    from_json,
    render_markdown,
    render_table,
    score,
    to_json,
    write_doc,
)
from harness.mutants.runner import MutantResult, make_scratch, run_catalog, run_mutant

_REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.mutants",
        description="Apply each mutant alone to a scratch copy of the tree, run the catalog "
        "there (fast paths off) and report which scenarios caught it.",
    )
    p.add_argument("--mutants", type=Path, default=MUTANTS_FILE, metavar="FILE")
    p.add_argument("--only", action="append", default=[], metavar="ID", help="run only these")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--check", action="store_true", help="check every mutant applies; no run")
    p.add_argument("--rev", metavar="REV", help="mutate this git revision, not the work tree")
    p.add_argument("--repo", type=Path, default=_REPO, help="repository root")
    p.add_argument("-j", "--jobs", type=int, default=2, metavar="N")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="per catalog run")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    p.add_argument("--doc", type=Path, metavar="FILE", help="write the Markdown section here")
    p.add_argument("--min-score", type=float, default=0.0, metavar="PCT")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: print (and with --doc write) a result saved by --json, with the "
        "titles and references of the current mutant list",
    )
    p.add_argument("paths", nargs="*", default=["scenarios"], metavar="PATH")
    return p


def _stop(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: the catalog run is ended and the scratch copy removed.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mutants; see the module docstring for the exit status."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return _main(args)
    except KeyboardInterrupt as exc:
        print(f"stopped ({exc or 'interrupt'}); the scratch copy was removed", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    console = Console()
    try:
        mutants = load_mutants(args.mutants)
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            raise MutantError(f"{args.mutants}: --only: no mutant {unknown[0]!r}")
        if args.only:
            mutants = [m for m in mutants if m.id in args.only]
        if args.list:
            for m in mutants:
                console.print(f"{m.id}  [{', '.join(m.requirements)}]  {m.title}")
            return 0
        if args.render:
            saved, saved_wall, count = from_json(args.render.read_text(encoding="utf-8"), mutants)
            render_table(saved, console)
            if args.doc:
                write_doc(
                    args.doc, render_markdown(saved, wall_seconds=saved_wall, scenarios=count)
                )
            return 0
        if args.check:
            for m in mutants:
                mutated_files(m, args.repo)
            console.print(f"{len(mutants)} mutants apply to {args.repo}")
            return 0
        started = time.monotonic()
        tree = make_scratch(args.repo, args.rev)
    except (MutantError, OSError) as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    results: list[MutantResult] = []
    try:
        console.print(f"scratch copy: {tree}; baseline run ...")
        baseline = run_catalog(tree, paths=args.paths, jobs=args.jobs, timeout=args.timeout)
        if baseline.error:
            console.print(f"error: the unmutated catalog did not run: {baseline.error}")
            return 1
        failing = sorted(k for k, v in baseline.verdicts.items() if v != "passed")
        console.print(
            f"baseline: {len(baseline.verdicts)} scenarios in {baseline.seconds:.1f} s"
            + (f"; not passing (ignored): {', '.join(failing)}" if failing else "")
        )
        for n, mutant in enumerate(mutants, 1):
            result = run_mutant(
                mutant, tree, baseline, paths=args.paths, jobs=args.jobs, timeout=args.timeout
            )
            results.append(result)
            console.print(
                f"[{n}/{len(mutants)}] {mutant.id}: {result.status} "
                f"({len(result.caught_by)} scenarios, {result.seconds:.1f} s)"
                + (f" {result.detail}" if result.detail else ""),
                markup=False,
            )
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    wall = time.monotonic() - started
    render_table(results, console)
    console.print(f"wall time: {wall:.0f} s")
    try:
        if args.json:
            args.json.write_text(
                to_json(baseline, results, wall_seconds=wall) + "\n", encoding="utf-8"
            )
        if args.doc:
            write_doc(
                args.doc,
                render_markdown(results, wall_seconds=wall, scenarios=len(baseline.verdicts)),
            )
    except (OSError, MutantError) as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    killed, total = score(results)
    errors = [r for r in results if r.status == "error"]
    if errors or (total and 100 * killed / total < args.min_score):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
