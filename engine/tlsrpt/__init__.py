"""TLS reporting (RFC 8460) for the gateway: sessions in, daily reports out.

* ``reporter``: the :class:`~engine.tlsrpt.reporter.TlsReporter`: it notes every
  ``tls.session`` event, aggregates per Policy Domain and UTC day (the core's
  :mod:`engine.core.tlsrpt`), and sends each day's reports when they fall due;
* ``sessions``: from one ``tls.session`` event to the session results it counts as;
* ``poster``: report POSTs over HTTPS, through the engine's resolver and dialer;
* ``dkim``: the DKIM signature of report mail (RPT-10).

The reporter is handed what it uses (the policy store, the clock, a sink, a random
source, an ``enqueue`` function for report mail and the engine's network); it
imports the core and the adapters (:mod:`engine.io`), never the delivery, the
gateway or the commands (``pyproject.toml``, ``[tool.importlinter]``).
"""
