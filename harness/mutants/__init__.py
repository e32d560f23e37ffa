"""Mutation testing of the conformance catalog: how many broken senders does it catch?

``python -m harness.mutants`` (``tox -e mutants``) applies each mutant of
``mutants.toml`` alone to a scratch copy of the tree, runs the catalog there, and
prints which scenarios caught it and the score (:mod:`harness.mutants.runner`). The
mutants are data (:mod:`harness.mutants.model`); ``tests/mutants/`` checks that every
one still applies to the current tree.
"""

from __future__ import annotations

from harness.mutants.model import (
    MUTANTS_FILE,
    Edit,
    Mutant,
    MutantError,
    apply_mutant,
    load_mutants,
    mutated_files,
)
from harness.mutants.runner import (
    KILL_THRESHOLD,
    CatalogRun,
    MutantResult,
    make_scratch,
    run_catalog,
    run_mutant,
)

__all__ = [
    "KILL_THRESHOLD",
    "MUTANTS_FILE",
    "CatalogRun",
    "Edit",
    "Mutant",
    "MutantError",
    "MutantResult",
    "apply_mutant",
    "load_mutants",
    "make_scratch",
    "mutated_files",
    "run_catalog",
    "run_mutant",
]
