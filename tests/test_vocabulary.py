"""The project's vocabulary lives in the repository, and the documents stay true.

Requirement IDs (``DISC-1``), decisions (``AMB-7``) and seed tags (``seed:proxy``) are
cited all over the tree. Each must be defined twice: in prose in ``docs/`` and as data
in ``fixtures/requirements.toml`` (which ``sts-harness coverage`` counts). The two must
agree, the generated coverage tables in ``docs/`` must match the catalog, every module
or function a document names must exist, and every relative link and every document a
file cites must be a file of this repository.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.coverage import coverage_of, load_requirements
from harness.coverage_docs import DOCS, render_block, replace_block, stale_docs, write_docs
from harness.errors import HarnessError
from harness.scenario.loader import load_all

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS_DOC = ROOT / "docs/requirements.md"
DECISIONS_DOC = ROOT / "docs/decisions.md"
GATEWAY_DOC = ROOT / "docs/gateway-behaviour.md"
FIXTURE = ROOT / "fixtures" / "requirements.toml"

#: Where IDs and tags are cited (and so must be defined).
CITING = ("engine", "harness", "certs", "tests", "scenarios", "fixtures", "bench", "README.md")

#: Documents whose relative links must all resolve.
LINKED = ("README.md", "scenarios/README.md", "docs")

#: Parts of the tree whose comments may still cite the research notes the project
#: started from (outside the repository): none since the harness's world and adapters
#: were re-pointed at docs/. A part listed here is left out of CITATION_SCOPE.
CITATION_PENDING: tuple[str, ...] = ()
#: Where every citation of a document must name a file of this repository.
CITATION_SCOPE: tuple[str, ...] = (
    "README.md",
    "scenarios/README.md",
    "docs",
    "engine",
    "certs",
    "bench",
    "tests",
    "scripts",
    "scenarios",
    "fixtures",
    *sorted(
        f"harness/{p.name}"
        for p in (ROOT / "harness").iterdir()
        if f"harness/{p.name}" not in CITATION_PENDING and p.name != "__pycache__"
    ),
)

_TEXT = {".py", ".toml", ".md", ".c", ".json", ".txt", ".sh", ".ini", ".cfg", ".html"}
_SKIP_PARTS = {"__pycache__", ".venv", "node_modules", ".git", ".hypothesis"}
_GROUPS = "DISC|FETCH|POL|MX|CERT|APPLY|CACHE|COEX|DANE|RPT"
_REQ = re.compile(rf"\b((?:{_GROUPS})-\d+)[a-z]?\b")  # CERT-6b: sub-case b of CERT-6
_AMB = re.compile(r"\bAMB-\d+\b")
_SEED = re.compile(r"\bseed:[a-z0-9](?:[a-z0-9.:-]*[a-z0-9])?")
#: Placeholders that describe the tag syntax rather than cite a tag.
_SEED_PLACEHOLDERS = {"seed:x", "seed:name", "seed:tag", "seed:log"}
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_DOTTED = re.compile(r"`((?:engine|harness|certs)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
#: In Markdown: any ``*.md`` name, which must resolve like a relative link.
_CITED_MD = re.compile(r"(?<![\w./-])((?:\.\./)*[\w.-]+(?:/[\w.-]+)*\.md)\b")
#: Anywhere: the research notes by their names (the checklist's file name without the
#: docs/ in front is the old, shared one) and the shared directory.
_CITED_OUTSIDE = re.compile(
    r"\b(?:DESIGN|STYLE|peers)\.md\b|\bseg-behaviou?r(?:\.md)?\b|\bSEG §"
    r"|(?<![\w/-])(?:spec/)?requirements\.md\b|/work/share[d]\b|\.\./share[d]/"
)


def _files(entries: tuple[str, ...]) -> Iterator[Path]:
    for entry in entries:
        path = ROOT / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            if f.is_file() and f.suffix in _TEXT and not _SKIP_PARTS & set(f.parts):
                yield f


def _cited(pattern: re.Pattern[str]) -> dict[str, list[str]]:
    """Each match of ``pattern`` (group 1 if any) in :data:`CITING` -> where it occurs."""
    found: dict[str, list[str]] = {}
    for f in _files(CITING):
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in pattern.finditer(line):
                token = m.group(1) if pattern.groups else m.group(0)
                found.setdefault(token, []).append(f"{f.relative_to(ROOT)}:{n}")
    return found


def _fixture() -> dict[str, dict[str, dict[str, object]]]:
    with FIXTURE.open("rb") as fh:
        return tomllib.load(fh)


def _doc_rows(path: Path) -> dict[str, list[str]]:
    """First cell -> the other cells, for the rows of the hand-written tables."""
    text = path.read_text(encoding="utf-8").split("<!-- BEGIN coverage:")[0]
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def _decision_sections() -> dict[str, str]:
    text = DECISIONS_DOC.read_text(encoding="utf-8").split("<!-- BEGIN coverage:")[0]
    parts = re.split(r"^## (AMB-\d+): ", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _where(cites: dict[str, list[str]], ids: set[str] | list[str]) -> str:
    return "; ".join(f"{i} (e.g. {cites[i][0]})" for i in sorted(ids))


# --- every ID and tag cited in the tree is defined ------------------------------------


def test_every_cited_requirement_id_is_defined_in_docs_and_fixture() -> None:
    cites = _cited(_REQ)
    in_doc = {k for k in _doc_rows(REQUIREMENTS_DOC) if _REQ.fullmatch(k)}
    in_fixture = set(_fixture()["requirements"])
    assert len(cites) > 100, "the scan found almost no requirement IDs: is the pattern right?"
    missing_doc = set(cites) - in_doc
    missing_fixture = set(cites) - in_fixture
    assert not missing_doc, (
        f"cited but not defined in docs/requirements.md: {_where(cites, missing_doc)}"
    )
    assert not missing_fixture, (
        f"cited but not in fixtures/requirements.toml: {_where(cites, missing_fixture)}"
    )


def test_every_cited_decision_is_defined_in_docs_and_fixture() -> None:
    cites = _cited(_AMB)
    defined = set(_decision_sections())
    in_fixture = set(_fixture()["decisions"])
    assert len(cites) > 20, "the scan found almost no AMB-n citations: is the pattern right?"
    missing_doc, missing_fixture = set(cites) - defined, set(cites) - in_fixture
    assert not missing_doc, (
        f"cited but not defined in docs/decisions.md: {_where(cites, missing_doc)}"
    )
    assert not missing_fixture, (
        f"cited but not in fixtures/requirements.toml [decisions]: {_where(cites, missing_fixture)}"
    )


def test_every_cited_seed_tag_is_defined_in_docs_and_fixture() -> None:
    cites = {k: v for k, v in _cited(_SEED).items() if k not in _SEED_PLACEHOLDERS}
    in_doc = {k for k in _doc_rows(GATEWAY_DOC) if k.startswith("seed:")}
    in_fixture = set(_fixture()["seed"])
    assert len(cites) > 20, "the scan found almost no seed tags: is the pattern right?"
    missing_doc, missing_fixture = set(cites) - in_doc, set(cites) - in_fixture
    assert not missing_doc, (
        f"cited but not defined in docs/gateway-behaviour.md §7: {_where(cites, missing_doc)}"
    )
    assert not missing_fixture, (
        f"cited but not in fixtures/requirements.toml [seed]: {_where(cites, missing_fixture)}"
    )


# --- the documents and the fixture agree ----------------------------------------------


def test_requirements_doc_and_fixture_list_the_same_ids_levels_and_rfcs() -> None:
    rows = {k: v for k, v in _doc_rows(REQUIREMENTS_DOC).items() if _REQ.fullmatch(k)}
    fixture = _fixture()["requirements"]
    assert set(rows) == set(fixture), (
        f"only in docs: {sorted(set(rows) - set(fixture))}; "
        f"only in the fixture: {sorted(set(fixture) - set(rows))}"
    )
    for rid, (level, rfc, meaning) in rows.items():
        assert (level, rfc) == (fixture[rid]["level"], fixture[rid]["rfc"]), rid
        assert meaning, f"{rid}: no description in docs/requirements.md"


def test_decisions_doc_and_fixture_list_the_same_decisions() -> None:
    sections = _decision_sections()
    fixture = _fixture()["decisions"]
    assert list(sections) == list(fixture), "docs/decisions.md and the fixture differ in order"
    known = set(_fixture()["requirements"])
    for aid, body in sections.items():
        for part in ("**Question.**", "**Strict reading.**", "**This project.**", "**Where.**"):
            assert part in body, f"{aid}: no {part} paragraph in docs/decisions.md"
        assert f"- **RFC.** {fixture[aid]['rfc']}\n" in body, f"{aid}: RFC differs from the fixture"
        said = re.search(r"\*\*Requirements\.\*\* (.*?)\.?\n", body)
        assert said, f"{aid}: no **Requirements.** line in docs/decisions.md"
        related = fixture[aid].get("related", [])
        assert isinstance(related, list)
        assert _REQ.findall(said.group(1)) == related, f"{aid}: docs and fixture relate differently"
        assert set(related) <= known, f"{aid}: relates to unknown requirements"


def test_gateway_doc_and_fixture_list_the_same_seed_tags() -> None:
    in_doc = [k for k in _doc_rows(GATEWAY_DOC) if k.startswith("seed:")]
    assert in_doc == list(_fixture()["seed"])


def test_load_requirements_reads_decisions_as_counted_items() -> None:
    reqs = {r.id: r for r in load_requirements()}
    assert reqs["AMB-24"].group == "AMB" and reqs["AMB-24"].counted
    assert reqs["AMB-24"].level == "decision"
    assert sum(r.group == "AMB" for r in reqs.values()) == len(_fixture()["decisions"])


# --- generated tables and named code ----------------------------------------------------


def test_coverage_tables_in_docs_match_the_catalog() -> None:
    scenarios = load_all([ROOT / "scenarios"])
    stale = stale_docs(coverage_of(scenarios), scenarios)
    assert not stale, (
        f"the coverage table of {', '.join(stale)} is stale: "
        "run `sts-harness coverage --write-docs` and commit the result"
    )


def test_coverage_table_lists_each_covering_scenario() -> None:
    scenarios = load_all([ROOT / "scenarios" / "examples"])
    block = render_block(coverage_of(scenarios), scenarios, "requirements")
    row = next(line for line in block.splitlines() if line.startswith("| DISC-1 |"))
    assert "[sts-enforce-mx1-bad](../scenarios/examples/sts-enforce-mx1-bad.toml)" in row
    assert "| FETCH-7 | MAY | no | —" in block  # counted: no; no example covers it


def test_write_docs_rewrites_only_the_block_and_is_idempotent(tmp_path: Path) -> None:
    scenarios = load_all([ROOT / "scenarios" / "examples"])
    cov = coverage_of(scenarios)
    for kind in DOCS.values():
        doc = tmp_path / kind.path
        doc.parent.mkdir(parents=True, exist_ok=True)
        empty = render_block(coverage_of([]), [], kind.name, tmp_path)
        doc.write_text(f"intro\n{empty}\noutro\n")
    # The examples cover requirements and seed tags but no decision.
    assert write_docs(cov, scenarios, tmp_path) == [
        "docs/requirements.md",
        "docs/gateway-behaviour.md",
    ]
    assert write_docs(cov, scenarios, tmp_path) == []
    text = (tmp_path / "docs/decisions.md").read_text()
    assert text.startswith("intro\n<!-- BEGIN coverage:decisions") and text.endswith("-->\noutro\n")
    gateway = (tmp_path / "docs/gateway-behaviour.md").read_text()
    assert "[hosted-required-verify](" in gateway  # links are relative to the document


def test_a_document_without_its_markers_is_a_clear_error() -> None:
    with pytest.raises(HarnessError, match=r"docs/x\.md: no .*coverage:seed"):
        replace_block("no markers here", "seed", "block", source="docs/x.md")


def test_write_docs_refuses_part_of_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", str(ROOT / "scenarios" / "dane"), "--write-docs"]) == 2
    assert "--write-docs describes the whole catalog" in capsys.readouterr().err


def test_coverage_markdown_prints_one_block(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", str(ROOT / "scenarios" / "examples"), "--markdown", "seed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!-- BEGIN coverage:seed") and "| `seed:hosted-verify` |" in out


@pytest.mark.parametrize(
    "doc", [DECISIONS_DOC, GATEWAY_DOC, REQUIREMENTS_DOC], ids=lambda p: p.name
)
def test_code_named_in_docs_exists(doc: Path) -> None:
    text = _FENCE.sub("", doc.read_text(encoding="utf-8"))
    missing = [name for name in sorted(set(_DOTTED.findall(text))) if not _resolves(name)]
    assert not missing, f"{doc.relative_to(ROOT)} names code that does not exist: {missing}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# --- links and citations ----------------------------------------------------------------


def _markdown(entries: tuple[str, ...]) -> Iterator[Path]:
    return (f for f in _files(entries) if f.suffix == ".md")


def _path_like(token: str) -> bool:
    if "/" not in token:
        return token.endswith(".md")
    if any(c in token for c in "<>*{}$ ") or token.startswith(("/", "~")):
        return False
    first = token.split("/")[0]
    return first == ".." or (ROOT / first).exists()


def test_relative_links_and_paths_in_the_documents_exist() -> None:
    broken = []
    for doc in _markdown(LINKED):
        text = _FENCE.sub("", doc.read_text(encoding="utf-8"))
        targets = [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
        targets += [t for t in _CODE.findall(text) if _path_like(t)]
        for target in targets:
            path = target.split("#")[0]
            if not ((doc.parent / path).exists() or (ROOT / path).exists()):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "links or paths to files that do not exist: " + "; ".join(broken)


#: A file a command line writes (``--out m.md``) is not a citation.
_WRITTEN = re.compile(r"--(?:out|html|json|junit)[= ]\S+")
#: Files that name the outside documents on purpose, and why.
CITATION_EXEMPT = {
    "tests/test_docs_links.py": "the outside documents are the broken links it must catch",
}


def test_documents_cite_only_files_of_the_repository() -> None:
    outside = []
    for f in _files(CITATION_SCOPE):
        if str(f.relative_to(ROOT)) in CITATION_EXEMPT:
            continue
        # Some fixtures are deliberately not UTF-8 (policy bodies with Latin-1 bytes).
        text = f.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            line = _WRITTEN.sub("", _URL.sub("", line))
            where = f"{f.relative_to(ROOT)}:{n}"
            if f.suffix == ".md":
                for name in _CITED_MD.findall(line):
                    if not ((f.parent / name).exists() or (ROOT / name).exists()):
                        outside.append(f"{where}: {name}")
                line = _LINK.sub("", line)  # a link's target is checked above
            outside += [f"{where}: {m}" for m in _CITED_OUTSIDE.findall(line)]
    assert not outside, "citations of documents outside the repository: " + "; ".join(outside)
