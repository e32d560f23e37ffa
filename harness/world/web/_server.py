"""Shared plumbing for the world's HTTPS servers: hypercorn on pre-bound loopback sockets.

Theory of operation
-------------------
hypercorn's public entry point (``hypercorn.asyncio.serve`` -> ``worker_serve``) owns the
accept loop: it creates the listening servers itself, runs an ASGI lifespan task, gives the
app no handle on the TCP connection, and on shutdown waits up to ``graceful_timeout`` for
handlers to finish. The world needs three things that loop does not offer:

1. listeners added while the world runs, one per 127.x address, each bound to port 0;
2. a handle on each connection, so a behaviour can abort it with a TCP RST ("reset");
3. a shutdown that is immediate and complete even while a handler hangs on purpose.

So :class:`TlsAsgiServer` keeps hypercorn for HTTP (h11 parsing, framing, Content-Length
and chunked encoding) and runs the accept loop the way ``worker_serve`` does: one
``asyncio.start_server`` per pre-bound socket, and for each accepted TLS connection
hypercorn's ``TCPServer(app, loop, config, context, state, reader, writer)``. Before handing
the connection over it records a :class:`Connection` keyed by (peer, local) address, which
is exactly what hypercorn puts in the ASGI scope as ``client`` and ``server``; the app finds
its connection with :meth:`TlsAsgiServer.connection`. That uses two hypercorn modules that
are not re-exported (``asyncio.tcp_server``, ``asyncio.worker_context``); the world's tests
pin the behaviour, so a hypercorn upgrade that moves them fails loudly there.

Readiness: a socket is bound and listening (``listen()`` called) before the server is
attached, so a client may connect as soon as :meth:`TlsAsgiServer.listen` returns a port.
There is no lifespan task and no polling, which keeps start+stop in the low milliseconds.

Shutdown (:meth:`TlsAsgiServer.aclose`): close the listeners, abort every live connection
(a hanging or trickling handler then sees ``http.disconnect`` or an unwritable transport),
and await every connection task, cancelling any that outlive ``shutdown_timeout``.
Connections still inside the TLS handshake when the server closes are not in the registry;
asyncio drops them at ``ssl_handshake_timeout``.

Loopback only: :func:`require_loopback` refuses any address outside 127.0.0.0/8, so the
world can never listen on, or tunnel to, a real network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config

__all__ = [
    "AsgiApp",
    "CertPair",
    "Connection",
    "NotLoopbackError",
    "TlsAsgiServer",
    "bind_listener",
    "header",
    "new_server_context",
    "require_loopback",
    "server_context",
]

#: A server identity as the world passes it around: (certificate chain PEM, private key PEM).
CertPair = tuple[bytes, bytes]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: An ASGI 3 HTTP application (no lifespan: the world never runs one).
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_LOG = logging.getLogger("harness.world.http")
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


class NotLoopbackError(ValueError):
    """An address outside 127.0.0.0/8 was given to a world server or tunnel.

    Attributes:
        address: the offending address, as given.
    """

    def __init__(self, address: object) -> None:
        self.address = address
        super().__init__(
            f"refusing address {address!r}: the world only uses IPv4 loopback 127.0.0.0/8"
        )


def require_loopback(address: str) -> str:
    """Return ``address`` in canonical form if it is in 127.0.0.0/8.

    Args:
        address: an IPv4 address literal.

    Returns:
        The canonical dotted-quad text.

    Raises:
        NotLoopbackError: the address is not an IPv4 literal inside 127.0.0.0/8.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise NotLoopbackError(address) from None
    if ip.version != 4 or ip not in _LOOPBACK:
        raise NotLoopbackError(address)
    return str(ip)


@functools.lru_cache(maxsize=128)
def server_context(cert: CertPair) -> ssl.SSLContext:
    """A shared, cached :func:`new_server_context`; treat the result as read-only."""
    return new_server_context(cert)


def new_server_context(cert: CertPair) -> ssl.SSLContext:
    """A fresh TLS server context presenting ``cert``.

    Python 3.11's ``load_cert_chain`` only reads files, so the PEMs go through a private
    temporary file that is removed at once.

    Args:
        cert: (chain PEM, key PEM); the chain starts with the leaf.

    Returns:
        A ``PROTOCOL_TLS_SERVER`` context with the chain and key loaded.

    Raises:
        ssl.SSLError: the PEM data is not a matching certificate and key.
    """
    chain, key = cert
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # tmpfs when there is one: key material never reaches a disk, and it is faster.
    fd, path = tempfile.mkstemp(prefix="world-", suffix=".pem", dir=_SCRATCH)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.rstrip(b"\n") + b"\n" + chain)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


def header(scope: Scope, name: str) -> str | None:
    """The first value of request header ``name`` (case-insensitive) in an ASGI scope."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope["headers"]:
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def bind_listener(address: str) -> socket.socket:
    """A non-blocking TCP socket bound to (``address``, 0) and listening.

    The protocol is given as IPPROTO_TCP on purpose: asyncio only sets TCP_NODELAY on
    sockets whose ``proto`` says TCP, and accepted sockets inherit the listener's. With
    ``proto`` 0, Nagle holds the body segment back until the peer's delayed ACK, a 40 ms
    stall on every response that hypercorn writes in two pieces (headers, then body).

    Raises:
        NotLoopbackError: ``address`` is not in 127.0.0.0/8.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((require_loopback(address), 0))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True, eq=False)
class Connection:
    """One accepted TLS connection, as the ASGI app may need to act on it.

    Attributes:
        writer: the stream writer hypercorn writes responses to.
        local: (address, port) the connection arrived on.
        peer: the client's (address, port).
        tls_version: negotiated protocol, e.g. ``"TLSv1.3"``.
        ssl_object: the connection's ``ssl.SSLObject`` (key for per-handshake data).
    """

    writer: asyncio.StreamWriter
    local: tuple[str, int]
    peer: tuple[str, int]
    tls_version: str | None
    ssl_object: ssl.SSLObject | None

    @property
    def closing(self) -> bool:
        """True once the transport is closing or gone (the peer left, or we aborted)."""
        return self.writer.is_closing()

    def reset(self) -> None:
        """Abort the TCP connection with an RST (SO_LINGER 0), without a TLS close_notify."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def _config() -> Config:
    config = Config()
    # Every header on the wire is one the world configured (FETCH-10, FETCH-11 need that).
    config.include_server_header = False
    config.include_date_header = False
    config.accesslog = None
    config.errorlog = _LOG  # a Logger instance is used as is; hypercorn adds no handler
    config.alpn_protocols = ["http/1.1"]
    return config


class TlsAsgiServer:
    """hypercorn HTTP/1.1 over TLS on pre-bound loopback sockets, with a connection registry.

    Args:
        app: the ASGI HTTP application serving every listener.
        handshake_timeout: seconds a client may take to finish the TLS handshake.
        shutdown_timeout: seconds :meth:`aclose` waits for handlers before cancelling them.
    """

    def __init__(
        self, app: AsgiApp, *, handshake_timeout: float = 5.0, shutdown_timeout: float = 2.0
    ) -> None:
        self._app = ASGIWrapper(cast(Any, app))  # hypercorn types scopes as TypedDicts
        self._config = _config()
        self._worker = WorkerContext(None)
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: dict[tuple[tuple[str, int], tuple[str, int]], Connection] = {}
        self._closed = False

    async def listen(self, address: str, context: ssl.SSLContext) -> int:
        """Bind ``address`` on port 0 and serve TLS there with ``context``.

        Args:
            address: a 127.0.0.0/8 address.
            context: the server context (it may carry an ``sni_callback``).

        Returns:
            The port bound; the socket already accepts connections.

        Raises:
            NotLoopbackError: ``address`` is not loopback.
            RuntimeError: the server was closed.
        """
        if self._closed:
            raise RuntimeError("TlsAsgiServer is closed; cannot listen again")
        sock = bind_listener(address)
        port: int = sock.getsockname()[1]
        try:
            server = await asyncio.start_server(
                self._on_connection,
                sock=sock,
                ssl=context,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        return port

    def connection(self, scope: Scope) -> Connection | None:
        """The live connection an ASGI ``http`` scope arrived on, or None if it is gone."""
        client, server = scope.get("client"), scope.get("server")
        if client is None or server is None:
            return None
        return self._connections.get(((client[0], client[1]), (server[0], server[1])))

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        ssl_object = writer.get_extra_info("ssl_object")
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        if peer is None or local is None:  # gone between accept and handshake end
            writer.transport.abort()
            return
        self._tasks.add(task)
        key = ((peer[0], peer[1]), (local[0], local[1]))
        self._connections[key] = Connection(
            writer=writer,
            local=key[1],
            peer=key[0],
            tls_version=ssl_object.version() if ssl_object is not None else None,
            ssl_object=ssl_object,
        )
        loop = asyncio.get_running_loop()
        try:
            await TCPServer(self._app, loop, self._config, self._worker, {}, reader, writer)
        finally:
            self._connections.pop(key, None)
            self._tasks.discard(task)

    async def aclose(self) -> None:
        """Stop listening, abort live connections and await every handler. Idempotent."""
        self._closed = True
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        await self._worker.terminated.set()
        for connection in list(self._connections.values()):
            connection.writer.transport.abort()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for server in servers:
            await server.wait_closed()
