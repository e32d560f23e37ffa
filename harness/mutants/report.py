"""The mutation score as a terminal table, JSON, and the Markdown section of the docs.

The Markdown goes between ``<!-- mutants:begin -->`` and ``<!-- mutants:end -->`` of
``docs/conformance.md`` (:func:`write_doc`), so the rest of that file, which other
commands regenerate, is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.mutants.model import Mutant, MutantError
from harness.mutants.runner import KILL_THRESHOLD, CatalogRun, MutantResult

__all__ = [
    "BEGIN",
    "END",
    "from_json",
    "render_markdown",
    "render_table",
    "score",
    "to_json",
    "write_doc",
]

BEGIN, END = "<!-- mutants:begin -->", "<!-- mutants:end -->"
_STYLE = {"killed": "green", "survived": "red", "error": "red"}
_SHOWN = 4  # scenario names shown per mutant; the count says how many there are


def score(results: Sequence[MutantResult]) -> tuple[int, int]:
    """(killed, total)."""
    return sum(r.status == "killed" for r in results), len(results)


def _caught(result: MutantResult, limit: int | None = _SHOWN) -> str:
    if result.status == "error":
        return result.detail
    names = list(result.caught_by)
    shown = names if limit is None else names[:limit]
    more = f" +{len(names) - len(shown)}" if len(names) > len(shown) else ""
    return f"{len(names)}: {', '.join(shown)}{more}" if names else "0"


def render_table(results: Sequence[MutantResult], console: Console) -> None:
    """Print one row per mutant and the score."""
    table = Table(title="Mutants")
    for column in ("mutant", "requirement", "scenarios that caught it", "killed?"):
        table.add_column(column, overflow="fold")
    for r in results:
        style = _STYLE[r.status]
        verdict = {"killed": "yes", "survived": "NO", "error": "ERROR"}[r.status]
        table.add_row(
            r.mutant.id,
            ", ".join(r.mutant.requirements),
            _caught(r),
            f"[{style}]{verdict}[/{style}]",
        )
    console.print(table)
    killed, total = score(results)
    pct = 100 * killed / total if total else 0.0
    console.print(f"mutation score: {killed}/{total} killed ({pct:.0f} %)")


def to_json(
    baseline: CatalogRun, results: Sequence[MutantResult], *, wall_seconds: float = 0.0
) -> str:
    """Everything measured, as JSON (the baseline and each mutant's catching scenarios)."""
    killed, total = score(results)
    return json.dumps(
        {
            "kill_threshold": KILL_THRESHOLD,
            "score": {"killed": killed, "total": total},
            "wall_seconds": round(wall_seconds),
            "baseline": {
                "seconds": round(baseline.seconds, 1),
                "scenarios": len(baseline.verdicts),
                "not_passing": sorted(k for k, v in baseline.verdicts.items() if v != "passed"),
            },
            "mutants": [
                {
                    "id": r.mutant.id,
                    "requirements": list(r.mutant.requirements),
                    "mirrors": r.mutant.mirrors,
                    "status": r.status,
                    "caught_by": list(r.caught_by),
                    "detail": r.detail,
                    "seconds": round(r.seconds, 1),
                }
                for r in results
            ],
        },
        indent=2,
    )


def from_json(text: str, mutants: Sequence[Mutant]) -> tuple[list[MutantResult], float, int]:
    """Results saved by :func:`to_json`, with titles and references from ``mutants``.

    Returns:
        The results in the saved order, the saved wall time in seconds, and the number
        of scenarios in the catalog that ran.

    Raises:
        MutantError: the JSON is malformed, or names a mutant ``mutants`` does not have.
    """
    by_id = {m.id: m for m in mutants}
    try:
        data = json.loads(text)
        rows = [
            (r["id"], r["status"], r["caught_by"], r["detail"], r["seconds"])
            for r in data["mutants"]
        ]
        wall = float(data.get("wall_seconds", 0.0))
        scenarios = int(data["baseline"]["scenarios"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MutantError(f"not a saved mutants result: {exc!r}") from None
    results = []
    for ident, status, caught, detail, seconds in rows:
        if ident not in by_id:
            raise MutantError(f"saved result names mutant {ident!r}, which the list no longer has")
        results.append(MutantResult(by_id[ident], status, tuple(caught), detail, seconds))
    return results, wall, scenarios


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[MutantResult], *, wall_seconds: float, scenarios: int) -> str:
    """The "Mutation score" section: how to rerun, the score, one row per mutant."""
    killed, total = score(results)
    lines = [
        "## Mutation score",
        "",
        "How much the catalog catches: each mutant below is a small change to the engine's",
        "decisions, modelled where possible on a bug a real sender had (the mirrors",
        "column). `tox -e mutants` applies each",
        "one alone to a scratch copy of the tree, runs the whole catalog there in process",
        "with the fast paths off (`STS_ENGINE_NO_FAST_PATHS=1`: no C policy reader, no fast",
        "parser, no DNS or TXT memo), and counts the scenarios that fail and passed",
        f"unmutated. A mutant is killed when at least {KILL_THRESHOLD} scenarios catch it. The",
        "definitions are data, in `harness/mutants/mutants.toml`; `tests/mutants/` checks that",
        "each still applies to the tree; `python -m harness.mutants --doc docs/conformance.md`",
        "rewrites this section (`--render FILE` does so from a saved `--json` result).",
        "",
        f"**Score: {killed}/{total} killed**, against a catalog of {scenarios} scenarios "
        f"(one run of every mutant, {wall_seconds / 60:.0f} min wall time on 2 cores; "
        "this section is generated from that run).",
        "",
        "| mutant | what the broken sender does | requirements | mirrors | caught by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        mark = "" if r.status == "killed" else f" **{r.status.upper()}**"
        lines.append(
            f"| `{r.mutant.id}`{mark} | {_cell(r.mutant.title)} | "
            f"{', '.join(r.mutant.requirements)} | {_cell(r.mutant.mirrors) or '—'} | "
            f"{_cell(_caught(r, limit=3))} |"
        )
    return "\n".join(lines)


def write_doc(path: Path, markdown: str) -> None:
    """Put ``markdown`` between the markers of ``path`` (appended with them if absent).

    Raises:
        MutantError: ``path`` cannot be read or written.
    """
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            text = f"{before}{BEGIN}\n{markdown}\n{END}{after}"
        else:
            text = f"{text.rstrip()}\n\n{BEGIN}\n{markdown}\n{END}\n".lstrip()
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MutantError(f"{path}: {exc.strerror}") from None
