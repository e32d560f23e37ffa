"""HTTPS on httpx, through the engine's own network: resolver, dialer, certificate judge.

Theory of operation
-------------------
httpx drives HTTP/1.1; underneath it, an httpcore *network backend* of ours
decides where TCP connections go and what TLS means. Both HTTPS users of the
engine — the MTA-STS policy fetch (RFC 8461 §3.3) and the TLS-RPT report POST
(RFC 8460 §5.4) — get it from :func:`engine_http_client`:

* host names are resolved through the engine's DNS resolver (never the system's),
  and the address goes through the :class:`~engine.io.dialer.Dialer`, so the
  harness's endpoint map and loopback-only guard apply;
* the TLS handshake completes with library verification off, the peer chain is
  captured, and the injected :class:`CertJudge` decides at the engine's clock
  whether it is acceptable; a rejected certificate closes the connection before
  any request is sent;
* with an HTTP CONNECT proxy, httpx tunnels through it and the proxy resolves.

Failures in this plumbing are raised as :class:`HttpsRefused` with a ``kind``
(``dns``, ``connect``, ``tls``, ``certificate``) that callers translate.

No keep-alive: each HTTPS user talks to a different host nearly every time, and
httpcore scans every pooled connection on each request (O(N²) over N hosts);
it also means every request's certificate is judged afresh at the engine clock.
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
from engine.core.pkix import rfc6125_match, verify_chain
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.netstream import open_tcp
from engine.io.tlschain import peer_chain_der

__all__ = [
    "CertJudge",
    "HttpsRefused",
    "engine_http_client",
    "no_verify_tls_context",
    "pkix_judge",
]

# httpcore 1.0 runs ``import sniffio`` on every lock operation to detect trio. Without
# sniffio installed (anyio 4 no longer needs it), each of those imports fails only after
# a search of sys.path: several per request, most of the fetcher's CPU time
# (bench/bench_resolve.py). Recording the absence once makes the failure immediate;
# httpcore then assumes asyncio, which is what we run.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


class CertJudge(Protocol):
    """Judges a server chain for a host name at the engine's clock."""

    def __call__(self, chain: list[bytes], host: str, now: float) -> str | None:
        """None if acceptable, else the reason it is not."""


class HttpsRefused(Exception):
    """The connection was not made or not trusted.

    Attributes:
        kind: ``dns`` | ``connect`` | ``tls`` | ``certificate``.
        detail: what happened.
    """

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(detail)


def pkix_judge(roots: list[bytes]) -> CertJudge:
    """The usual judge: a chain to one of ``roots``, valid at the engine clock, whose
    leaf has a DNS-ID naming the host (RFC 6125; RFC 8461 §3.3, FETCH-2..6)."""

    def judge(chain: list[bytes], host: str, now: float) -> str | None:
        verdict = verify_chain(chain, roots, now)
        if not verdict.ok:
            return verdict.reason or "certificate not valid"
        if not rfc6125_match(verdict.chain[0], host):
            return f"certificate does not match {host}"
        return None

    return judge


def no_verify_tls_context() -> ssl.SSLContext:
    """A client context that completes the handshake; the judge decides afterwards."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # judged at the engine clock by the CertJudge
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # FETCH-17, RFC 8996
    return ctx


class _Network:
    def __init__(
        self, resolver: DnsResolver, dialer: Dialer, judge: CertJudge, clock: Clock
    ) -> None:
        self.resolver, self.dialer, self.judge, self.clock = resolver, dialer, judge, clock
        self.tls_context = no_verify_tls_context()

    async def address_of(self, host: str) -> str:
        if host.replace(".", "").isdigit() or ":" in host:
            return host
        for rdtype in ("A", "AAAA"):
            answer = await self.resolver.query(host, rdtype)
            if answer.addresses():
                return answer.addresses()[0]
        raise HttpsRefused("dns", f"{host} does not resolve")


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, net: _Network) -> None:
        self._inner, self._net = inner, net

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
            # RFC 8461 §7.1 / FETCH-16: SNI carries the host name.
            tls = await self._inner.start_tls(self._net.tls_context, host, timeout)
        except (httpcore.ConnectError, httpcore.ReadError, OSError, ssl.SSLError) as exc:
            raise HttpsRefused("tls", f"TLS handshake failed: {_tls_reason(exc)}") from exc
        sslobj = tls.get_extra_info("ssl_object")
        chain = peer_chain_der(sslobj) if sslobj is not None else []
        problem = self._net.judge(chain, host, self._net.clock.now())
        if problem is not None:
            await tls.aclose()
            raise HttpsRefused("certificate", problem)
        return tls

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


def _tls_reason(exc: BaseException) -> str:
    """The most specific text in an exception chain (httpcore wraps ssl errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and seen.reason:
            return str(seen.reason)
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, net: _Network) -> None:
        self._net = net

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._net.address_of(host)
        real_host, real_port = self._net.dialer.resolve(address, port)
        try:
            inner = await open_tcp(real_host, real_port, timeout)
        except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
            raise HttpsRefused("connect", f"cannot connect to {host}:{port}") from exc
        return _Stream(inner, self._net)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport with our network backend (the one private attribute we set)."""

    def __init__(self, net: _Network, proxy: str | None) -> None:
        # Our context, so httpx does not load the system CA bundle (40 ms) for a pool
        # that is replaced just below.
        super().__init__(verify=net.tls_context)
        backend = _Backend(net)
        if proxy is None:
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=net.tls_context,
                network_backend=backend,
                max_connections=100,
                max_keepalive_connections=0,
            )
        else:
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=f"http://{proxy}",
                ssl_context=net.tls_context,
                network_backend=backend,
                max_connections=100,
                max_keepalive_connections=0,
            )


def engine_http_client(
    resolver: DnsResolver,
    dialer: Dialer,
    judge: CertJudge,
    clock: Clock,
    *,
    timeout: float,
    proxy: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An httpx client that uses the engine's resolver, dialer and certificate judge.

    Redirects are never followed and the environment (proxies, netrc) is ignored:
    only what is configured applies.
    """
    return httpx.AsyncClient(
        transport=_Transport(_Network(resolver, dialer, judge, clock), proxy),
        follow_redirects=False,  # RFC 8461 §3.3: redirects MUST NOT be followed (FETCH-9)
        timeout=httpx.Timeout(timeout),
        headers=headers or {},
        trust_env=False,
    )
