"""mta-sts-harness sending engine: MTA-STS (RFC 8461), DANE (RFC 7672), TLS-RPT (RFC 8460)."""

from __future__ import annotations

__version__ = "0.1.0"
