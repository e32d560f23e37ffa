"""Writing a run's findings as a corpus: one JSON file per finding, plus ``index.json``.

Each finding file holds the input (base64, exact bytes; and a readable rendering),
our verdict with its rule id, reason and features, the target's verdict, the
direction, whether docs/decisions.md holds both readings defensible, the
generator label and how many generated inputs shared the finding. ``index.json``
holds the run (target, kind, seed, counts, rate, stop reason) and one row per file.
A directory that already holds an index is a previous corpus: the files it lists
are replaced, nothing else is touched.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from harness.parserfuzz.fuzz import Finding, FuzzOptions, FuzzResult
from harness.parserfuzz.oracle import BOTH_DEFENSIBLE

__all__ = ["finding_record", "read_input", "run_summary", "write_corpus"]

INDEX = "index.json"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]


def finding_record(finding: Finding) -> dict[str, Any]:
    """One finding as a JSON-ready mapping (the content of its corpus file)."""
    d = finding.disagreement
    return {
        "kind": d.kind.value,
        "direction": d.direction.value,
        "class": d.direction.name.lower(),
        "rule": d.ours.rule,
        "reason": d.ours.reason,
        "defensible": d.defensible,
        "defensible_why": BOTH_DEFENSIBLE.get(d.ours.rule) if d.defensible else None,
        "ours": {"accept": d.ours.accept, "detail": d.ours.detail, "features": d.ours.features},
        "target": {"accept": d.theirs.accept, "detail": d.theirs.detail},
        "label": finding.label,
        "instances": finding.instances,
        "shrunk": finding.shrunk,
        "input_base64": base64.b64encode(d.data).decode("ascii"),
        "input": d.data.decode("utf-8", "backslashreplace"),
    }


def run_summary(target: str, options: FuzzOptions, result: FuzzResult) -> dict[str, Any]:
    """The run's parameters and counts as a JSON-ready mapping."""
    tally = result.tally
    return {
        "target": target,
        "kind": options.kind.value,
        "seed": options.seed,
        "inputs": tally.inputs,
        "agreements": tally.agreements,
        "disagreements": tally.disagreements,
        "rate": round(tally.rate, 4),
        "by_class": {d.name.lower(): n for d, n in sorted(tally.by_direction.items())},
        "by_rule": {
            f"{d.name.lower()} {rule}": n for (d, rule), n in sorted(tally.by_rule.items())
        },
        "stopped": result.stopped,
        "elapsed_seconds": round(result.elapsed, 1),
    }


def write_corpus(
    directory: Path, target: str, options: FuzzOptions, result: FuzzResult
) -> list[Path]:
    """Write ``result``'s findings under ``directory`` (created if missing).

    Returns:
        The finding files written, in finding order (``index.json`` not included).

    Raises:
        OSError: the directory cannot be created or written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    index_path = directory / INDEX
    if index_path.exists():
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
            for row in old.get("findings", []):
                (directory / Path(str(row["file"])).name).unlink(missing_ok=True)
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not an index we wrote: leave the files alone, overwrite the index
    written = []
    rows = []
    for n, finding in enumerate(result.findings, 1):
        record = finding_record(finding)
        name = f"{n:03d}-{record['class']}-{record['rule'].lower()}-{_slug(record['reason'])}.json"
        path = directory / name
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
        rows.append(
            {
                "file": name,
                "class": record["class"],
                "rule": record["rule"],
                "reason": record["reason"],
                "defensible": record["defensible"],
                "instances": record["instances"],
            }
        )
    index = run_summary(target, options, result) | {"findings": rows}
    index_path.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return written


def read_input(path: Path) -> bytes:
    """The exact input bytes of a corpus file (to replay it against a target).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a finding file.
    """
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or "input_base64" not in record:
        raise ValueError(f"{path}: not a fuzz-parser finding (no 'input_base64')")
    return base64.b64decode(record["input_base64"])
