"""httpx over the engine's HTTPS network (the TLS-RPT report POST, RFC 8460 §5.4).

httpx drives HTTP/1.1; underneath it, an httpcore *network backend* of ours sends
every connection through :class:`~engine.io.https.HttpsNetwork`: names resolved by
the engine's resolver, addresses through the dialer, the TLS handshake completed
with library verification off and the peer chain judged at the engine clock before
any request is sent. With an HTTP CONNECT proxy, httpx tunnels through it and the
proxy resolves.

No keep-alive: httpcore scans every pooled connection on each request (O(N²) over
N hosts), and each POST goes to a collector of its own most of the time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
import sys
from collections.abc import Iterable

import httpcore
import httpx

from engine.core.clock import Clock
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.https import CertJudge, HttpsNetwork, HttpsRefused, tls_reason
from engine.io.netstream import AsyncioStream, open_tcp

__all__ = ["engine_http_client"]

# httpcore 1.0 runs ``import sniffio`` on every lock operation to detect trio. Without
# sniffio installed (anyio 4 no longer needs it), each of those imports fails only after
# a search of sys.path: several per request (bench/bench_resolve.py). Recording the
# absence once makes the failure immediate; httpcore then assumes asyncio, which is what
# we run.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: AsyncioStream, net: HttpsNetwork) -> None:
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
            # SNI carries the host name, as for the policy fetch.
            tls = await self._inner.start_tls(self._net.tls_context, host, timeout)
        except (httpcore.ConnectError, httpcore.ReadError, OSError, ssl.SSLError) as exc:
            raise HttpsRefused("tls", f"TLS handshake failed: {tls_reason(exc)}") from exc
        try:
            self._net.judge_peer(tls.get_extra_info("ssl_object"), host)
        except HttpsRefused:
            await tls.aclose()
            raise
        return tls

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, net: HttpsNetwork) -> None:
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

    def __init__(self, net: HttpsNetwork, proxy: str | None) -> None:
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
        transport=_Transport(HttpsNetwork(resolver, dialer, judge, clock), proxy),
        follow_redirects=False,  # RFC 8460 §5.4 names the one URI to POST to
        timeout=httpx.Timeout(timeout),
        headers=headers or {},
        trust_env=False,
    )
