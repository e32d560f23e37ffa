"""Compatibility import: moved to :mod:`harness.run.batch.child`.

Kept only until ``harness/commands/run.py`` imports the new path; new code imports
:mod:`harness.run.batch.child`.
"""

from __future__ import annotations

from harness.run.batch.child import run_engine, unavailable

__all__ = ["run_engine", "unavailable"]
