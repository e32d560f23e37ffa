"""``sts-harness matrix``: scenarios x engines, as Markdown and HTML.

Every engine runs the same scenario files: ``inprocess`` and ``sts-engine`` (our
gateway as a process, rootless) through the ordinary runner, every profile of
``fixtures/engines/`` (real MTAs) in a network namespace of its own
(:func:`harness.run.batch.child.run_engine`, batched). A cell is ``pass``,
``FAIL`` with the first mismatch, ``error``, or ``skip`` with the reason (an engine
that cannot run here at all -- not root, no ``nft``, binaries missing -- is one
reason for its whole column).

The Markdown is written between ``<!-- matrix:begin -->`` and ``<!-- matrix:end -->``
when the output file already has those markers, so the hand-written explanation of
each divergence around them stays (docs/conformance.md).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import html
import json
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.adapters.blackbox.fit import PARTIAL
from harness.adapters.blackbox.profile import load_profile, profile_names
from harness.report.html import html_report
from harness.report.json import report_dict
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import run_scenario
from harness.scenario.loader import discover, load_scenario

__all__ = [
    "DEFAULT_PATHS",
    "cell",
    "part",
    "register",
    "render_details",
    "render_html",
    "render_markdown",
    "run_matrix",
]

DEFAULT_PATHS = (Path("tests/blackbox/scenarios"),)
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"
_EXAMPLE = """example:
  sts-harness matrix
  sts-harness matrix --engines sts-engine,postfix-sts --out docs/conformance.md --html m.html
  sts-harness matrix scenarios/mx scenarios/cert --engines inprocess,postfix-sts,chasquid

exit status: 0 the matrix was written (divergences are results, not errors), 2 usage error
"""

Matrix = dict[str, list[ScenarioResult]]
#: Our engine's columns (run without a namespace), with their matrix titles.
_OURS = {
    "inprocess": "our engine as a library on a manual clock (reference)",
    "sts-engine": "our gateway as a process: `sts-engine serve` on its default loop (uvloop), "
    "the wall clock (a manual one via its control socket for scenarios that move time), "
    "fed over SMTP, judged on its JSON events and printed mail_logs lines; no namespace, "
    "no root",
}


def register(subparsers: Any) -> None:
    """Add the ``matrix`` command."""
    p = subparsers.add_parser(
        "matrix",
        help="run scenarios against every engine and write the conformance matrix",
        description="Run scenario files (default: tests/blackbox/scenarios) against the "
        "in-process engine and every black-box profile (fixtures/engines), each in a network "
        "namespace, and write scenario x engine as Markdown and HTML.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", type=Path, default=list(DEFAULT_PATHS), metavar="PATH")
    p.add_argument(
        "--engines",
        help="comma-separated (default: inprocess, sts-engine and every profile)",
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="write the Markdown matrix here")
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write an HTML matrix here, and beside it FILE-details.html: every failure and "
        "error with its steps, timeline and the engine's log lines",
    )
    p.add_argument(
        "--json", type=Path, metavar="FILE", help="write every result here, per engine, as JSON"
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    # A TERM must unwind like ^C, so namespaces are deleted and MTAs stopped.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    ours = list(_OURS)
    engines = args.engines.split(",") if args.engines else [*ours, *profile_names()]
    known = {*ours, *profile_names()}
    unknown = [e for e in engines if e not in known]
    if unknown:
        print(f"sts-harness matrix: unknown engines {unknown}; known: {sorted(known)}")
        return 2
    paths = discover(args.paths)
    if not paths:
        print(f"sts-harness matrix: no scenario files under {[str(p) for p in args.paths]}")
        return 2
    began = time.monotonic()
    matrix = run_matrix(engines, paths, progress=functools.partial(print, flush=True))
    md = render_markdown(matrix, paths, seconds=time.monotonic() - began)
    if args.out:
        _write_between_markers(args.out, md)
    else:
        print(md)
    if args.html:
        details = args.html.with_name(f"{args.html.stem}-details.html")
        args.html.write_text(render_html(matrix, paths, details=details.name), encoding="utf-8")
        details.write_text(render_details(matrix), encoding="utf-8")
    if args.json:
        data = {e: report_dict(rs) for e, rs in matrix.items()}
        args.json.write_text(
            json.dumps(data, indent=1, default=str, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_matrix(engines: Sequence[str], paths: Sequence[Path], progress: Any = None) -> Matrix:
    """Run every file against every engine; results per engine, in file order."""
    from harness.run.batch.child import run_engine

    out: Matrix = {}
    for engine in engines:
        t0 = time.monotonic()
        if engine in _OURS:
            out[engine] = [run_scenario(load_scenario(p), engine) for p in paths]
        else:
            try:
                out[engine] = run_engine(engine, paths)
            except RuntimeError as exc:  # the child died or hung: this column only
                out[engine] = [_errored(p, engine, str(exc)) for p in paths]
        if progress is not None:
            counts = {v: sum(r.verdict is v for r in out[engine]) for v in ScenarioVerdict}
            shown = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
            progress(f"{engine}: {shown} ({time.monotonic() - t0:.1f} s)")
    return out


def _errored(path: Path, engine: str, why: str) -> ScenarioResult:
    s = load_scenario(path)
    return ScenarioResult(
        id=s.id,
        title=s.title,
        path=str(s.path),
        topic=s.topic,
        covers=s.covers,
        engine=engine,
        verdict=ScenarioVerdict.ERROR,
        reason=why,
        description=s.description,
    )


def _first_mismatch(r: ScenarioResult) -> str:
    for step in r.steps:
        for m in step.mismatches:
            return f"step {step.index} {m.key}: expected {m.expected}, seen {m.seen}"
    for m in r.final:
        return f"{m.key}: expected {m.expected}, seen {m.seen}"
    return ""


def part(r: ScenarioResult) -> str:
    """``step 0, 1, 2, 4 of 5`` when only some of the file's steps ran on the engine
    (:func:`harness.adapters.blackbox.fit.fit`), else ""."""
    m = re.match(rf"{re.escape(PARTIAL)}ran (step [\d, ]+ of \d+)", r.reason)
    return m.group(1) if m else ""


def cell(r: ScenarioResult) -> tuple[str, str]:
    """(short cell text, detail) for one result."""
    if r.verdict is ScenarioVerdict.PASSED:
        return "pass", r.reason
    if r.verdict is ScenarioVerdict.SKIPPED:
        return "skip", r.reason
    if r.verdict is ScenarioVerdict.FAILED:
        return "FAIL", _first_mismatch(r)
    last = [ln for ln in r.reason.strip().splitlines() if ln.strip()]
    return "error", last[-1] if last else ""


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(matrix: Matrix, paths: Sequence[Path], seconds: float = 0.0) -> str:
    """The matrix table, then one line per failure, error and skip reason."""
    engines = list(matrix)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [
        f"Generated by `sts-harness matrix` on {today} over {len(paths)} scenario files "
        f"in {seconds:.0f} s. Cells: pass, FAIL (first mismatch below), error, skip (reason "
        "below); `(step 0, 1 of 5)`: only those steps ran, the others need what the "
        "profile's configuration does not have.",
        "",
        "| scenario | covers | " + " | ".join(f"`{e}`" for e in engines) + " |",
        "| --- | --- | " + " | ".join("---" for _ in engines) + " |",
    ]
    notes: list[str] = []
    for i in range(len(paths)):
        first = matrix[engines[0]][i]
        row = [f"`{first.id}`", ", ".join(c for c in first.covers if not c.startswith("seed:"))]
        for e in engines:
            r = matrix[e][i]
            short, detail = cell(r)
            if short in ("FAIL", "error"):
                notes.append(f"- `{r.id}` on `{e}`: {short}: {_md_escape(detail)}")
                short = f"**{short}**"
            elif short == "skip" and detail:
                short = f"skip ({_md_escape(detail)})"
            if part(r):
                short += f" ({part(r)})"
            row.append(short)
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += ["", "Mismatches:", "", *notes]
    titles = []
    for e in engines:
        if e in _OURS:
            titles.append(f"- `{e}`: {_OURS[e]}")
        else:
            titles.append(f"- `{e}`: {load_profile(e).title}")
    return "\n".join([*lines, "", "Engines:", "", *titles, ""])


def render_details(matrix: Matrix) -> str:
    """Every FAIL and error of every engine as the run report draws it (steps, sequence
    diagram, and the log lines: for a real MTA, all of them, parsed or not)."""
    bad = [
        replace(r, id=f"{r.id} on {e}")
        for e, results in matrix.items()
        for r in results
        if r.verdict in (ScenarioVerdict.FAILED, ScenarioVerdict.ERROR)
    ]
    return html_report(bad, title="Conformance matrix: failures and errors")


def render_html(matrix: Matrix, paths: Sequence[Path], details: str = "") -> str:
    """A self-contained HTML page of the matrix; details in each cell's tooltip, and
    every failure in full on the page named ``details`` (linked when given)."""
    engines = list(matrix)
    colour = {"pass": "#c8f7c5", "FAIL": "#f7c5c5", "error": "#f7a8a8", "skip": "#eeeeee"}
    head = "".join(f"<th>{html.escape(e)}</th>" for e in engines)
    rows = []
    for i in range(len(paths)):
        first = matrix[engines[0]][i]
        tds = [
            f"<td><code>{html.escape(first.id)}</code></td>",
            f"<td>{html.escape(', '.join(first.covers))}</td>",
        ]
        for e in engines:
            r = matrix[e][i]
            short, detail = cell(r)
            label = f"{short} ({part(r)})" if part(r) else short
            tds.append(
                f'<td style="background:{colour[short]}" title="{html.escape(detail)}">'
                f"{html.escape(label)}<br><small>{html.escape(detail[:160])}</small></td>"
            )
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (
        "<!doctype html><meta charset=utf-8><title>Conformance matrix</title>"
        "<style>body{font:14px sans-serif}td,th{border:1px solid #aaa;padding:4px;"
        "vertical-align:top}table{border-collapse:collapse}</style>"
        "<h1>Conformance matrix</h1>"
        + (
            f'<p><a href="{html.escape(details)}">Every failure and error</a></p>'
            if details
            else ""
        )
        + f"<table><tr><th>scenario</th><th>covers</th>{head}</tr>"
        + "".join(rows)
        + "</table>"
    )


def _write_between_markers(path: Path, md: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        path.write_text(f"{before}{BEGIN}\n{md}\n{END}{after}", encoding="utf-8")
    else:
        path.write_text(f"# Conformance matrix\n\n{BEGIN}\n{md}\n{END}\n", encoding="utf-8")
