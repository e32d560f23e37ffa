"""harness.parserfuzz's public names (pinned, as tests/core/test_public_api.py does)."""

from __future__ import annotations

import importlib

import harness.parserfuzz as pf

MODULES = (
    "adapters",
    "compare",
    "corpus",
    "fuzz",
    "oracle",
    "policy_inputs",
    "targets",
    "txt_inputs",
)


def test_every_exported_name_exists() -> None:
    for name in pf.__all__:
        assert hasattr(pf, name), name
    for module in MODULES:
        mod = importlib.import_module(f"harness.parserfuzz.{module}")
        for name in mod.__all__:
            assert hasattr(mod, name), f"{module}.{name}"


def test_the_package_exports() -> None:
    assert sorted(pf.__all__) == [
        "BOTH_DEFENSIBLE", "CallableTarget", "CommandTarget", "Direction", "Disagreement",
        "Finding", "FuzzOptions", "FuzzResult", "Kind", "OracleVerdict", "Tally", "Target",
        "TargetError", "TargetVerdict", "compare", "finding_record", "fuzz", "inputs_for",
        "judge", "load_callable", "read_input", "run_summary", "write_corpus",
    ]  # fmt: skip
