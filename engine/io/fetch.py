"""HTTPS policy fetch (RFC 8461 §3.3) on httpx, with our resolution and our verification.

Theory of operation
-------------------
httpx drives HTTP/1.1; underneath it, an httpcore *network backend* of ours
decides where TCP connections go and what TLS means:

* ``mta-sts.<domain>`` is resolved through the engine's own DNS resolver (not
  the system's), and the address goes through the :class:`Dialer` (so the
  harness's endpoint map and loopback-only guard apply).
* The TLS handshake completes with library verification off, the peer chain
  is captured, and the injected :class:`CertJudge` decides at the engine's
  clock whether it chains to a trusted root and names the host (FETCH-2..6).
  A rejected certificate closes the connection before any request is sent.
* With an HTTP CONNECT proxy configured (the seed's "via the proxy"), httpx
  tunnels through it and the proxy resolves the name.

The rules of §3.3 live at the lines below: redirects never followed, 200
only, a capped streamed body, one overall timeout, no HTTP caching. The
media type and the body are judged by the pure core (``engine/core/discovery``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
import sys
from collections.abc import Iterable
from typing import Protocol

import httpcore
import httpx

from engine.core.clock import Clock
from engine.core.discovery import FetchErrorKind, FetchFailed, FetchOk, FetchOutcome
from engine.core.events import EventSink, LogEvent
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.tlschain import peer_chain_der

__all__ = ["CertJudge", "PolicyFetcher", "policy_url"]

# httpcore 1.0 runs ``import sniffio`` on every lock operation to detect trio. Without
# sniffio installed (anyio 4 no longer needs it), each of those imports fails only after
# a search of sys.path: several per fetch, most of the fetcher's CPU time
# (bench/bench_resolve.py). Recording the absence once makes the failure immediate;
# httpcore then assumes asyncio, which is what we run.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

MAX_BODY = 64 * 1024  # RFC 8461 §3.3: senders may limit the body; 64 KiB suggested
USER_AGENT = "mta-sts-harness/0.1 (+RFC 8461)"


def policy_url(domain: str) -> str:
    """RFC 8461 §3.2: ``https://mta-sts.<Policy Domain>/.well-known/mta-sts.txt``."""
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class CertJudge(Protocol):
    """Judges a server chain for a host name at the engine's clock."""

    def __call__(self, chain: list[bytes], host: str, now: float) -> str | None:
        """None if acceptable, else the reason it is not."""


class _Rejected(Exception):
    def __init__(self, kind: FetchErrorKind, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(detail)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, fetcher: PolicyFetcher) -> None:
        self._inner = inner
        self._fetcher = fetcher

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        host = server_hostname or ""
        try:
            # RFC 8461 §7.1 / FETCH-16: SNI carries the policy host name.
            tls = await self._inner.start_tls(self._fetcher.tls_context, host, timeout)
        except (httpcore.ConnectError, httpcore.ReadError, OSError, ssl.SSLError) as exc:
            raise _Rejected(FetchErrorKind.TLS, f"TLS handshake failed: {exc}") from exc
        sslobj = tls.get_extra_info("ssl_object")
        chain = peer_chain_der(sslobj) if sslobj is not None else []
        # RFC 8461 §3.3: the certificate must be valid for mta-sts.<domain> (FETCH-2..6),
        # judged at the engine's clock.
        problem = self._fetcher.judge(chain, host, self._fetcher.clock.now())
        if problem is not None:
            await tls.aclose()
            raise _Rejected(FetchErrorKind.CERTIFICATE, problem)
        return tls

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, fetcher: PolicyFetcher) -> None:
        self._fetcher = fetcher
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._fetcher.address_of(host)
        real_host, real_port = self._fetcher.dialer.resolve(address, port)
        try:
            inner = await self._inner.connect_tcp(real_host, real_port, timeout)
        except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
            raise _Rejected(FetchErrorKind.CONNECT, f"cannot connect to {host}:{port}") from exc
        return _Stream(inner, self._fetcher)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport with our network backend (the one private attribute we set)."""

    def __init__(self, fetcher: PolicyFetcher, proxy: str | None) -> None:
        super().__init__()
        backend = _Backend(fetcher)
        # No keep-alive: policy fetches go to a different host each time (one per Policy
        # Domain, once per max_age), so idle connections are never reused; httpcore scans
        # every pooled connection on each request, which made N domains cost O(N^2)
        # (bench/bench_resolve.py). It also means every fetch presents the certificate
        # afresh, judged at the engine's clock (RFC 8461 §3.3), never a pooled session.
        if proxy is None:
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=fetcher.tls_context,
                network_backend=backend,
                max_connections=100,
                max_keepalive_connections=0,
            )
        else:
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=f"http://{proxy}",
                ssl_context=fetcher.tls_context,
                network_backend=backend,
                max_connections=100,
                max_keepalive_connections=0,
            )


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
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # judged by `judge` at the engine clock instead
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # FETCH-17, RFC 8996
        self.tls_context = ctx
        self._client = httpx.AsyncClient(
            transport=_Transport(self, proxy),
            follow_redirects=False,  # RFC 8461 §3.3: redirects MUST NOT be followed (FETCH-9)
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "text/plain"},
            trust_env=False,  # no environment proxies or netrc: only what is configured
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def address_of(self, host: str) -> str:
        """An address for ``host`` through our resolver (IP literals pass through)."""
        if host.replace(".", "").isdigit() or ":" in host:
            return host
        for rdtype in ("A", "AAAA"):
            answer = await self.resolver.query(host, rdtype)
            if answer.addresses():
                return answer.addresses()[0]
        raise _Rejected(FetchErrorKind.DNS, f"{host} does not resolve")

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
        except _Rejected as exc:
            return FetchFailed(exc.kind, exc.detail)
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
