"""The JSON report: every result as plain data, one document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.run.result import ScenarioResult

__all__ = ["report_dict", "write_json"]


def report_dict(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """``{"summary": {...}, "scenarios": [...]}`` for ``results``."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    return {
        "summary": {"total": len(results), **counts, "seconds": sum(r.seconds for r in results)},
        "scenarios": [asdict(r) for r in results],
    }


def write_json(results: Sequence[ScenarioResult], path: str | Path) -> None:
    """Write the JSON report to ``path``."""
    text = json.dumps(report_dict(results), indent=1, default=str, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
