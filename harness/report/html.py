"""The HTML report: one self-contained file (inline CSS, JS and SVG; nothing fetched).

Failures come first (failed, then error, skipped, passed; catalog order within each),
so a red run opens on what broke. Each scenario is a collapsible section: verdict,
title, file, covers; what did not hold; its world and sender configuration (as TOML);
its steps with their expectations; the sequence diagram
(:mod:`harness.report.sequence`); and the mail_logs lines. A passing scenario is its
one-line summary only, unless ``full`` is asked for (``sts-harness run --html-full``):
for the 310 passing scenarios of the catalog that is 14.7 MB against 111 KB. A bar at
the top filters by verdict. Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from harness.report.sequence import sequence_svg
from harness.report.tomltext import toml_text
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.scenario.explain import describe_expect

__all__ = ["html_report", "write_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1a202c;background:#fff}
header{position:sticky;top:0;background:#1a202c;color:#fff;padding:10px 18px;z-index:2}
header h1{font-size:18px;margin:0 0 4px}
.bar button{margin-right:6px;border:0;border-radius:3px;padding:3px 9px;cursor:pointer}
main{padding:8px 18px}
section.sc{border:1px solid #cbd5e0;border-radius:5px;margin:10px 0}
section.sc>summary{padding:7px 10px;cursor:pointer;font-weight:600;list-style:none}
.badge{display:inline-block;min-width:60px;text-align:center;border-radius:3px;
  padding:1px 6px;margin-right:8px;color:#fff;font-size:12px;text-transform:uppercase}
.passed{background:#2f855a}.failed{background:#c53030}.error{background:#9c4221}
.skipped{background:#718096}
.meta{color:#4a5568;font-weight:400;font-size:12px;margin-left:8px}
.inner{padding:4px 14px 12px}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:8px;overflow:auto;font-size:12px;
  margin:2px 0}
table{border-collapse:collapse;width:100%;font-size:13px;table-layout:fixed}
table pre{white-space:pre-wrap;overflow-wrap:anywhere}
col.n{width:34px}col.s{width:24%}
.out{color:#4a5568;font-size:12px}
td,th{border:1px solid #e2e8f0;padding:4px 6px;vertical-align:top;text-align:left}
.bad{color:#c53030}.ok{color:#2f855a}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.diagram{overflow:auto;border:1px solid #e2e8f0;max-height:900px}
h3{font-size:14px;margin:14px 0 4px}
"""
_JS = """
function show(v){document.querySelectorAll('section.sc').forEach(function(s){
 s.style.display=(v==='all'||s.dataset.verdict===v)?'':'none';});}
document.querySelectorAll('.bar button').forEach(function(b){
 b.addEventListener('click',function(){show(b.dataset.show);});});
"""


def _toml(table: Mapping[str, Any]) -> str:
    try:
        return toml_text(table) if table else "(empty)"
    except (TypeError, ValueError):
        return repr(table)


def _steps(r: ScenarioResult) -> str:
    rows = [
        '<colgroup><col class="n"><col class="s"><col><col></colgroup>'
        "<tr><th>#</th><th>step</th><th>expectations</th><th>result</th></tr>"
    ]
    for s in r.steps:
        if s.observation.error:
            result = f'<pre class="bad">{escape(s.observation.error)}</pre>'
        elif s.mismatches:
            text = "\n\n".join(m.render() for m in s.mismatches)
            result = f'<pre class="bad">{escape(text)}</pre>'
        else:
            result = '<span class="ok">ok</span>' if not s.expect.empty else ""
        outcomes = "".join(
            f'<div class="out">⇒ {escape(d.rcpt)}: {escape(d.status)} via {escape(str(d.mx))} '
            f"{escape(d.tls or 'clear')}/{escape(d.verified)}</div>"
            for d in s.observation.deliveries
        )
        expected = describe_expect(s.expect)
        shown = f"<pre>{escape(expected)}</pre>" if expected else ""
        rows.append(
            f"<tr><td>{s.index}</td><td>{escape(s.label)}{outcomes}</td>"
            f"<td>{shown}</td><td>{result}</td></tr>"
        )
    if not r.expect.empty:
        final = "\n\n".join(m.render() for m in r.final)
        verdict = (
            f'<pre class="bad">{escape(final)}</pre>' if final else '<span class="ok">ok</span>'
        )
        rows.append(
            f"<tr><td>end</td><td>[expect] over the whole run</td>"
            f"<td><pre>{escape(describe_expect(r.expect))}</pre></td><td>{verdict}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


# The order of the sections: what needs reading first.
_ORDER = {
    ScenarioVerdict.FAILED: 0,
    ScenarioVerdict.ERROR: 1,
    ScenarioVerdict.SKIPPED: 2,
    ScenarioVerdict.PASSED: 3,
}


def _section(r: ScenarioResult, full: bool) -> str:
    v = r.verdict.value
    head = (
        f'<summary><span class="badge {v}">{v}</span>{escape(r.id)}'
        f'<span class="meta">{escape(r.title)} · {escape(r.path)} · {r.seconds:.2f}s · '
        f"covers {escape(', '.join(r.covers) or '—')}</span></summary>"
    )
    parts: list[str] = []
    if r.verdict is ScenarioVerdict.PASSED and not full:
        return f'<section class="sc" data-verdict="{v}"><details>{head}</details></section>'
    if r.description:
        parts.append(f"<p>{escape(r.description)}</p>")
    if r.reason:
        parts.append(f"<h3>{'skipped' if r.verdict is ScenarioVerdict.SKIPPED else 'error'}</h3>")
        parts.append(f'<pre class="bad">{escape(r.reason)}</pre>')
    parts.append(
        '<div class="cols"><div><h3>world</h3><pre>' + escape(_toml(r.world)) + "</pre></div>"
        "<div><h3>sender</h3><pre>" + escape(_toml(r.sender)) + "</pre></div></div>"
    )
    parts.append("<h3>steps</h3>" + _steps(r))
    if r.verdict is not ScenarioVerdict.SKIPPED:
        parts.append('<h3>sequence</h3><div class="diagram">')
        parts.append(sequence_svg(r.observations) + "</div>")
        lines = "\n".join(e.line for o in r.observations for e in o.events if e.line)
        parts.append(f"<details><summary>mail_logs ({lines.count(chr(10)) + 1 if lines else 0} "
                     f"lines)</summary><pre>{escape(lines)}</pre></details>")  # fmt: skip
    opened = " open" if r.verdict in (ScenarioVerdict.FAILED, ScenarioVerdict.ERROR) else ""
    return (
        f'<section class="sc" data-verdict="{v}"><details{opened}>{head}'
        f'<div class="inner">{"".join(parts)}</div></details></section>'
    )


def html_report(
    results: Sequence[ScenarioResult], title: str = "sts-harness report", *, full: bool = False
) -> str:
    """The whole report as one HTML document, failures first.

    Args:
        results: the scenario results, in catalog order.
        title: the page's title.
        full: also the world, steps, diagram and logs of every passing scenario.
    """
    ordered = sorted(results, key=lambda r: _ORDER[r.verdict])  # stable: catalog order kept
    counts = {v: sum(r.verdict is v for r in results) for v in ScenarioVerdict}
    summary = " · ".join(f"{n} {v.value}" for v, n in counts.items() if n)
    buttons = ['<button data-show="all">all</button>'] + [
        f'<button class="{v.value}" data-show="{v.value}">{v.value} ({n})</button>'
        for v, n in counts.items()
        if n
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><div>{len(results)} scenarios: {summary}</div>"
        f'<div class="bar">{"".join(buttons)}</div></header><main>'
        + "".join(_section(r, full) for r in ordered)
        + f"</main><script>{_JS}</script></body></html>\n"
    )


def write_html(results: Sequence[ScenarioResult], path: str | Path, *, full: bool = False) -> None:
    """Write the HTML report to ``path`` (``full``: as :func:`html_report`)."""
    Path(path).write_text(html_report(results, full=full), encoding="utf-8")
