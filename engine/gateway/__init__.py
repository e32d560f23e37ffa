"""The gateway: SMTP in, a durable queue, delivery rounds, DSNs, the control socket.

* ``gateway``: the :class:`~engine.gateway.gateway.Gateway`, which owns everything
  below in one event loop and runs the rounds (one loop: serve, settle, advance);
* ``listener``: the injection listener (SMTP in; ``250`` only after the commit);
* ``queue``, ``queue_model``: the SQLite queue and its values;
* ``scheduler``: one round: due recipients out of the queue, grouped per domain, to
  the delivery agent; ``scheduler_outcome``: each outcome back into the queue, with
  its ``Delayed:``/``Bounced:`` line and DSN (``dsn``);
* ``control``: the control socket (``sts-engine status``, ``settle``, ``advance``).

The gateway composes the delivery agent (:mod:`engine.delivery`) and the TLS
reporter (:mod:`engine.tlsrpt`), which know nothing of it; only the commands sit
above it (``pyproject.toml``, ``[tool.importlinter]``).
"""
