"""HTTPS policy fetch (RFC 8461 §3.3) on httpx, with our resolution and our verification.

Theory of operation
-------------------
The HTTPS plumbing is :mod:`engine.io.https`: ``mta-sts.<domain>`` is resolved
through the engine's own resolver and dialled through the :class:`Dialer`, the
certificate is judged at the engine's clock before any request is sent
(FETCH-2..6), and an HTTP CONNECT proxy is used when configured (the seed's
"via the proxy").

The rules of §3.3 live at the lines below: redirects never followed, 200
only, a capped streamed body, one overall timeout, no HTTP caching. The
media type and the body are judged by the pure core (``engine/core/discovery``).
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

from engine.core.clock import Clock
from engine.core.discovery import FetchErrorKind, FetchFailed, FetchOk, FetchOutcome
from engine.core.events import EventSink, LogEvent
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.https import CertJudge, HttpsRefused, engine_http_client

__all__ = ["CertJudge", "PolicyFetcher", "policy_url"]

_KINDS = {
    "dns": FetchErrorKind.DNS,
    "connect": FetchErrorKind.CONNECT,
    "tls": FetchErrorKind.TLS,
    "certificate": FetchErrorKind.CERTIFICATE,
}
MAX_BODY = 64 * 1024  # RFC 8461 §3.3: senders may limit the body; 64 KiB suggested
USER_AGENT = "mta-sts-harness/0.1 (+RFC 8461)"


def policy_url(domain: str) -> str:
    """RFC 8461 §3.2: ``https://mta-sts.<Policy Domain>/.well-known/mta-sts.txt``."""
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class PolicyFetcher:
    """Fetches policy bodies; never raises for a network outcome.

    Args:
        resolver: resolves ``mta-sts.<domain>``.
        dialer: where connections really go.
        judge: certificate judgement at the engine clock.
        clock: the engine clock.
        timeout: seconds for the whole fetch (FETCH-13; RFC suggests a minute).
        max_body: body cap in bytes (FETCH-12).
        proxy: ``host:port`` of an HTTP CONNECT proxy, or None.
        sink: event sink.
    """

    def __init__(
        self,
        resolver: DnsResolver,
        dialer: Dialer,
        judge: CertJudge,
        clock: Clock,
        *,
        timeout: float = 60.0,
        max_body: int = MAX_BODY,
        proxy: str | None = None,
        sink: EventSink | None = None,
    ) -> None:
        self.resolver = resolver
        self.dialer = dialer
        self.judge = judge
        self.clock = clock
        self.timeout = timeout
        self.max_body = max_body
        self.proxy = proxy
        self._sink = sink
        # RFC 8461 §3.3: the certificate must be valid for mta-sts.<domain> (FETCH-2..6),
        # judged at the engine's clock; redirects are never followed (FETCH-9).
        self._client = engine_http_client(
            resolver,
            dialer,
            judge,
            clock,
            timeout=timeout,
            proxy=proxy,
            headers={"User-Agent": USER_AGENT, "Accept": "text/plain"},
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def fetch(self, domain: str) -> FetchOutcome:
        """GET the policy of ``domain``."""
        url = policy_url(domain)
        if self.proxy is not None and self._sink is not None:
            self._sink.emit(
                LogEvent("sts.fetch.proxy", {"domain": domain}, "debug", self.clock.now())
            )
        try:
            async with asyncio.timeout(self.timeout):
                return await self._get(url)
        except TimeoutError:
            return FetchFailed(FetchErrorKind.TIMEOUT, "connection timeout")
        except HttpsRefused as exc:
            return FetchFailed(_KINDS[exc.kind], exc.detail)
        except httpx.TimeoutException:
            return FetchFailed(FetchErrorKind.TIMEOUT, "connection timeout")
        except httpx.ProxyError as exc:
            return FetchFailed(FetchErrorKind.CONNECT, f"proxy: {exc}")
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            return FetchFailed(FetchErrorKind.CONNECT, f"{type(exc).__name__}: {exc}")

    async def _get(self, url: str) -> FetchOutcome:
        # RFC 8461 §3.3 / FETCH-10: no HTTP caching, so no conditional request headers.
        async with self._client.stream("GET", url) as response:
            if 300 <= response.status_code < 400:
                location = response.headers.get("location", "")
                return FetchFailed(
                    FetchErrorKind.REDIRECT, f"HTTP {response.status_code} to {location!r}"
                )
            # RFC 8461 §3.3: only 200 yields a policy (FETCH-8).
            if response.status_code != 200:
                return FetchFailed(FetchErrorKind.STATUS, f"HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                return FetchFailed(FetchErrorKind.OVERSIZE, f"Content-Length {declared}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_body:
                    # FETCH-12: stop reading an oversize or endless body.
                    return FetchFailed(FetchErrorKind.OVERSIZE, f"body over {self.max_body} bytes")
            return FetchOk(bytes(body), response.headers.get("content-type"))
