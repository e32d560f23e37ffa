"""The world's MTA-STS policy hosts: one hypercorn server, virtual hosts chosen by SNI.

Theory of operation
-------------------
A world may hold many policy hosts (``mta-sts.<domain>``). They all live in one
:class:`PolicyHost`, which runs one :class:`~harness.world.web._server.TlsAsgiServer` and
one listening socket per distinct 127.x address (port 0; :attr:`PolicyHost.ports` maps the
address to the real port, which the engine's dialer maps 443 onto). Several hosts may share
an address, like a hosting provider; each address is then a small virtual-hosting server:

* TLS: the address's base context presents the default certificate (``default.invalid``).
  Its ``sni_callback`` switches the handshake to the context of the host on *that address*
  whose name equals the SNI; unknown SNI or no SNI keeps the default (RFC 8461 §7.1,
  FETCH-16). Every ClientHello is logged (:class:`ClientHello`), even when the client then
  rejects the certificate, so tests can see the SNI of a failed fetch.
* TLS versions: a host may limit the protocol range (``tls_min``/``tls_max``; FETCH-17
  offers only TLS 1.0/1.1). OpenSSL keeps the protocol limits and cipher list of the
  context a connection *started* on across an SNI switch, so the range is a property of
  the address's listener: its base context gets it (and ``@SECLEVEL=0`` below TLS 1.2,
  as :func:`certs.server_context` does), and so does the host's own context, since the
  switch brings that context's security level. Hosts sharing an address share a range.
* HTTP: the ``Host`` header picks the host among those on the address; only
  ``/.well-known/mta-sts.txt`` is the policy path (RFC 8461 §3.2); anything else is 404.

Each host's behaviour is a frozen :class:`PolicyResponse`, replaced (never mutated) by
:meth:`PolicyHost.set_response` / :meth:`PolicyHost.update` between steps; the request log
keeps the snapshot that served each request. Misbehaviours (FETCH-8..13): any status,
missing Content-Type, extra headers, redirects, hang before headers, slow body, oversize
bodies with and without Content-Length, an endless chunked body, and a TCP reset once the
request has arrived. Hangs and trickles end when the client leaves or the server closes.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import trustme

from certs import server_context as limited_server_context
from harness.world.web._server import (
    CertPair,
    Connection,
    Receive,
    Scope,
    Send,
    TlsAsgiServer,
    header,
    new_server_context,
    require_loopback,
    server_context,
)
from harness.world.web.behaviour import PolicyBehaviour, PolicyResponse

__all__ = [
    "DEFAULT_CERT_NAME",
    "POLICY_PATH",
    "ClientHello",
    "PolicyHost",
    "PolicyRequest",
]

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.2
DEFAULT_CERT_NAME = "default.invalid"  # FETCH-16: what a client without the right SNI gets
_BLOCK = (b"#" * 63 + b"\n") * 256  # 16 KiB of filler for oversize bodies


@dataclass(frozen=True, slots=True)
class ClientHello:
    """One TLS ClientHello seen by a policy host address.

    Attributes:
        address: the local address it arrived on.
        sni: the server name the client sent (lower case), or None.
        cert_name: the host whose certificate was chosen, or ``DEFAULT_CERT_NAME``.
    """

    address: str
    sni: str | None
    cert_name: str


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One HTTP request that reached a policy host.

    Attributes:
        method: e.g. ``"GET"``.
        path: the request path (no query).
        host: the Host header's name (lower case, no port), or None.
        sni: the connection's SNI, or None.
        headers: request headers as received, names lower case.
        address: the local address the request arrived on.
        port: the local port.
        client: the client's (address, port).
        tls_version: the negotiated protocol, e.g. ``"TLSv1.3"``.
        site: the configured host that handled it, or None.
        served: the response snapshot used, or None when the answer was 404.
    """

    method: str
    path: str
    host: str | None
    sni: str | None
    headers: tuple[tuple[str, str], ...]
    address: str
    port: int
    client: tuple[str, int]
    tls_version: str | None
    site: str | None
    served: PolicyResponse | None

    def header(self, name: str) -> str | None:
        """The first value of request header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)


# A protocol range (lowest, highest); None: OpenSSL's default at that end.
_TlsRange = tuple[ssl.TLSVersion | None, ssl.TLSVersion | None]
_DEFAULT_RANGE: _TlsRange = (None, None)


@dataclass(slots=True)
class _Site:
    name: str
    address: str
    context: ssl.SSLContext
    response: PolicyResponse
    tls: _TlsRange = _DEFAULT_RANGE


def _context(cert: CertPair, tls: _TlsRange) -> ssl.SSLContext:
    if tls == _DEFAULT_RANGE:
        return server_context(cert)  # the shared, cached one
    chain, key = cert
    return limited_server_context(
        key.rstrip(b"\n") + b"\n" + chain, min_version=tls[0], max_version=tls[1]
    )


def _name(value: str) -> str:
    return value.strip().rstrip(".").lower()


@functools.lru_cache(maxsize=1)
def _throwaway_default_cert() -> CertPair:
    # Issued by a CA that exists only here, so no client trusts it.
    cert = trustme.CA().issue_cert(DEFAULT_CERT_NAME)
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return chain, cert.private_key_pem.bytes()


class PolicyHost:
    """All policy hosts of a world on one hypercorn server (async context manager).

    Args:
        default_cert: (chain PEM, key PEM) presented without a matching SNI; by default
            a ``default.invalid`` certificate from a CA nobody trusts.
        handshake_timeout: seconds a client may take for the TLS handshake.
    """

    def __init__(
        self, *, default_cert: CertPair | None = None, handshake_timeout: float = 5.0
    ) -> None:
        self._default_cert = default_cert
        self._server = TlsAsgiServer(self._app, handshake_timeout=handshake_timeout)
        self._sites: dict[str, _Site] = {}
        self._ports: dict[str, int] = {}
        self._ranges: dict[str, _TlsRange] = {}
        self._sni: weakref.WeakKeyDictionary[ssl.SSLObject, str | None] = (
            weakref.WeakKeyDictionary()
        )
        self._log: list[PolicyRequest] = []
        self._hellos: list[ClientHello] = []
        self._running = False

    async def __aenter__(self) -> PolicyHost:
        self._running = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        await self._server.aclose()

    async def add_host(
        self,
        name: str,
        *,
        address: str,
        cert: CertPair,
        response: PolicyResponse | None = None,
        tls_min: ssl.TLSVersion | None = None,
        tls_max: ssl.TLSVersion | None = None,
    ) -> tuple[str, int]:
        """Add a policy host; its address starts listening if it is new.

        Args:
            name: the host name, e.g. ``"mta-sts.example.com"``.
            address: its 127.0.0.0/8 address (may be shared with other hosts).
            cert: (chain PEM, key PEM) presented when the SNI is ``name``.
            response: initial behaviour; by default 200 with an empty text/plain body.
            tls_min: the lowest TLS version offered (None: OpenSSL's default).
            tls_max: the highest TLS version offered (None: the highest supported).
                The range belongs to the address's listener (see the module docstring).

        Returns:
            The (address, port) the host is reachable on.

        Raises:
            NotLoopbackError: ``address`` is outside 127.0.0.0/8.
            ValueError: ``name`` was already added, or the address already listens
                with another TLS range.
            RuntimeError: the PolicyHost is not running.
        """
        if not self._running:
            raise RuntimeError("PolicyHost.add_host needs a running PolicyHost (async with)")
        key, address, tls = _name(name), require_loopback(address), (tls_min, tls_max)
        if key in self._sites:
            raise ValueError(f"policy host {name!r} was already added")
        if self._ranges.get(address, tls) != tls:
            raise ValueError(
                f"policy host {name!r} wants TLS range {tls!r}, but {address} already "
                f"listens with {self._ranges[address]!r}; give it an address of its own"
            )
        site = _Site(key, address, _context(cert, tls), response or PolicyResponse(), tls)
        if address not in self._ports:
            base = self._base_context(address, tls)
            self._ports[address] = await self._server.listen(address, base)
            self._ranges[address] = tls
        self._sites[key] = site
        return address, self._ports[address]

    def tls_range(self, name: str) -> _TlsRange:
        """Host ``name``'s (tls_min, tls_max) as added."""
        return self._site(name).tls

    @property
    def ports(self) -> Mapping[str, int]:
        """Listening address -> real port."""
        return dict(self._ports)

    def endpoint(self, name: str) -> tuple[str, int]:
        """The (address, port) host ``name`` is reachable on."""
        site = self._site(name)
        return site.address, self._ports[site.address]

    def response(self, name: str) -> PolicyResponse:
        """The current behaviour of host ``name``."""
        return self._site(name).response

    def set_response(self, name: str, response: PolicyResponse) -> None:
        """Replace host ``name``'s behaviour; the next request sees it."""
        self._site(name).response = response

    def update(self, name: str, **changes: Any) -> PolicyResponse:
        """Change some fields of host ``name``'s behaviour; returns the new snapshot."""
        site = self._site(name)
        site.response = replace(site.response, **changes)
        return site.response

    def set_cert(self, name: str, cert: CertPair) -> None:
        """Present ``cert`` for host ``name`` from the next handshake on."""
        site = self._site(name)
        site.context = _context(cert, site.tls)

    def requests(self, host: str | None = None) -> list[PolicyRequest]:
        """Logged requests, all or those whose SNI or Host header names ``host``."""
        if host is None:
            return list(self._log)
        key = _name(host)
        return [r for r in self._log if key in (r.host, r.sni)]

    def count(self, host: str | None = None) -> int:
        """How many requests :meth:`requests` would return."""
        return len(self.requests(host))

    def hellos(self, host: str | None = None) -> list[ClientHello]:
        """Logged ClientHellos, all or those whose SNI is ``host``."""
        key = None if host is None else _name(host)
        return [h for h in self._hellos if key is None or h.sni == key]

    def clear(self) -> None:
        """Forget the request and ClientHello logs (behaviours are kept)."""
        self._log.clear()
        self._hellos.clear()

    def _site(self, name: str) -> _Site:
        try:
            return self._sites[_name(name)]
        except KeyError:
            raise KeyError(f"no policy host {name!r}; known: {sorted(self._sites)}") from None

    def _base_context(self, address: str, tls: _TlsRange) -> ssl.SSLContext:
        # A fresh context (not the shared cache): it carries this address's callback.
        default = self._default_cert or _throwaway_default_cert()
        # _context is fresh too for a range of its own: only the default range is cached.
        context = new_server_context(default) if tls == _DEFAULT_RANGE else _context(default, tls)
        context.sni_callback = self._sni_callback(address)
        return context

    def _sni_callback(self, address: str) -> Any:
        def pick(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            # RFC 8461 §7.1 / FETCH-16: only an exact SNI match gets the host's certificate.
            sni = _name(server_name) if server_name else None
            site = self._sites.get(sni) if sni else None
            if site is not None and site.address == address:
                sslobj.context = site.context
            else:
                site = None
            self._sni[sslobj] = sni
            self._hellos.append(ClientHello(address, sni, site.name if site else DEFAULT_CERT_NAME))

        return pick

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        conn = self._server.connection(scope)
        address, port = scope["server"][0], scope["server"][1]
        host_value = header(scope, "host")
        host = _name(host_value.rsplit(":", 1)[0]) if host_value else None
        site = self._sites.get(host) if host else None
        if site is not None and site.address != address:
            site = None
        served = site.response if site is not None and scope["path"] == POLICY_PATH else None
        self._log.append(
            PolicyRequest(
                method=scope["method"],
                path=scope["path"],
                host=host,
                sni=self._sni.get(conn.ssl_object) if conn and conn.ssl_object else None,
                headers=tuple(
                    (bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1"))
                    for k, v in scope["headers"]
                ),
                address=address,
                port=port,
                client=(scope["client"][0], scope["client"][1]),
                tls_version=conn.tls_version if conn else None,
                site=site.name if site else None,
                served=served,
            )
        )
        while (await receive()).get("more_body", False):
            pass  # a policy GET has no body; drain whatever came
        if served is None:
            await _start(send, 404, [(b"content-type", b"text/plain")])
            await _body(send, b"not found\n")
        else:
            await _perform(served, conn, receive, send)


def _headers(r: PolicyResponse, length: int | None) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if r.content_type is not None:  # None: no Content-Type at all (AMB-12)
        out.append((b"content-type", r.content_type.encode("latin-1")))
    if r.location is not None:
        out.append((b"location", r.location.encode("latin-1")))
    out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in r.headers)
    if length is not None:
        out.append((b"content-length", str(length).encode("ascii")))
    return out


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _body(send: Send, data: bytes, *, more: bool = False) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _perform(
    r: PolicyResponse, conn: Connection | None, receive: Receive, send: Send
) -> None:
    b = r.behaviour
    if b in (PolicyBehaviour.HANG, PolicyBehaviour.RESET):
        if b is PolicyBehaviour.RESET and conn is not None:
            conn.reset()  # hypercorn then reports http.disconnect
        return await _until_disconnect(receive)
    if b in (PolicyBehaviour.SERVE, PolicyBehaviour.REDIRECT):
        await _start(send, r.status, _headers(r, len(r.body)))
        return await _body(send, r.body)
    if b is PolicyBehaviour.SLOW_BODY:
        await _start(send, r.status, _headers(r, len(r.body)))
        for i in range(0, len(r.body), r.trickle_bytes):
            await _body(send, r.body[i : i + r.trickle_bytes], more=True)
            try:  # wait out the interval, unless the client (or shutdown) ends it first
                async with asyncio.timeout(r.trickle_interval):
                    return await _until_disconnect(receive)
            except TimeoutError:
                pass
        return await _body(send, b"")
    total = None if b is PolicyBehaviour.ENDLESS else r.oversize_bytes
    await _start(send, r.status, _headers(r, total if b is PolicyBehaviour.OVERSIZE else None))
    sent, chunk = 0, r.body or _BLOCK
    while total is None or sent < total:
        if conn is None or conn.closing:  # the client left; stop producing
            return
        piece = chunk if total is None else chunk[: total - sent]
        await _body(send, piece, more=True)  # hypercorn's drain() gives back-pressure
        sent, chunk = sent + len(piece), _BLOCK
        # After the client has gone, send() may complete without suspending; yield so the
        # disconnect is noticed and nothing else sharing the loop starves.
        await asyncio.sleep(0)
    await _body(send, b"")
