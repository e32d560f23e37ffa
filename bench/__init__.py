"""Benchmarks: scripts that print figures and ratios and assert nothing (README, Benchmarks).

A package only so that the layer contract (``pyproject.toml``, ``[tool.importlinter]``)
can check that no benchmark imports the tests; each file runs as a script.
"""
