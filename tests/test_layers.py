"""The layer contract holds: ``lint-imports`` keeps every contract of ``pyproject.toml``.

The contracts (``[tool.importlinter]``) say which package may import which: the
engine's layers from ``engine.cli`` down to ``engine.core``, the core and the adapters
importing nothing above them, and no engine, harness or benchmark code importing the
tests; the harness's layers from its commands down to the world, whose model reads no
engine configuration. ``docs/architecture.md`` draws the same picture.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which(
        "lint-imports"
    )
    assert tool, "lint-imports is not installed: pip install -e '.[test]'"
    return subprocess.run(
        [tool, "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_every_import_contract_is_kept() -> None:
    run = _lint_imports()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout and "8 kept" in run.stdout


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    # Negative control: the linter reads our code (the delivery does use the adapters).
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["engine"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "the delivery without the adapters"\n'
        'type = "forbidden"\n'
        'source_modules = ["engine.delivery"]\n'
        'forbidden_modules = ["engine.io"]\n'
    )
    run = _lint_imports(str(config))
    assert run.returncode == 1
    assert "the delivery without the adapters BROKEN" in run.stdout
    assert "engine.delivery.session -> engine.io.smtp" in run.stdout


def test_the_harness_layers_are_read_from_our_code(tmp_path: Path) -> None:
    # Negative control for the harness contract: turned upside down, it breaks on a
    # real import (a scenario reads its world spec).
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["harness"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "the world above the scenarios"\n'
        'type = "layers"\n'
        'containers = ["harness"]\n'
        'layers = ["world", "scenario"]\n'
    )
    run = _lint_imports(str(config))
    assert run.returncode == 1
    assert "the world above the scenarios BROKEN" in run.stdout
    assert "harness.scenario.loader -> harness.world.spec" in run.stdout
