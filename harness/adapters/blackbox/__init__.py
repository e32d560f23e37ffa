"""Black-box engines: real MTAs (Postfix, chasquid, ...) driven through a profile.

* :mod:`~harness.adapters.blackbox.adapter`: :class:`BlackBoxEngine`, the
  :class:`~harness.adapters.base.EngineUnderTest` for any profile of ``fixtures/engines/``;
* :mod:`~harness.adapters.blackbox.profile`: reading and rendering a profile;
* :mod:`~harness.adapters.blackbox.check`: ``sts-harness profile check``, a profile
  validated without starting it;
* :mod:`~harness.adapters.blackbox.drivers`: what each MTA's log lines mean;
* :mod:`~harness.adapters.blackbox.proc`: the MTA's processes, started and stopped;
* :mod:`~harness.adapters.blackbox.fit`: what of a scenario a fixed profile can run.

Running many scenarios against one black box (relabelled, batched into shared worlds,
inside a network namespace) is the batch runner's work: :mod:`harness.run.batch`.
"""

from __future__ import annotations

__all__: list[str] = []
