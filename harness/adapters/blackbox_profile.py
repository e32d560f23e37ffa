"""Compatibility import: moved to :mod:`harness.adapters.blackbox.profile`.

Kept only until ``harness/commands/run.py`` imports the new path; new code imports
:mod:`harness.adapters.blackbox.profile`.
"""

from __future__ import annotations

from harness.adapters.blackbox.profile import load_profile, profile_names

__all__ = ["load_profile", "profile_names"]
