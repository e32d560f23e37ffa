"""``sts-harness list | show | coverage``: browse the catalog and what it covers."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.commands import console
from harness.coverage import DEFAULT_REQUIREMENTS, coverage_of, engine_reach, load_requirements
from harness.coverage_docs import DOCS, ROOT, render_block, write_docs
from harness.errors import HarnessError
from harness.report.tomltext import toml_text
from harness.scenario.explain import describe_expect
from harness.scenario.loader import load_all, load_scenario
from harness.scenario.model import Scenario, StepKind

__all__ = ["describe", "did_you_mean", "register", "scenario_names"]

_LIST = """example:
  sts-harness list
  sts-harness list scenarios/examples --topic examples
"""
_SHOW = """example:
  sts-harness show sts-enforce-mx1-bad
  sts-harness show scenarios/examples/dane-ee-delivery.toml
"""
_COVERAGE = """example:
  sts-harness coverage
  sts-harness coverage --min 80 --uncovered
  sts-harness coverage --markdown decisions   # the table at the end of docs/decisions.md
  sts-harness coverage --write-docs           # refresh the tables of docs/*.md

exit status: 0 at or above --min, 1 below it, 2 usage error
"""


def _parser(subparsers: Any, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=help, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    return p


def register(subparsers: Any) -> None:
    """Add ``list``, ``show`` and ``coverage``."""
    p = _parser(subparsers, "list", "list the scenarios of the catalog", _LIST)
    p.add_argument("paths", nargs="*", type=Path, default=[Path("scenarios")], metavar="PATH")
    p.add_argument("--topic", help="only this topic")
    p.set_defaults(handler=_list, command_name="list")
    p = _parser(subparsers, "show", "show one scenario: world, steps, expectations", _SHOW)
    p.add_argument("scenario", help="a scenario id or file")
    p.add_argument("--root", type=Path, default=Path("scenarios"), help="where ids are looked up")
    p.set_defaults(handler=_show, command_name="show")
    p = _parser(subparsers, "coverage", "map requirement IDs and seed tags to scenarios", _COVERAGE)
    p.add_argument("paths", nargs="*", type=Path, default=[Path("scenarios")], metavar="PATH")
    p.add_argument("--min", type=float, default=0.0, metavar="PCT", help="fail below PCT %%")
    p.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS, metavar="FILE")
    p.add_argument("--uncovered", action="store_true", help="list every uncovered item")
    p.add_argument("--markdown", choices=sorted(DOCS), help="print one docs/ coverage table")
    p.add_argument("--write-docs", action="store_true", help="rewrite the docs/ coverage tables")
    p.set_defaults(handler=_coverage, command_name="coverage")


def _console() -> Console:
    return console(file=sys.stdout, width=None if sys.stdout.isatty() else 140)


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            status: int = fn(args)
            return status
        except HarnessError as exc:
            print(f"sts-harness {args.command_name}: {exc}", file=sys.stderr)
            return 2

    return run


@_guard
def _list(args: argparse.Namespace) -> int:
    scenarios = [s for s in load_all(args.paths) if args.topic in (None, s.topic)]
    table = Table(title=f"{len(scenarios)} scenarios")
    for col in ("id", "topic", "title", "covers", "steps"):
        table.add_column(col, overflow="fold")
    for s in scenarios:
        table.add_row(s.id, s.topic, s.title, " ".join(s.covers), str(len(s.steps)))
    _console().print(table)
    return 0


def describe(s: Scenario) -> str:
    """A readable account of a scenario: meta, world, sender, steps and expectations."""
    out = [f"{s.id}: {s.title}", f"  file:     {s.path}", f"  topic:    {s.topic}"]
    out.append(f"  covers:   {', '.join(s.covers) or '—'}")
    out.append(f"  requires: {', '.join(sorted(s.requires)) or '—'}")
    if s.description:
        out += ["", *("  " + line for line in s.description.splitlines())]
    out += ["", "world:", _indent(toml_text(s.world_table) or "(empty)")]
    out += ["sender:", _indent(toml_text(s.sender) if s.sender else "(defaults)")]
    out.append("steps:")
    for step in s.steps:
        out.append(f"  {step.index}. {step.label}")
        if step.kind is StepKind.SEND and step.args.data:
            out.append(f"     data: {len(step.args.data)} bytes")
        if not step.expect.empty:
            out.append("     expect:")
            out.append(_indent(describe_expect(step.expect), 7))
    if not s.expect.empty:
        out += ["expect (whole run):", _indent(describe_expect(s.expect))]
    return "\n".join(out)


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.rstrip().splitlines())


@_guard
def _show(args: argparse.Namespace) -> int:
    target = Path(args.scenario)
    if target.suffix == ".toml" and target.exists():
        scenario = load_scenario(target)
    else:
        found = [s for s in load_all([args.root]) if s.id == args.scenario]
        if not found:
            print(
                f"sts-harness show: no scenario {args.scenario!r} under {args.root}"
                + did_you_mean(args.scenario, args.root),
                file=sys.stderr,
            )
            return 2
        scenario = found[0]
    print(describe(scenario))
    return 0


def scenario_names(root: Path) -> dict[str, Path]:
    """Every scenario id under ``root`` and its file, read leniently (``[scenario] id``,
    else the file name): suggestions must come even when some file of the catalog is
    broken."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.toml")) if root.is_dir() else []:
        sid = path.stem
        with contextlib.suppress(OSError, ValueError):
            meta = tomllib.loads(path.read_text(encoding="utf-8")).get("scenario", {})
            if isinstance(meta, dict) and isinstance(meta.get("id"), str):
                sid = meta["id"]
        names.setdefault(sid, path)
    return names


def did_you_mean(name: str, root: Path) -> str:
    """``"; did you mean: a, b?"`` for the scenario ids (and files) close to ``name``."""
    names = scenario_names(root)
    stem = Path(name).stem if name.endswith(".toml") else name
    close = difflib.get_close_matches(stem, list(names), n=3, cutoff=0.6)
    if not close:
        return ""
    shown = [str(names[c]) if name.endswith(".toml") else c for c in close]
    return f"; did you mean: {', '.join(shown)}?"


@_guard
def _coverage(args: argparse.Namespace) -> int:
    scenarios = load_all(args.paths)
    cov = coverage_of(scenarios, load_requirements(args.requirements))
    if args.markdown:
        print(render_block(cov, scenarios, args.markdown))
        return 0
    if args.write_docs:
        if [p.resolve() for p in args.paths] != [ROOT / "scenarios"]:
            raise HarnessError(
                f"--write-docs describes the whole catalog: give no PATH, run in {ROOT}"
            )
        for path in write_docs(cov, scenarios):
            print(f"rewrote the coverage table of {path}")
        return 0
    table = Table(title=f"requirement coverage: {cov.percent:.1f}%")
    for col in ("group", "counted", "covered", "uncovered (level)"):
        table.add_column(col, overflow="fold")
    groups: dict[str, list[Any]] = {}
    for r in cov.counted:
        groups.setdefault(r.group, []).append(r)
    for group, reqs in groups.items():
        missing = [r for r in reqs if not cov.covered_by.get(r.id)]
        shown = " ".join(
            r.id + ("" if r.group in ("seed", "AMB") else f"({r.level})") for r in missing[:12]
        )
        shown += f" … +{len(missing) - 12}" if len(missing) > 12 else ""
        table.add_row(group, str(len(reqs)), str(len(reqs) - len(missing)), shown)
    console = _console()
    console.print(table)
    if args.uncovered:
        for r in cov.uncovered:
            console.print(f"  {r.id:<38} {r.level:<6} §{r.section:<7} {r.title}", markup=False)
    for tag, ids in cov.unknown.items():
        print(
            f"warning: {tag!r} (in {', '.join(ids)}) is not in {args.requirements}", file=sys.stderr
        )
    counted, uncovered = len(cov.counted), len(cov.uncovered)
    console.print(f"{counted - uncovered}/{counted} counted items covered ({cov.percent:.1f}%)")
    reach = engine_reach(scenarios)
    runs = reach.total - len(reach.skipped)
    console.print(
        f"as a process (sts-engine): {runs}/{reach.total} scenarios run ({reach.percent:.1f}%)"
        + (", skipped:" if reach.skipped else "")
    )
    for sid, reason in reach.skipped.items():
        console.print(f"  {sid:<38} {reason}", markup=False)
    if cov.percent < args.min:
        console.print(f"below --min {args.min:g}%")
        return 1
    return 0
