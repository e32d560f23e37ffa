"""HTTPS submission of TLS reports (RFC 8460 §5.4) on httpx, through the engine's network.

The same pattern as :mod:`engine.io.fetch`: an httpcore network backend of ours
resolves the collector's name through the engine's resolver, dials through the
engine's :class:`~engine.io.dialer.Dialer` (the harness endpoint map, the
loopback guard), and judges the certificate at the engine clock (a chain to a
trusted root naming the host). RPT-8 allows ignoring validation errors; we do
not, so a collector with a bad certificate is retried like one that is down.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httpx

from engine.core.clock import Clock
from engine.core.pkix import rfc6125_match, verify_chain
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.tlschain import peer_chain_der

__all__ = ["ReportPoster"]

REPORT_CONTENT_TYPE = "application/tlsrpt+gzip"  # RFC 8460 §5.4 / RPT-13, RPT-14


class _Refused(Exception):
    pass


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, poster: ReportPoster) -> None:
        self._inner, self._poster = inner, poster

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
        tls = await self._inner.start_tls(self._poster.tls_context, host, timeout)
        sslobj = tls.get_extra_info("ssl_object")
        chain = peer_chain_der(sslobj) if sslobj is not None else []
        verdict = verify_chain(chain, self._poster.roots, self._poster.clock.now())
        if not verdict.ok or not rfc6125_match(verdict.chain[0], host):
            await tls.aclose()
            raise _Refused(f"certificate of {host} not valid: {verdict.reason or 'name'}")
        return tls

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, poster: ReportPoster) -> None:
        self._poster = poster
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = host
        if not (host.replace(".", "").isdigit() or ":" in host):
            answer = await self._poster.resolver.query(host, "A")
            if not answer.addresses():
                raise _Refused(f"{host} does not resolve")
            address = answer.addresses()[0]
        real = self._poster.dialer.resolve(address, port)
        inner = await self._inner.connect_tcp(real[0], real[1], timeout)
        return _Stream(inner, self._poster)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    def __init__(self, poster: ReportPoster) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=poster.tls_context, network_backend=_Backend(poster)
        )


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
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # judged at the engine clock in _Stream.start_tls
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls_context = ctx
        self._client = httpx.AsyncClient(
            transport=_Transport(self),
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            trust_env=False,
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
        except (_Refused, httpx.HTTPError, OSError, ssl.SSLError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return response.status_code in (200, 201), f"HTTP {response.status_code}"
