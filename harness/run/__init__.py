"""Running scenarios: one at a time against any adapter, or batched for black boxes.

* :mod:`harness.run.steps`: the one step loop (act, settle, observe, check) both
  runners use, and ``[expect] config_error``'s refusal check;
* :mod:`harness.run.result`: the plain-data results and the verdict over them;
* :mod:`harness.run.single`: one scenario, one world, one engine (``sts-harness run``,
  the pytest items);
* :mod:`harness.run.batch`: many scenarios against one black-box engine, batched
  into shared worlds inside a network namespace.
"""

from __future__ import annotations

__all__: list[str] = []
