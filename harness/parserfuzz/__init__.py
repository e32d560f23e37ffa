"""Differential fuzzing of other MTA-STS parsers against our strict reader.

``sts-harness fuzz-parser`` (harness/commands/fuzz_parser.py) drives it; the guide is
docs/parser-fuzzing.md. The pieces: :mod:`.oracle` (our verdict and its rule id),
:mod:`.compare` (disagreement classes and counts), :mod:`.policy_inputs` and
:mod:`.txt_inputs` (hypothesis strategies), :mod:`.fuzz` (the loop and the shrinking),
:mod:`.corpus` (the files written), :mod:`.adapters` (callable and command targets)
and :mod:`.targets` (other projects' parsers as worked examples). Everything but the
adapters and the corpus writer is free of I/O.
"""

from __future__ import annotations

from harness.parserfuzz.adapters import CallableTarget, CommandTarget, TargetError, load_callable
from harness.parserfuzz.compare import Direction, Disagreement, Tally, TargetVerdict, compare
from harness.parserfuzz.corpus import finding_record, read_input, run_summary, write_corpus
from harness.parserfuzz.fuzz import Finding, FuzzOptions, FuzzResult, Target, fuzz, inputs_for
from harness.parserfuzz.oracle import BOTH_DEFENSIBLE, Kind, OracleVerdict, judge

__all__ = [
    "BOTH_DEFENSIBLE",
    "CallableTarget",
    "CommandTarget",
    "Direction",
    "Disagreement",
    "Finding",
    "FuzzOptions",
    "FuzzResult",
    "Kind",
    "OracleVerdict",
    "Tally",
    "Target",
    "TargetError",
    "TargetVerdict",
    "compare",
    "finding_record",
    "fuzz",
    "inputs_for",
    "judge",
    "load_callable",
    "read_input",
    "run_summary",
    "write_corpus",
]
