"""The mutant list stays usable: every mutant applies to the current tree, alone.

These run in well under a second and never run the catalog, so CI notices at once
when a module moves or a snippet changes under a mutant (re-anchor it then).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from harness.mutants import (
    KILL_THRESHOLD,
    CatalogRun,
    Mutant,
    MutantError,
    MutantResult,
    apply_mutant,
    load_mutants,
    mutated_files,
    run_mutant,
)
from harness.mutants.report import BEGIN, END, from_json, render_markdown, to_json, write_doc

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = load_mutants()
_VOCABULARY = tomllib.loads((ROOT / "fixtures/requirements.toml").read_text(encoding="utf-8"))
# Requirement IDs, seed tags and (where the vocabulary has them) decisions (AMB-n).
KNOWN_IDS = {
    key for table in ("requirements", "seed", "decisions") for key in _VOCABULARY.get(table, {})
}


def test_at_least_thirty_mutants() -> None:
    assert len(MUTANTS) >= 30


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_mutant_applies_to_the_current_tree(mutant: Mutant) -> None:
    changes = mutated_files(mutant, ROOT)
    assert changes
    for name, (original, mutated) in changes.items():
        assert original == (ROOT / name).read_text(encoding="utf-8")
        assert mutated != original


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_mutant_names_known_requirements(mutant: Mutant) -> None:
    unknown = [r for r in mutant.requirements if r not in KNOWN_IDS]
    assert not unknown, f"{mutant.id}: not in fixtures/requirements.toml: {unknown}"
    assert mutant.title and mutant.description


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(body, encoding="utf-8")
    return path


_ONE = """
[[mutant]]
id = "flip"
title = "t"
requirements = ["MX-3"]
description = "d"
[[mutant.edits]]
file = "pkg/a.py"
old = "x = 1"
new = "x = 2"
"""


def test_apply_writes_the_copy_and_returns_the_original(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/a.py").write_text("x = 1\ny = 1\n")
    (mutant,) = load_mutants(_toml(tmp_path, _ONE))
    originals = apply_mutant(mutant, tmp_path)
    assert (tmp_path / "pkg/a.py").read_text() == "x = 2\ny = 1\n"
    assert originals == {"pkg/a.py": "x = 1\ny = 1\n"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "mutant 'flip': pkg/a.py: cannot read"),
        ("y = 1\n", "mutant 'flip': pkg/a.py: snippet not found"),
        ("x = 1\nx = 1\n", "mutant 'flip': pkg/a.py: snippet found 2 times"),
    ],
)
def test_a_mutant_that_no_longer_applies_names_mutant_and_file(
    tmp_path: Path, content: str | None, message: str
) -> None:
    (tmp_path / "pkg").mkdir()
    if content is not None:
        (tmp_path / "pkg/a.py").write_text(content)
    (mutant,) = load_mutants(_toml(tmp_path, _ONE))
    with pytest.raises(MutantError, match=message):
        apply_mutant(mutant, tmp_path)
    if content is not None:
        assert (tmp_path / "pkg/a.py").read_text() == content  # nothing written


def test_mutated_code_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/a.py").write_text("x = 1\n")
    (mutant,) = load_mutants(_toml(tmp_path, _ONE.replace('new = "x = 2"', 'new = "x = ("')))
    with pytest.raises(MutantError, match="does not parse"):
        mutated_files(mutant, tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('requirements = ["MX-3"]', "requirements = []"), "requirements: must be"),
        (('title = "t"', 'title = "t"\ncolour = 1'), "unknown key 'colour'"),
        (('new = "x = 2"', 'new = "x = 1"'), "old and new are the same"),
        (('title = "t"', 'title = ""'), "title: is required"),
    ],
)
def test_malformed_definitions_name_file_mutant_and_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = _toml(tmp_path, _ONE.replace(*edit))
    with pytest.raises(MutantError, match=message) as info:
        load_mutants(path)
    assert str(path) in str(info.value)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MutantError, match="duplicate id"):
        load_mutants(_toml(tmp_path, _ONE + _ONE))


def test_kill_counts_only_scenarios_that_passed_in_the_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/a.py").write_text("x = 1\n")
    (mutant,) = load_mutants(_toml(tmp_path, _ONE))
    seen: list[str] = []

    def fake_run(tree: Path, **_: object) -> CatalogRun:
        seen.append((tree / "pkg/a.py").read_text())
        return CatalogRun({"a": "failed", "b": "error", "c": "passed", "d": "failed"}, 1.0)

    monkeypatch.setattr("harness.mutants.runner.run_catalog", fake_run)
    baseline = CatalogRun({"a": "passed", "b": "passed", "c": "passed", "d": "failed"}, 1.0)
    result = run_mutant(mutant, tmp_path, baseline)
    assert seen == ["x = 2\n"]  # the catalog ran on the mutated copy
    assert (tmp_path / "pkg/a.py").read_text() == "x = 1\n"  # and it was put back
    assert result.caught_by == ("a", "b")
    assert result.status == "killed" and KILL_THRESHOLD == 2
    only_one = CatalogRun({"a": "passed", "b": "failed", "c": "passed", "d": "failed"}, 1.0)
    assert run_mutant(mutant, tmp_path, only_one).status == "survived"


def test_doc_section_is_replaced_between_markers_only(tmp_path: Path) -> None:
    doc = tmp_path / "conformance.md"
    doc.write_text(f"# Title\n\nkept\n\n{BEGIN}\nold\n{END}\n\ntail kept\n")
    write_doc(doc, render_markdown([], wall_seconds=60, scenarios=3))
    text = doc.read_text()
    assert text.startswith("# Title\n\nkept\n\n" + BEGIN)
    assert "old" not in text and "## Mutation score" in text
    assert text.endswith(f"{END}\n\ntail kept\n")


def test_saved_results_render_again_with_current_titles(tmp_path: Path) -> None:
    (mutant,) = load_mutants(_toml(tmp_path, _ONE))
    results = [MutantResult(mutant, "killed", ("a", "b"), "", 2.0)]
    saved = to_json(CatalogRun({"a": "passed", "b": "passed"}, 1.0), results, wall_seconds=90)
    loaded, wall, scenarios = from_json(saved, [mutant])
    assert (loaded, wall, scenarios) == (results, 90.0, 2)
    assert "**Score: 1/1 killed**, against a catalog of 2 scenarios" in render_markdown(
        loaded, wall_seconds=wall, scenarios=scenarios
    )
    with pytest.raises(MutantError, match="no longer has"):
        from_json(saved, [])
