"""``sts-harness fuzz-parser``: differential fuzzing of another MTA-STS parser.

:mod:`harness.parserfuzz` is imported when the command runs, not when the CLI starts
(hypothesis and the strategies are not needed by the other commands); a missing
hypothesis is still a one-line error.

Generates policy bodies or TXT records (:mod:`harness.parserfuzz`), asks the target
and our strict reader (the oracle) about each, shrinks every distinct disagreement
and writes it to a corpus. The target is a Python callable or a command; the
conventions are in :mod:`harness.parserfuzz.adapters` and docs/parser-fuzzing.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from harness.commands import console as console_for
from harness.commands import positive, seed

__all__ = ["register"]

_EXAMPLE = """target conventions:
  --callable MODULE:FUNCTION  FUNCTION(input: bytes); a truthy return accepts, a falsy
                              return or any exception rejects
  --command "CMD ARGS"        the input on stdin, or in a file whose path replaces {};
                              --verdict exit: status 0 accepts, any other rejects;
                              --verdict json: a stdout line {"accept": true|false, ...}
                              (a signal, a timeout or no such line: no verdict)

example:
  sts-harness fuzz-parser --kind policy --inputs 3000 --seed 1 --corpus corpus/ \\
      --callable harness.parserfuzz.targets:checkdmarc_policy
  sts-harness fuzz-parser --kind txt --command "./check-record {}" --verdict exit

exit status: 0 no disagreement, 1 disagreements (written under --corpus), 2 usage error
"""


def register(subparsers: Any) -> None:
    """Add the ``fuzz-parser`` command."""
    p = subparsers.add_parser(
        "fuzz-parser",
        help="differential fuzzing of another MTA-STS policy or TXT parser",
        description="Generate MTA-STS policy bodies or TXT records (valid, one mutation "
        "away, and the ambiguous cases of docs/decisions.md), compare a target parser's "
        "verdict with this project's strict reader, shrink each distinct disagreement "
        "and write it with our rule id to a corpus.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--callable", metavar="MODULE:FUNCTION", help="a Python function")
    target.add_argument("--command", metavar="CMD", help="a command line ({} = input file)")
    p.add_argument(
        "--verdict",
        choices=("exit", "json"),
        help="how a --command gives its verdict (default: exit)",
    )
    p.add_argument("--kind", choices=("policy", "txt"), default="policy", help="default: policy")
    p.add_argument(
        "--inputs",
        type=positive(int, "--inputs"),
        default=1000,
        metavar="N",
        help="generated inputs to judge (default: 1000)",
    )
    p.add_argument("--seed", type=seed, default=0, metavar="S", help="hypothesis seed (default: 0)")
    p.add_argument(
        "--time-budget",
        type=positive(float, "--time-budget"),
        metavar="SECONDS",
        help="start no new input after this long",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="write each distinct disagreement and index.json here (default: not written)",
    )
    p.add_argument(
        "--max-findings",
        type=positive(int, "--max-findings"),
        default=25,
        metavar="N",
        help="distinct disagreements to shrink; later ones are only counted (default: 25)",
    )
    p.add_argument(
        "--shrink-time",
        type=positive(float, "--shrink-time"),
        default=30.0,
        metavar="SECONDS",
        help="time each disagreement may spend shrinking (default: 30)",
    )
    p.add_argument(
        "--timeout",
        type=positive(float, "--timeout"),
        default=10.0,
        metavar="SECONDS",
        help="per input, for a --command (default: 10)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_handle)


def _fail(message: str) -> int:
    print(f"sts-harness fuzz-parser: {message}", file=sys.stderr)
    return 2


def _handle(args: argparse.Namespace) -> int:
    if args.verdict is not None and args.command is None:
        return _fail("--verdict applies to --command only")
    if args.corpus is not None and args.corpus.exists() and not args.corpus.is_dir():
        return _fail(f"--corpus {args.corpus}: not a directory")
    try:
        import hypothesis  # noqa: F401  (the generator; not a dependency of the base install)
    except ImportError:
        return _fail("needs hypothesis: pip install -e '.[parsers]' (or pip install hypothesis)")
    from harness.parserfuzz import (
        CallableTarget,
        CommandTarget,
        FuzzOptions,
        Kind,
        TargetError,
        load_callable,
    )

    options = FuzzOptions(
        kind=Kind(args.kind),
        inputs=args.inputs,
        seed=args.seed,
        time_budget=args.time_budget,
        max_findings=args.max_findings,
        shrink_seconds=args.shrink_time,
    )
    try:
        with contextlib.ExitStack() as stack:
            if args.callable is not None:
                name = args.callable
                target: Any = CallableTarget(load_callable(name))
            else:
                try:
                    argv = shlex.split(args.command)
                except ValueError as exc:
                    return _fail(f"--command {args.command!r}: {exc}")
                name = args.command
                target = stack.enter_context(
                    CommandTarget(argv, verdict=args.verdict or "exit", timeout=args.timeout)
                )
            return _run(args, name, target, options)
    except TargetError as exc:
        return _fail(str(exc))


def _run(args: argparse.Namespace, name: str, target: Any, options: Any) -> int:
    from harness.parserfuzz import fuzz, write_corpus

    out = console_for(file=sys.stdout, width=140 if not sys.stdout.isatty() else None)
    err = console_for(file=sys.stderr)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=args.quiet,
    )  # fmt: skip
    with progress:
        task = progress.add_task(f"{options.kind.value} inputs", total=options.inputs)

        def advance(tally: Any) -> None:
            progress.update(
                task,
                completed=tally.inputs,
                description=f"{options.kind.value} inputs ({tally.disagreements} disagree)",
            )

        result = fuzz(target, options, clock=time.monotonic, on_input=advance)
    files: list[Path] = []
    if args.corpus is not None and result.findings:
        try:
            files = write_corpus(args.corpus, name, options, result)
        except OSError as exc:
            return _fail(f"--corpus {args.corpus}: {exc}")
    _print(out, name, options, result, files)
    return 1 if result.tally.disagreements else 0


def _print(out: Any, name: str, options: Any, result: Any, files: list[Path]) -> None:
    tally = result.tally
    t = Table(title=f"fuzz-parser {options.kind.value}: {name} (seed {options.seed})")
    for col in ("class", "rule", "inputs"):
        t.add_column(col, overflow="fold")
    t.add_row("inputs", "", str(tally.inputs))
    t.add_row("agreements", "", str(tally.agreements))
    for direction, n in sorted(tally.by_direction.items()):
        t.add_row(direction.value, "", f"[red]{n}[/]")
        for (d, rule), m in sorted(tally.by_rule.items()):
            if d is direction:
                t.add_row("", rule, str(m))
    t.add_row("disagreement rate", "", f"{tally.rate:.1%}")
    out.print(t)
    if result.findings:
        f = Table(title="distinct disagreements (shrunk)")
        for col in ("#", "class", "rule", "reason", "input", "file"):
            f.add_column(col, overflow="fold")
        for n, finding in enumerate(result.findings, 1):
            d = finding.disagreement
            rule = d.ours.rule + (" (both defensible)" if d.defensible else "")
            shown = repr(d.data if len(d.data) <= 60 else d.data[:57] + b"...")
            path = str(files[n - 1]) if files else "-"
            cells = (str(n), d.direction.name.lower(), rule, d.ours.reason, shown, path)
            f.add_row(*(Text(c) for c in cells))  # inputs are data, never rich markup
        out.print(f)
    out.print(
        f"{tally.inputs} inputs in {result.elapsed:.1f} s (stopped: {result.stopped}); "
        f"{tally.disagreements} disagreements ({tally.rate:.1%}), "
        f"{len(result.findings)} distinct",
        markup=False,
        highlight=False,
    )
