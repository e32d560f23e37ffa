"""HTTPS policy fetch (RFC 8461 §3.3): one GET, with our resolution and our verification.

Theory of operation
-------------------
The connection is :func:`engine.io.https.open_https`: ``mta-sts.<domain>`` is
resolved through the engine's own resolver and dialled through the :class:`Dialer`,
or reached through the configured HTTP CONNECT proxy (the seed's "via the proxy");
the certificate is judged at the engine's clock before any request is sent
(FETCH-2..6). The request and response are HTTP/1.1 on that connection, read
strictly and with bounds by :mod:`engine.io.http11`: one request per connection,
closed afterwards with a TLS close_notify (RFC 8446 §6.1).

The rules of §3.3 live at the lines below: redirects never followed, 200 only, a
capped streamed body, one overall timeout, no HTTP caching. The media type and the
body are judged by the pure core (``engine/core/discovery``).
"""

from __future__ import annotations

import asyncio
import ssl

from engine.core.clock import Clock
from engine.core.discovery import FetchErrorKind, FetchFailed, FetchOk, FetchOutcome
from engine.core.events import EventSink, LogEvent
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.http11 import Exchange, HttpProtocolError
from engine.io.https import CertJudge, HttpsNetwork, HttpsRefused, open_https

__all__ = ["CertJudge", "PolicyFetcher", "policy_url"]

_KINDS = {
    "dns": FetchErrorKind.DNS,
    "connect": FetchErrorKind.CONNECT,
    "tls": FetchErrorKind.TLS,
    "certificate": FetchErrorKind.CERTIFICATE,
}
MAX_BODY = 64 * 1024  # RFC 8461 §3.3: senders may limit the body; 64 KiB suggested
USER_AGENT = "mta-sts-harness/0.1 (+RFC 8461)"
WELL_KNOWN = "/.well-known/mta-sts.txt"  # RFC 8461 §3.2
HTTPS_PORT = 443  # RFC 8461 §3.2 / FETCH-1: an "https" URL without a port


def policy_url(domain: str) -> str:
    """RFC 8461 §3.2: ``https://mta-sts.<Policy Domain>/.well-known/mta-sts.txt``."""
    return f"https://mta-sts.{domain}{WELL_KNOWN}"


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
        # judged at the engine's clock.
        self._net = HttpsNetwork(resolver, dialer, judge, clock)
        self._proxy = _endpoint(proxy) if proxy is not None else None

    async def aclose(self) -> None:
        """Nothing to release: no connection outlives its fetch."""

    async def fetch(self, domain: str) -> FetchOutcome:
        """GET the policy of ``domain``."""
        if self.proxy is not None and self._sink is not None:
            self._sink.emit(
                LogEvent("sts.fetch.proxy", {"domain": domain}, "debug", self.clock.now())
            )
        try:
            # FETCH-13: one deadline for the whole fetch, connection to last body byte.
            async with asyncio.timeout(self.timeout):
                return await self._get(f"mta-sts.{domain}", WELL_KNOWN)
        except TimeoutError:
            return FetchFailed(FetchErrorKind.TIMEOUT, "connection timeout")
        except HttpsRefused as exc:
            return FetchFailed(_KINDS[exc.kind], exc.detail)
        except (HttpProtocolError, OSError, ssl.SSLError) as exc:
            return FetchFailed(FetchErrorKind.CONNECT, f"{type(exc).__name__}: {exc}")

    async def _get(self, host: str, path: str) -> FetchOutcome:
        pipe = await open_https(self._net, host, HTTPS_PORT, self._proxy)
        try:
            exchange = Exchange(pipe)
            # RFC 8461 §3.3 / FETCH-10: no HTTP caching, so no conditional request
            # headers; identity only, so the body is the policy as served.
            exchange.send("GET", path, [*_headers(host), ("Accept-Encoding", "identity")])
            head = await exchange.response()
            # RFC 8461 §3.3 / FETCH-9: a redirect is never followed.
            if 300 <= head.status < 400:
                location = head.get("location") or ""
                return FetchFailed(FetchErrorKind.REDIRECT, f"HTTP {head.status} to {location!r}")
            # RFC 8461 §3.3: only 200 yields a policy (FETCH-8).
            if head.status != 200:
                return FetchFailed(FetchErrorKind.STATUS, f"HTTP {head.status}")
            coding = head.get("content-encoding")
            if coding is not None and coding.strip().lower() != "identity":
                return FetchFailed(
                    FetchErrorKind.BODY, f"Content-Encoding {coding!r} not asked for"
                )
            declared = head.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                return FetchFailed(FetchErrorKind.OVERSIZE, f"Content-Length {declared}")
            body = bytearray()
            async for chunk in exchange.body():
                body += chunk
                if len(body) > self.max_body:
                    # FETCH-12: stop reading an oversize or endless body.
                    return FetchFailed(FetchErrorKind.OVERSIZE, f"body over {self.max_body} bytes")
            return FetchOk(bytes(body), head.get("content-type"))
        finally:
            pipe.close()  # RFC 8446 §6.1: the TLS layer sends close_notify first


def _headers(host: str) -> list[tuple[str, str]]:
    # RFC 9112 §3.2: Host is the authority of the URL (port 443 left implicit).
    return [("Host", host), ("User-Agent", USER_AGENT), ("Accept", "text/plain")]


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)
