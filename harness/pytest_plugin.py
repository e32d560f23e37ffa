"""pytest plugin: fixtures for every piece of the simulated world."""

from __future__ import annotations
