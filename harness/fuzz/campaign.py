"""A fuzz campaign: many generated worlds against one engine, each finding shrunk.

Theory of operation
-------------------
:func:`draw_worlds` draws N scenario dicts from
:func:`~harness.fuzz.strategies.fuzz_scenarios` with hypothesis at a fixed seed (the
generate phase only: the same seed gives the same worlds). :func:`run_campaign`
runs them in chunks through a *runner* (a callable taking a list of worlds and
returning one :class:`Judged` each: the in-process engines run them one by one, a
real MTA runs a whole chunk as one batch in one namespace world), until the worlds
or the time budget run out.

The first world that breaks each invariant is then shrunk with hypothesis's own
shrinker: the same seeded search is replayed with a property that raises on that
invariant. Worlds already judged are looked up by digest instead of run again, so
the replay reaches the failing world at the cost of drawing, and only the shrinker's
new candidates run (through ``run_one``, a single world each). The smallest world
that still breaks the invariant is written as an ordinary scenario file
(:func:`~harness.fuzz.regressions.write_regression`) that fails in one ``sts-harness
run``. A violation a real MTA is known for (``docs/conformance.md``) gets its label
from ``label``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings

from harness.fuzz.invariants import Violation
from harness.fuzz.regressions import write_regression
from harness.fuzz.strategies import fuzz_scenarios

__all__ = [
    "VIOLATIONS_LOG",
    "Drawn",
    "Judged",
    "Summary",
    "WorldFinding",
    "digest",
    "draw",
    "draw_worlds",
    "run_campaign",
    "shrink",
]

#: A runner: worlds in, one judgement each out (same order).
Runner = Callable[[Sequence[dict[str, Any]]], list["Judged"]]


@dataclass(frozen=True, slots=True)
class Judged:
    """What one world showed.

    Attributes:
        violations: every invariant it broke (empty: it held).
        skipped: why the engine could not run it ("" when it ran).
    """

    violations: tuple[Violation, ...] = ()
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class WorldFinding:
    """One invariant broken in the campaign (the first world that broke it, shrunk).

    Attributes:
        invariant: the invariant id.
        worlds: how many worlds broke it.
        doc: the smallest world found that breaks it (the shrunk one, else the first).
        violations: what that world showed.
        shrunk: hypothesis shrank it (False: the shrink budget ran out first).
        label: the known divergence it is, or "".
        path: the scenario file written, or None.
    """

    invariant: str
    worlds: int
    doc: Mapping[str, Any]
    violations: tuple[Violation, ...]
    shrunk: bool = False
    label: str = ""
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """The campaign's figures (see :func:`run_campaign`)."""

    engine: str
    seed: int
    drawn: int
    run: int
    skipped: int
    seconds: float
    violations: Mapping[str, int] = field(default_factory=dict)
    unlabelled: Mapping[str, int] = field(default_factory=dict)
    findings: tuple[WorldFinding, ...] = ()
    skip_reasons: Mapping[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Worlds run per second of generation and running (shrinking excluded)."""
        return self.run / self.seconds if self.seconds > 0 else 0.0


def digest(doc: Mapping[str, Any]) -> str:
    """A stable key of a world (its world, sender and steps)."""
    canonical = json.dumps({k: doc.get(k) for k in ("world", "sender", "steps")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _settings(n: int, phases: tuple[Phase, ...]) -> settings:
    return settings(
        max_examples=n,
        phases=phases,
        database=None,
        deadline=None,
        derandomize=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )


@dataclass(frozen=True, slots=True)
class Drawn:
    """A world and the seeded search that drew it (to replay when shrinking)."""

    doc: dict[str, Any]
    seed: int
    examples: int


def draw_worlds(
    n: int, at_seed: int, controls: dict[str, Any] | None = None, *, waits: bool = True
) -> list[dict[str, Any]]:
    """``n`` distinct worlds by seed (see :func:`draw`)."""
    return [d.doc for d in draw(n, at_seed, controls, waits=waits)]


def draw(
    n: int, at_seed: int, controls: dict[str, Any] | None = None, *, waits: bool = True
) -> list[Drawn]:
    """``n`` distinct worlds: the same seed gives the same worlds.

    Hypothesis draws small worlds first and repeats some, so a search of ``n``
    examples yields fewer distinct ones; further searches (seeds derived from
    ``at_seed``) top the list up, at most :data:`_ROUNDS` of them.
    """
    out: dict[str, Drawn] = {}
    for r in range(_ROUNDS):
        if len(out) >= n:
            break
        round_seed, want = at_seed * 1000 + r, max(n - len(out), 50)
        _search(out, round_seed, want, controls, waits)
    return list(out.values())[:n]


def _search(
    out: dict[str, Drawn], at_seed: int, n: int, controls: dict[str, Any] | None, waits: bool
) -> None:
    @_settings(n, (Phase.generate,))
    @given(fuzz_scenarios(controls, waits=waits))
    def collect(doc: dict[str, Any]) -> None:
        out.setdefault(digest(doc), Drawn(doc, at_seed, n))

    seed(at_seed)(collect)()


#: Searches :func:`draw` makes at most to find ``n`` distinct worlds.
_ROUNDS = 8


class _Broke(Exception):
    """The shrink property's failure: the invariant under shrinking broke."""


def shrink(
    invariant: str,
    known: dict[str, Judged],
    run_one: Callable[[dict[str, Any]], Judged],
    *,
    n: int,
    at_seed: int,
    controls: dict[str, Any] | None,
    waits: bool,
    deadline: float,
) -> tuple[dict[str, Any], tuple[Violation, ...]] | None:
    """The smallest world hypothesis finds that breaks ``invariant`` (None: none).

    Replays :func:`draw_worlds`'s seeded search; ``known`` (digest -> judgement)
    answers for worlds already run and gains the new ones. After ``deadline``
    (``time.monotonic()``), new candidates count as passing, which ends the shrink.
    """
    best: list[tuple[dict[str, Any], tuple[Violation, ...]]] = []

    @_settings(n, (Phase.generate, Phase.shrink))
    @given(fuzz_scenarios(controls, waits=waits))
    def prop(doc: dict[str, Any]) -> None:
        key = digest(doc)
        judged = known.get(key)
        if judged is None:
            if time.monotonic() > deadline:
                return
            judged = known[key] = run_one(doc)
        if any(v.invariant == invariant for v in judged.violations):
            best[:] = [(doc, judged.violations)]
            raise _Broke(invariant)

    try:
        seed(at_seed)(prop)()
    except _Broke:
        pass
    except Exception:  # hypothesis gave up (a flaky engine): keep what was found
        pass
    return best[-1] if best else None


#: With ``findings``, every violating world is listed in this file (JSON lines).
VIOLATIONS_LOG = "violations.jsonl"


def _log(findings: Path, doc: Mapping[str, Any], found: Sequence[Violation], tag: str) -> None:
    """Append one violating world (its violations of one invariant, its label) to the log."""
    findings.mkdir(parents=True, exist_ok=True)
    line = {
        "digest": digest(doc)[:10],
        "invariant": found[0].invariant,
        "label": tag,
        "details": [v.detail for v in found],
        "world": {k: doc.get(k) for k in ("world", "sender", "steps")},
    }
    with (findings / VIOLATIONS_LOG).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def run_campaign(
    engine: str,
    runner: Runner,
    run_one: Callable[[dict[str, Any]], Judged],
    *,
    worlds: int,
    at_seed: int,
    budget: float | None = None,
    chunk: int = 25,
    findings: Path | None = None,
    controls: dict[str, Any] | None = None,
    waits: bool = True,
    label: Callable[[str, Violation, Mapping[str, Any]], str] | None = None,
    shrink_seconds: float = 60.0,
    progress: Callable[[int, int, int], None] | None = None,
) -> Summary:
    """Run up to ``worlds`` generated worlds through ``runner`` (see the module docstring).

    Args:
        engine: the engine's name (for labels and the summary).
        runner: runs a chunk of worlds.
        run_one: runs one world (shrinking).
        worlds: how many worlds to draw.
        at_seed: hypothesis's seed.
        budget: seconds for drawing and running (None: no limit); shrinking comes after.
        chunk: worlds per runner call.
        findings: where to write each finding's scenario file, and every violating
            world to :data:`VIOLATIONS_LOG` (None: nowhere).
        controls, waits: passed to :func:`~harness.fuzz.strategies.fuzz_scenarios`.
        label: (engine, violation, world) -> the known divergence it is, or "".
        shrink_seconds: the time each finding may spend shrinking.
        progress: called with (worlds done, worlds drawn, violating worlds so far).
    """
    began = time.monotonic()
    drawn = draw(worlds, at_seed, controls, waits=waits)
    docs = [d.doc for d in drawn]
    origin = {digest(d.doc): d for d in drawn}
    known: dict[str, Judged] = {}
    first: dict[str, tuple[dict[str, Any], tuple[Violation, ...]]] = {}
    per_invariant: Counter[str] = Counter()
    skips: Counter[str] = Counter()
    unlabelled: Counter[str] = Counter()
    done = run = bad = 0
    for start in range(0, len(docs), chunk):
        if budget is not None and time.monotonic() - began > budget:
            break
        part = docs[start : start + chunk]
        for doc, judged in zip(part, runner(part), strict=True):
            known[digest(doc)] = judged
            done += 1
            if judged.skipped:
                skips[judged.skipped] += 1
                continue
            run += 1
            names = dict.fromkeys(v.invariant for v in judged.violations)
            bad += bool(names)
            for name in names:
                per_invariant[name] += 1
                first.setdefault(name, (doc, judged.violations))
                mine = [v for v in judged.violations if v.invariant == name]
                tag = label(engine, mine[0], doc) if label is not None else ""
                unlabelled[name] += not tag
                if findings is not None:
                    _log(findings, doc, mine, tag)
        if progress is not None:
            progress(done, len(docs), bad)
    seconds = time.monotonic() - began
    out: list[WorldFinding] = []
    for name, (doc, found) in first.items():
        where = origin[digest(doc)]
        small = shrink(
            name,
            known,
            run_one,
            n=where.examples,
            at_seed=where.seed,
            controls=controls,
            waits=waits,
            deadline=time.monotonic() + shrink_seconds,
        )
        shrunk = small is not None and digest(small[0]) != digest(doc)
        doc, found = small or (doc, found)
        mine = tuple(v for v in found if v.invariant == name) or found
        tag = label(engine, mine[0], doc) if label is not None else ""
        path = None if findings is None else write_regression(doc, list(mine), findings, engine)
        out.append(WorldFinding(name, per_invariant[name], doc, mine, shrunk, tag, path))
    return Summary(
        engine=engine,
        seed=at_seed,
        drawn=len(docs),
        run=run,
        skipped=sum(skips.values()),
        seconds=seconds,
        violations=dict(per_invariant),
        unlabelled=dict(unlabelled),
        findings=tuple(out),
        skip_reasons=dict(skips),
    )
