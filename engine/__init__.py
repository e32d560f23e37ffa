"""mta-sts-harness sending engine: MTA-STS (RFC 8461), DANE (RFC 7672), TLS-RPT (RFC 8460)."""

from __future__ import annotations

from engine import _cpython  # noqa: F401  (interpreter bug work-arounds, applied on import)

__version__ = "0.1.0"
