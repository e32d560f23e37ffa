"""One delivery attempt for the recipients of one domain: policy, next hops, SMTP, TLS.

The modules, from the entry point down:

* ``agent``: the :class:`~engine.delivery.agent.Engine` (the delivery agent): it wires
  the adapters to the configuration and the clock and delivers messages, domain by
  domain; the gateway and the ``send`` command drive it;
* ``walk``: :func:`~engine.delivery.walk.deliver_domain`, the walk over one domain's
  hosts in order, asking the core which TLS each host needs;
* ``attempt``: what one attempt learns, and the one boundary that contains every fault
  of one MX (:class:`~engine.delivery.attempt.Trial`);
* ``session``: one SMTP connection: STARTTLS, the core's verdict, the transaction;
* ``nexthop``, ``mtasts``: MX, address and TLSA lookups; MTA-STS discovery and cache;
* ``services``: the bundle of adapters and settings one delivery sees.

This package imports the core, the adapters (:mod:`engine.io`) and
:mod:`engine.config`; never the gateway, TLS reporting or the commands
(``pyproject.toml``, ``[tool.importlinter]``).
"""
