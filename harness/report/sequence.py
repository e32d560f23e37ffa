"""A sequence diagram (SVG) of one scenario run: engine, DNS, policy hosts, MTAs.

Theory of operation
-------------------
Lifelines, left to right: the engine, the DNS, each policy host, each MTA, then the
proxy and the report sink if they were used. Log lines sit in a gutter left of the
engine's lifeline. Time runs down; one row per item, in the order of the world's
clock, with a band at each step. An exchange is a solid request arrow at its start
and a dashed reply arrow at its end (SMTP sessions, drawn as a span on the MTA's
lifeline) or on the next row (DNS queries, policy fetches).
Long texts are cut, with the full text in a ``<title>`` (a hover tooltip).

The output is plain SVG 1.1 text with no external references, for inlining.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from harness.scenario.observation import StepObservation, TimelineEntry

__all__ = ["sequence_svg"]

_ROW, _TOP, _GUTTER, _LANE = 17, 44, 560, 190
_LOG_CHARS, _LABEL_CHARS = 82, 30
_COLOURS = {"dns": "#2b6cb0", "policy": "#2f855a", "smtp": "#b7791f", "proxy": "#6b46c1"}
_COLOURS["report"] = "#c53030"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _text(x: float, y: float, text: str, n: int, **attrs: str) -> str:
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{v}"' for k, v in attrs.items())
    short = escape(_cut(text, n))
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}><title>{escape(text)}</title>{short}</text>'


def _lane(kind: str, name: str) -> str:
    if kind == "dns":
        return "DNS"
    if kind == "proxy":
        return "proxy"
    if kind == "report":
        return "report sink"
    return name


def _split(kind: str, name: str, summary: str) -> tuple[str, str]:
    ask, _, answer = summary.partition(" -> ")
    if kind == "dns":
        return f"{ask} {name}", answer
    if kind == "smtp":
        tls, _, rest = ask.partition(", ")
        count, _, commands = rest.partition(", ")
        return f"SMTP {commands}", f"{tls}, {count} → {answer}"
    return ask, answer


def _rows(obs: StepObservation) -> list[tuple[float, int, TimelineEntry | str]]:
    """Requests at their start, replies at their end (SMTP) or right after, and log lines."""
    rows: list[tuple[float, int, TimelineEntry | str]] = []
    for x in obs.world.timeline:
        rows.append((x.at, 0, x))
        rows.append((x.end if x.end is not None else x.at + 1e-6, 1, x))
    rows += [(e.at, 0, e.line) for e in obs.events if e.line]
    rows.sort(key=lambda r: r[0])
    return rows


def sequence_svg(observations: Sequence[StepObservation]) -> str:
    """The diagram of a run (set-up first, then each step) as an SVG document string."""
    lanes: list[str] = ["engine", "DNS"]
    for obs in observations:
        for entry in obs.world.timeline:
            lane = _lane(entry.kind, entry.name)
            if lane not in lanes:
                lanes.append(lane)
    xs = {lane: _GUTTER + 40 + i * _LANE for i, lane in enumerate(lanes)}
    body: list[str] = []
    y = _TOP
    for obs in observations:
        rows = _rows(obs)
        if obs.index >= 0 or rows:
            head = "set-up" if obs.index < 0 else f"step {obs.index}: {obs.label}"
            body.append(f'<rect class="band" x="0" y="{y - 12}" width="100%" height="{_ROW}"/>')
            body.append(_text(6, y, head, 150, class_="step"))
            y += _ROW
        opened: dict[int, float] = {}
        for _at, part, item in rows:
            if isinstance(item, str):
                cls = "log warn" if " Warning: " in item else "log"
                body.append(_text(6, y, item.split(": ", 1)[-1], _LOG_CHARS, class_=cls))
                body.append(f'<circle cx="{xs["engine"]}" cy="{y - 4}" r="2.5" class="dot"/>')
                y += _ROW
                continue
            ask, answer = _split(item.kind, item.name, item.summary)
            x1, x2 = xs["engine"], xs[_lane(item.kind, item.name)]
            colour = _COLOURS.get(item.kind, "#333")
            a, b, label = (x1, x2, ask) if part == 0 else (x2, x1, answer)
            dash = ' stroke-dasharray="4 3"' if part else ""
            if part == 0:
                opened[id(item)] = y
            elif item.kind == "smtp":  # the session's span on the MTA's lifeline
                top = opened.get(id(item), y)
                body.append(
                    f'<rect x="{x2 - 4}" y="{top}" width="8" height="{y - top}" '
                    f'class="act" stroke="{colour}"/>'
                )
            body.append(
                f'<line x1="{a}" y1="{y}" x2="{b}" y2="{y}" stroke="{colour}"{dash} '
                'marker-end="url(#arrow)"/>'
            )
            width = _LABEL_CHARS + (x2 - x1) // 8
            body.append(
                _text((a + b) / 2, y - 3, label, width, class_="msg", text_anchor="middle",
                      fill=colour)
            )  # fmt: skip
            y += _ROW
    height = y + 10
    width = _GUTTER + 80 + _LANE * (len(lanes) - 1) + 60
    heads = []
    for lane, x in xs.items():
        heads.append(f'<line x1="{x}" y1="24" x2="{x}" y2="{height}" class="lifeline"/>')
        heads.append(
            f'<rect x="{x - 80}" y="4" width="160" height="22" rx="4" class="head"/>'
            + _text(x, 19, lane, 24, text_anchor="middle", class_="headtext")
        )
    style = (
        "<style>.lifeline{stroke:#999;stroke-dasharray:2 3}.head{fill:#edf2f7;stroke:#4a5568}"
        ".headtext{font:bold 12px sans-serif}.band{fill:#f7fafc}"
        ".step{font:bold 12px sans-serif;fill:#1a202c}.log{font:11px monospace;fill:#2d3748}"
        ".warn{fill:#c05621}.msg{font:11px monospace}.dot{fill:#4a5568}"
        ".act{fill:#fefcbf;stroke-width:1}</style>"
    )
    defs = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#4a5568"/></marker></defs>'
    )
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">{style}{defs}'
        + "".join(heads)
        + "".join(body)
        + "</svg>"
    )
