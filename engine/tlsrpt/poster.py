"""HTTPS submission of TLS reports (RFC 8460 §5.4) on httpx, through the engine's network.

The HTTPS plumbing is :mod:`engine.io.https`, as for the policy fetch, with httpx
over it (:mod:`engine.io.httpxnet`): the collector's name is resolved through the
engine's resolver, dialled through the engine's :class:`~engine.io.dialer.Dialer`
(the harness endpoint map, the loopback guard), and its certificate judged at the
engine clock (a chain to a trusted root naming the host). RPT-8 allows ignoring
validation errors; we do not, so a collector with a bad certificate is retried like
one that is down.
"""

from __future__ import annotations

import ssl

import httpx

from engine.core.clock import Clock
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.https import HttpsRefused, pkix_judge
from engine.io.httpxnet import engine_http_client

__all__ = ["ReportPoster"]

REPORT_CONTENT_TYPE = "application/tlsrpt+gzip"  # RFC 8460 §5.4 / RPT-13, RPT-14


class ReportPoster:
    """POSTs gzipped reports; never raises for a network outcome.

    Args:
        resolver: the engine's resolver.
        dialer: the engine's dialer.
        roots: trusted roots (DER).
        clock: the engine clock (certificate validity).
        timeout: seconds per POST.
    """

    def __init__(
        self,
        resolver: DnsResolver,
        dialer: Dialer,
        roots: list[bytes],
        clock: Clock,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.resolver, self.dialer, self.roots, self.clock = resolver, dialer, roots, clock
        # RPT-8 allows ignoring validation errors; we do not: a collector with a bad
        # certificate is retried like one that is down.
        self._client = engine_http_client(
            resolver, dialer, pkix_judge(roots), clock, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def post(self, url: str, body: bytes) -> tuple[bool, str]:
        """POST one report.

        Returns:
            (accepted, detail): RFC 8460 §5.4 / RPT-14: 200 or 201 is success.
        """
        try:
            response = await self._client.post(
                url, content=body, headers={"Content-Type": REPORT_CONTENT_TYPE}
            )
        except (HttpsRefused, httpx.HTTPError, OSError, ssl.SSLError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return response.status_code in (200, 201), f"HTTP {response.status_code}"
