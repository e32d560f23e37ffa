"""Mutants as data: load ``mutants.toml``, check it, and apply one mutant to a tree.

Theory of operation
-------------------
A mutant is a small, named change to the engine's decisions that mirrors a bug some
real sender had. It is a list of edits; each edit names a file (relative to the
repository root) and an ``old`` snippet that must occur **exactly once** in that
file, replaced by ``new``. Mutants find their code by content, not by line number,
so they survive edits around them; when a module moves or the snippet changes, the
edit no longer applies and :class:`MutantError` names the mutant, the file and what
went wrong (missing file, snippet gone, snippet ambiguous), so the list cannot rot
silently. ``tests/mutants/test_mutants.py`` checks every mutant against the current
tree without running the catalog.

Applying never touches the tree it reads from unless asked: :func:`mutated_files`
returns the new texts, and :func:`apply_mutant` writes them into a scratch copy.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

__all__ = [
    "MUTANTS_FILE",
    "Edit",
    "Mutant",
    "MutantError",
    "apply_mutant",
    "load_mutants",
    "mutated_files",
]

MUTANTS_FILE = Path(__file__).with_name("mutants.toml")

_MUTANT_KEYS = {"id", "title", "requirements", "mirrors", "description", "edits"}
_EDIT_KEYS = {"file", "old", "new"}


class MutantError(HarnessError):
    """A mutant definition is wrong, or no longer applies to the tree."""


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace the one occurrence of ``old`` in ``file`` by ``new``."""

    file: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Mutant:
    """One mutant.

    Attributes:
        id: a short kebab-case name, unique in the file.
        title: one line: what the broken sender does.
        requirements: the requirement IDs (fixtures/requirements.toml) it breaks.
        mirrors: the real MTA (or library) whose bug it mirrors, with a reference;
            empty when it mirrors none in particular.
        description: why it is realistic and what should catch it.
        edits: the changes, applied in order.
    """

    id: str
    title: str
    requirements: tuple[str, ...]
    mirrors: str
    description: str
    edits: tuple[Edit, ...]


def _fail(source: Path, where: str, why: str) -> MutantError:
    return MutantError(f"{source}: {where}: {why}")


def _text(source: Path, where: str, table: dict[str, object], key: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise _fail(source, f"{where}.{key}", f"must be a string, got {value!r}")
    return value


def _mutant(source: Path, index: int, table: object) -> Mutant:
    where = f"mutant[{index}]"
    if not isinstance(table, dict):
        raise _fail(source, where, "must be a table")
    unknown = sorted(set(table) - _MUTANT_KEYS)
    if unknown:
        raise _fail(source, where, f"unknown key {unknown[0]!r}")
    ident = _text(source, where, table, "id")
    where = f"mutant {ident!r}" if ident else where
    for key in ("id", "title", "description"):
        if not _text(source, where, table, key).strip():
            raise _fail(source, f"{where}.{key}", "is required")
    reqs = table.get("requirements")
    if not isinstance(reqs, list) or not reqs or not all(isinstance(r, str) for r in reqs):
        raise _fail(source, f"{where}.requirements", "must be a non-empty list of IDs")
    raw_edits = table.get("edits")
    if not isinstance(raw_edits, list) or not raw_edits:
        raise _fail(source, f"{where}.edits", "must be a non-empty list of tables")
    edits = []
    for n, raw in enumerate(raw_edits):
        at = f"{where}.edits[{n}]"
        if not isinstance(raw, dict):
            raise _fail(source, at, "must be a table")
        unknown = sorted(set(raw) - _EDIT_KEYS)
        if unknown:
            raise _fail(source, at, f"unknown key {unknown[0]!r}")
        edit = Edit(*(_text(source, at, raw, k) for k in ("file", "old", "new")))
        if not edit.file or not edit.old:
            raise _fail(source, at, "file and old are required")
        if edit.old == edit.new:
            raise _fail(source, at, "old and new are the same text")
        edits.append(edit)
    return Mutant(
        id=ident,
        title=_text(source, where, table, "title"),
        requirements=tuple(reqs),
        mirrors=_text(source, where, table, "mirrors"),
        description=_text(source, where, table, "description").strip(),
        edits=tuple(edits),
    )


def load_mutants(path: Path = MUTANTS_FILE) -> list[Mutant]:
    """Read and check the mutant list.

    Args:
        path: the TOML file (``[[mutant]]`` tables).

    Returns:
        The mutants, in file order.

    Raises:
        MutantError: the file is unreadable or a definition is malformed (the error
            names the file, the mutant and the key).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MutantError(f"{path}: {exc}") from None
    mutants = [_mutant(path, i, t) for i, t in enumerate(data.get("mutant", []))]
    seen: set[str] = set()
    for m in mutants:
        if m.id in seen:
            raise _fail(path, f"mutant {m.id!r}", "duplicate id")
        seen.add(m.id)
    return mutants


def mutated_files(mutant: Mutant, root: Path) -> dict[str, tuple[str, str]]:
    """The files ``mutant`` changes under ``root``: path -> (original, mutated) text.

    Raises:
        MutantError: a file is missing, a snippet is gone or occurs more than once, or
            the mutated Python does not parse. The message names the mutant and file.
    """
    out: dict[str, tuple[str, str]] = {}
    for edit in mutant.edits:
        target = root / edit.file
        if edit.file in out:
            original, text = out[edit.file]
        else:
            try:
                original = text = target.read_text(encoding="utf-8")
            except OSError as exc:
                raise MutantError(
                    f"mutant {mutant.id!r}: {edit.file}: cannot read ({exc.strerror}); "
                    "re-anchor the mutant where the code now lives"
                ) from None
        count = text.count(edit.old)
        if count != 1:
            why = "snippet not found" if count == 0 else f"snippet found {count} times"
            first = edit.old.strip().splitlines()[0] if edit.old.strip() else edit.old
            raise MutantError(f"mutant {mutant.id!r}: {edit.file}: {why} ({first!r}); re-anchor it")
        out[edit.file] = (original, text.replace(edit.old, edit.new))
    for name, (_, text) in out.items():
        if name.endswith(".py"):
            try:
                ast.parse(text, filename=name)
            except SyntaxError as exc:
                raise MutantError(
                    f"mutant {mutant.id!r}: {name}: mutated code does not parse "
                    f"(line {exc.lineno}: {exc.msg})"
                ) from None
    return out


def apply_mutant(mutant: Mutant, root: Path) -> dict[str, str]:
    """Write ``mutant`` into the tree at ``root`` (a scratch copy, never the work tree).

    Returns:
        The original text of every file changed, to restore with :func:`restore`.

    Raises:
        MutantError: as :func:`mutated_files`; nothing is written then.
    """
    changes = mutated_files(mutant, root)
    for name, (_, text) in changes.items():
        (root / name).write_text(text, encoding="utf-8")
    return {name: original for name, (original, _) in changes.items()}
