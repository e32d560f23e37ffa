"""HTTPS through the engine's own network: resolver, dialer, certificate judge.

Theory of operation
-------------------
Both HTTPS users of the engine reach their host the same way:

* host names are resolved through the engine's DNS resolver (never the system's),
  and the address goes through the :class:`~engine.io.dialer.Dialer`, so the
  harness's endpoint map and loopback-only guard apply;
* with an HTTP CONNECT proxy, the proxy is dialled instead and asked for a tunnel
  to ``host:port`` (it resolves the name);
* the TLS handshake completes with library verification off, the peer chain is
  captured, and the injected :class:`CertJudge` decides at the engine's clock
  whether it is acceptable; a rejected certificate closes the connection before
  any request is sent.

The MTA-STS policy fetch (RFC 8461 §3.3, :mod:`engine.io.fetch`) makes its one GET
on :func:`open_https` with :mod:`engine.io.http11` (on an asyncio protocol). The
TLS-RPT report POST (RFC 8460 §5.4) uses httpx over this same network
(:mod:`engine.io.httpxnet`).

Failures in this plumbing are raised as :class:`HttpsRefused` with a ``kind``
(``dns``, ``connect``, ``tls``, ``certificate``) that callers translate.

No keep-alive: each HTTPS user talks to a different host nearly every time, so
every request's certificate is judged afresh at the engine clock.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Protocol

from engine.core.clock import Clock
from engine.core.pkix import load_certificate, rfc6125_match, verify_chain
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.http11 import HttpProtocolError, open_tunnel
from engine.io.pipe import Pipe, connect
from engine.io.tlschain import peer_chain_der

__all__ = [
    "CertJudge",
    "HttpsNetwork",
    "HttpsRefused",
    "no_verify_tls_context",
    "open_https",
    "pkix_judge",
    "tls_reason",
]


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


def pkix_judge(roots: Sequence[bytes]) -> CertJudge:
    """The usual judge: a chain to one of ``roots``, valid at the engine clock, whose
    leaf has a DNS-ID naming the host (RFC 6125; RFC 8461 §3.3, FETCH-2..6)."""
    # Parsed once here rather than on every judgement.
    anchors = [load_certificate(r) for r in roots]

    def judge(chain: list[bytes], host: str, now: float) -> str | None:
        verdict = verify_chain(chain, anchors, now)
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


class HttpsNetwork:
    """Where HTTPS connections go and which certificates are acceptable.

    Args:
        resolver: resolves host names (A, then AAAA).
        dialer: where a connection to an address really goes.
        judge: decides on the peer's chain at the engine clock.
        clock: the engine clock.
    """

    def __init__(
        self, resolver: DnsResolver, dialer: Dialer, judge: CertJudge, clock: Clock
    ) -> None:
        self.resolver, self.dialer, self.judge, self.clock = resolver, dialer, judge, clock
        self.tls_context = no_verify_tls_context()

    async def address_of(self, host: str) -> str:
        """An address of ``host`` from the engine's resolver (an address as is).

        Raises:
            HttpsRefused: ``dns``, the name has no A or AAAA record.
        """
        if host.replace(".", "").isdigit() or ":" in host:
            return host
        for rdtype in ("A", "AAAA"):
            answer = await self.resolver.query(host, rdtype)
            if answer.addresses():
                return answer.addresses()[0]
        raise HttpsRefused("dns", f"{host} does not resolve")

    async def open_tcp(self, host: str, port: int) -> Pipe:
        """A TCP connection to ``host:port``, resolved and dialled the engine's way.

        Raises:
            HttpsRefused: ``dns`` or ``connect``.
            DialRefused: the dialer will not go there (loopback-only mode).
        """
        address = await self.address_of(host)
        real_host, real_port = self.dialer.resolve(address, port)
        try:
            return await connect(real_host, real_port)
        except OSError as exc:
            raise HttpsRefused("connect", f"cannot connect to {host}:{port}") from exc

    def judge_peer(self, ssl_object: ssl.SSLObject | None, host: str) -> None:
        """Judge the chain of a completed handshake for ``host`` at the engine clock.

        Raises:
            HttpsRefused: ``certificate``, with the judge's reason.
        """
        chain = peer_chain_der(ssl_object) if ssl_object is not None else []
        problem = self.judge(chain, host, self.clock.now())
        if problem is not None:
            raise HttpsRefused("certificate", problem)


async def open_https(
    net: HttpsNetwork, host: str, port: int, proxy: tuple[str, int] | None
) -> Pipe:
    """A TLS connection to ``host:port`` whose certificate the judge accepted.

    Args:
        net: the engine's network.
        host: the server's name: SNI and the name the certificate must carry.
        port: the server's port.
        proxy: an HTTP CONNECT proxy (host, port) to tunnel through, or None.

    Raises:
        HttpsRefused: ``dns``, ``connect`` (the proxy refusing included), ``tls`` or
            ``certificate``; the connection is closed.
        HttpProtocolError: the proxy's answer is not HTTP, or came with extra bytes.
    """
    if proxy is None:
        pipe = await net.open_tcp(host, port)
    else:
        pipe = await _tunnel(net, proxy, host, port)
    try:
        try:
            # RFC 8461 §7.1 / FETCH-16: SNI carries the host name.
            await pipe.start_tls(net.tls_context, server_hostname=host)
        except ValueError as exc:  # bytes before the handshake: not from the server
            raise HttpProtocolError(f"proxy: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpsRefused("tls", f"TLS handshake failed: {tls_reason(exc)}") from exc
        net.judge_peer(pipe.get_extra_info("ssl_object"), host)  # type: ignore[arg-type]
    except BaseException:
        pipe.close()
        raise
    return pipe


async def _tunnel(net: HttpsNetwork, proxy: tuple[str, int], host: str, port: int) -> Pipe:
    # The proxy resolves the name; we only dial the proxy.
    pipe = await net.open_tcp(*proxy)
    authority = f"{host}:{port}"
    try:
        status = await open_tunnel(pipe, authority)
        if not 200 <= status < 300:
            raise HttpsRefused("connect", f"proxy: CONNECT {authority} answered {status}")
    except BaseException:
        pipe.close()
        raise
    return pipe


def tls_reason(exc: BaseException) -> str:
    """The most specific text in an exception chain (httpcore wraps ssl errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and seen.reason:
            return str(seen.reason)
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__
