"""Running scenarios: one at a time against any adapter, or batched for black boxes.

* :mod:`harness.run.batch`: many scenarios against one black-box engine, batched
  into shared worlds inside a network namespace.
"""

from __future__ import annotations

__all__: list[str] = []
