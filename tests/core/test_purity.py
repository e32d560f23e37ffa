"""The core is pure: no I/O imports, no reading of the clock (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "engine" / "core"

FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "subprocess",
    "httpx",
    "httpcore",
    "dns",
    "aiosmtplib",
    "aiosmtpd",
    "sqlite3",
    "time",
    "urllib",
    "http",
    "random",
}
# Attribute reads that consult the wall clock or a global random source.
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def core_modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def clock_reads(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in FORBIDDEN_CALLS
        ):
            found.append(f"{node.value.id}.{node.attr} at line {node.lineno}")
    return found


def test_core_has_modules() -> None:
    assert len(core_modules()) >= 5


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = imported_roots(tree) & FORBIDDEN_MODULES
    assert not bad, f"{path.name} imports {sorted(bad)}: the core must stay sans-IO"


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert clock_reads(tree) == [], f"{path.name} reads the clock; pass `now` in instead"


def test_scanner_catches_violations() -> None:
    # Negative control: the scanner itself must flag an impure module.
    tree = ast.parse("import asyncio\nfrom dns import resolver\nx = datetime.now()\n")
    assert imported_roots(tree) & FORBIDDEN_MODULES == {"asyncio", "dns"}
    assert clock_reads(tree) == ["datetime.now at line 3"]


# C sources in the core may use the Python C API and memory/string functions only:
# no sockets, files, clocks, threads or randomness.
ALLOWED_C_HEADERS = {"Python.h", "string.h"}


@pytest.mark.parametrize("path", sorted(CORE.glob("*.c")), ids=lambda p: p.name)
def test_core_c_source_includes_only_pure_headers(path: Path) -> None:
    included = set(re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', path.read_text(), re.M))
    assert included, f"{path.name}: no #include found; the check is not reading it"
    extra = sorted(included - ALLOWED_C_HEADERS)
    assert not extra, f"{path.name} includes {extra}: the core must stay sans-IO"
