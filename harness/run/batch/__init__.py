"""The batch runner for black-box engines: one shared world, one engine lifetime.

* :mod:`~harness.run.batch.plan`: relabelling scenarios apart and grouping them into
  :class:`~harness.run.batch.plan.Batch` es;
* :mod:`~harness.run.batch.runner`: running one batch's steps and judging each scenario;
* :mod:`~harness.run.batch.child`: the parent/child split across a network namespace
  (:func:`~harness.run.batch.child.run_engine`).
"""

from __future__ import annotations

__all__: list[str] = []
