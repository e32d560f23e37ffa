"""Requirement coverage: which scenarios cover which requirement IDs and seed tags.

Theory of operation
-------------------
``fixtures/requirements.toml`` lists every requirement of ``docs/requirements.md``
(section, RFC reference, level, a short title), the seed behaviour tags of
``docs/gateway-behaviour.md`` and the decisions (``AMB-n``) of ``docs/decisions.md``.
Its ``[coverage]`` table says what counts: the MUST and SHOULD requirements of the
listed groups (DISC, FETCH, ... RPT) plus every seed tag and every decision.
:func:`coverage_of` maps those *counted* items to the scenarios whose ``covers``
name them, and reports the uncovered ones and any ``covers`` entry that names
nothing known (a typo in a scenario).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.tomlnode import TomlNode
from harness.errors import SpecError, spec_errors
from harness.scenario.model import Scenario
from harness.world.spec.values import strings_of

__all__ = [
    "DEFAULT_REQUIREMENTS",
    "Coverage",
    "EngineReach",
    "Requirement",
    "coverage_of",
    "engine_reach",
    "load_requirements",
]

DEFAULT_REQUIREMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "requirements.toml"
_LEVELS = ("MUST", "SHOULD", "MAY", "—")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement ID or seed tag.

    Attributes:
        id: ``DISC-1``, ``seed:hosted-verify`` or ``AMB-7``.
        group: ``DISC`` ..., ``seed`` or ``AMB``.
        section: where it is defined.
        level: MUST / SHOULD / MAY / — (seed tags: ``seed``; decisions: ``decision``).
        title: a short description.
        counted: whether coverage counts it.
    """

    id: str
    group: str
    section: str
    level: str
    title: str
    counted: bool


@dataclass(frozen=True, slots=True)
class Coverage:
    """Counted requirements and the scenarios covering them.

    Attributes:
        requirements: every known requirement, in file order.
        covered_by: requirement id -> ids of the scenarios covering it.
        unknown: ``covers`` entries naming nothing known -> scenario ids.
    """

    requirements: tuple[Requirement, ...]
    covered_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unknown: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def counted(self) -> list[Requirement]:
        """The requirements coverage counts."""
        return [r for r in self.requirements if r.counted]

    @property
    def uncovered(self) -> list[Requirement]:
        """Counted requirements no scenario covers."""
        return [r for r in self.counted if not self.covered_by.get(r.id)]

    @property
    def percent(self) -> float:
        """Covered share of the counted requirements, 0..100."""
        counted = self.counted
        if not counted:
            return 100.0
        return 100.0 * (len(counted) - len(self.uncovered)) / len(counted)


def load_requirements(path: str | Path = DEFAULT_REQUIREMENTS) -> tuple[Requirement, ...]:
    """Read ``requirements.toml``.

    Raises:
        SpecError: unreadable, or a wrong key or value.
    """
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read requirements: {exc}", file=source) from None
    with spec_errors():
        return _requirements(TomlNode(data, source))


def _requirements(root: TomlNode) -> tuple[Requirement, ...]:
    top = root.table(("coverage", "requirements", "seed", "decisions"), required=("coverage",))
    cov = top["coverage"].table(("groups", "levels"), required=("groups", "levels"))
    groups, levels = set(strings_of(cov["groups"])), set(strings_of(cov["levels"]))
    out: list[Requirement] = []
    for rid, node in top["requirements"].table().items() if "requirements" in top else ():
        e = node.table(("section", "rfc", "level", "title"), required=("level", "title"))
        level = e["level"].choice(_LEVELS)
        group = rid.split("-")[0]
        section = e["section"].text() if "section" in e else ""
        counted = group in groups and level in levels
        out.append(Requirement(rid, group, section, level, e["title"].text(), counted))
    for tag, node in top["seed"].table().items() if "seed" in top else ():
        e = node.table(("section", "title"), required=("title",))
        section = e["section"].text() if "section" in e else ""
        out.append(Requirement(tag, "seed", section, "seed", e["title"].text(), True))
    for aid, node in top["decisions"].table().items() if "decisions" in top else ():
        # docs/decisions.md: how this project reads an ambiguous point; always counted.
        e = node.table(("rfc", "title", "related"), required=("title",))
        if "related" in e:
            strings_of(e["related"])  # checked: a list of requirement IDs
        out.append(Requirement(aid, "AMB", "", "decision", e["title"].text(), True))
    return tuple(out)


def coverage_of(
    scenarios: Iterable[Scenario], requirements: tuple[Requirement, ...] | None = None
) -> Coverage:
    """Map ``requirements`` (default: the fixture) to the ``scenarios`` covering them."""
    reqs = load_requirements() if requirements is None else requirements
    known = {r.id for r in reqs}
    covered: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    for s in scenarios:
        for tag in s.covers:
            (covered if tag in known else unknown).setdefault(tag, []).append(s.id)
    return Coverage(
        requirements=reqs,
        covered_by={k: tuple(v) for k, v in covered.items()},
        unknown={k: tuple(v) for k, v in unknown.items()},
    )


@dataclass(frozen=True, slots=True)
class EngineReach:
    """Which scenarios an engine can run, and why it skips the others.

    Attributes:
        engine: the adapter name.
        total: scenarios considered.
        skipped: scenario id -> the skip reason (the capabilities it lacks, and why).
    """

    engine: str
    total: int
    skipped: Mapping[str, str]

    @property
    def percent(self) -> float:
        """Share of the scenarios the engine runs, 0..100."""
        return 100.0 * (self.total - len(self.skipped)) / self.total if self.total else 100.0


def engine_reach(scenarios: Iterable[Scenario], engine: str = "sts-engine") -> EngineReach:
    """What ``engine`` runs of ``scenarios`` (the ``sts-engine`` process by default).

    A scenario is skipped when it needs a capability the adapter lacks (the runner's
    rule, :func:`harness.scenario.needs.required_capabilities`), for the reason it would give.
    """
    from harness.adapters.registry import make_adapter
    from harness.run.single import lacks
    from harness.scenario.needs import required_capabilities

    caps = make_adapter(engine).capabilities
    listed = list(scenarios)
    skipped = {}
    for s in listed:
        missing = required_capabilities(s) - caps
        if missing:
            skipped[s.id] = lacks(engine, missing)
    return EngineReach(engine, len(listed), skipped)
