"""Every relative link of the README, the catalog's README and docs/*.md leads to a file
of the repository (issue 16 item 2: the README linked the requirements, the design notes
and the seed's behaviour at paths outside the tree), and an anchor to a heading that
exists.

Links are read with markdown-it-py (rich's Markdown parser, already installed), so a
path in a code span or block is not taken for a link."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "scenarios" / "README.md", *sorted(ROOT.glob("docs/*.md"))]
_PARSER = MarkdownIt("commonmark").enable("table")


def _links(text: str) -> list[str]:
    out: list[str] = []
    for token in _PARSER.parse(text):
        for child in token.children or ():
            if child.type == "link_open":
                out.append(str(child.attrGet("href") or ""))
            elif child.type == "image":
                out.append(str(child.attrGet("src") or ""))
    return out


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as '-'."""
    found: set[str] = set()
    tokens = _PARSER.parse(path.read_text(encoding="utf-8"))
    for heading, inline in itertools.pairwise(tokens):
        if heading.type == "heading_open":
            slug = re.sub(r"[^\w\- ]", "", inline.content.lower()).replace(" ", "-")
            found.add(slug)
    return found


def _broken(document: Path, root: Path = ROOT) -> list[str]:
    bad = []
    for href in _links(document.read_text(encoding="utf-8")):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith("mailto:"):
            continue  # not a file of the repository
        target = (document.parent / unquote(parts.path)).resolve() if parts.path else document
        if not target.exists() or root not in (target, *target.parents):
            bad.append(f"{href}: no such file")
        elif parts.fragment and target.suffix == ".md" and parts.fragment not in _anchors(target):
            bad.append(f"{href}: no heading #{parts.fragment} in {target.name}")
    return bad


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    assert not _broken(document)


def test_the_check_sees_links_and_not_code(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading, here\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](there.md) [ok](there.md#a-heading-here) [web](https://example.com)\n"
        "[gone](gone/away.txt) [no heading](there.md#nope) `[code](nowhere.txt)`\n"
    )
    assert _broken(doc, tmp_path) == [
        "gone/away.txt: no such file",
        "there.md#nope: no heading #nope in there.md",
    ]
