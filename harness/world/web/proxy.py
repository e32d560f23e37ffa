"""An HTTP CONNECT proxy for the world, on asyncio streams, tunnelling only to world hosts.

Theory of operation
-------------------
The engine may fetch policies "via the proxy" (DESIGN §3.2). :class:`Proxy` listens on a
127.x address, port 0, reads one request head per connection and answers:

* ``CONNECT host:port`` whose target the world's resolver maps to a loopback
  (address, port): open that connection, answer ``200 Connection established`` and copy
  bytes both ways until both sides are done. The TLS inside the tunnel is end to end
  between the client and the target; the proxy never sees plaintext.
* a target the resolver does not know, or one it maps outside 127.0.0.0/8: ``403``.
  The world must never reach a real network, whatever a scenario says.
* a target that does not accept the connection: ``502``.
* anything but CONNECT, or a malformed head: ``400``/``405``.

Faults, switchable between steps through :attr:`Proxy.fault`: ``refuse`` answers ``403``
to everything; ``hang`` accepts and reads the request, then never answers (the client's
timeout is what is under test). Every request gets one :class:`ProxyEvent` in the log,
written when the proxy decides, so a test may read it as soon as the client has its answer.

A reset from the target is passed on as a reset to the client (SO_LINGER 0), so a policy
host's ``reset`` behaviour looks the same with and without the proxy. Shutdown aborts every
live tunnel and hanging client, then awaits every handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from harness.world.web._server import NotLoopbackError, bind_listener, require_loopback
from harness.world.web.behaviour import ProxyFault

__all__ = ["Proxy", "ProxyEvent", "ProxyOutcome", "ProxyResolver"]

#: Maps a CONNECT target (host, port) to the real (address, port), or None when unknown.
ProxyResolver = (
    Callable[[str, int], tuple[str, int] | None] | Mapping[tuple[str, int], tuple[str, int]]
)
_HEAD_LIMIT = 8192


class ProxyOutcome(StrEnum):
    """What the proxy did with one request."""

    TUNNELLED = "tunnelled"
    REFUSED = "refused"  # the refuse fault
    HUNG = "hung"  # the hang fault
    DENIED = "denied"  # target unknown to the world, or not loopback
    UNREACHABLE = "unreachable"  # the target did not accept the connection
    BAD_REQUEST = "bad_request"  # not CONNECT, or a malformed head


@dataclass(frozen=True, slots=True)
class ProxyEvent:
    """One request the proxy saw.

    Attributes:
        target: the request target as sent (``"mta-sts.example.com:443"``), or the raw
            request line when it could not be parsed.
        client: the client's (address, port).
        outcome: the :class:`ProxyOutcome`.
        upstream: the (address, port) tunnelled to or tried, or None.
    """

    target: str
    client: tuple[str, int]
    outcome: ProxyOutcome
    upstream: tuple[str, int] | None = None


class Proxy:
    """An HTTP CONNECT proxy on a loopback address (async context manager).

    Args:
        resolve: maps (host, port) of a CONNECT target to the real (address, port), as a
            mapping or a function returning None for unknown targets.
        address: the 127.0.0.0/8 address to listen on (port 0).
        fault: the initial :class:`ProxyFault`; may be changed at any time.
        connect_timeout: seconds allowed to connect to the target.

    Raises:
        NotLoopbackError: ``address`` is outside 127.0.0.0/8.
    """

    def __init__(
        self,
        resolve: ProxyResolver,
        *,
        address: str = "127.0.0.1",
        fault: ProxyFault = ProxyFault.NONE,
        connect_timeout: float = 5.0,
    ) -> None:
        self._resolve = resolve
        self._address = require_loopback(address)
        self.fault = fault
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._port = 0
        self._log: list[ProxyEvent] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Proxy:
        sock = bind_listener(self._address)
        try:
            self._port = sock.getsockname()[1]
            self._server = await asyncio.start_server(self._handle, sock=sock)
        except BaseException:
            sock.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if server is not None:
            await server.wait_closed()

    @property
    def address(self) -> str:
        """The address the proxy listens on."""
        return self._address

    @property
    def port(self) -> int:
        """The port bound (0 before the proxy starts)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://address:port``, the form HTTP clients take as a proxy setting."""
        return f"http://{self._address}:{self._port}"

    def log(self, target: str | None = None) -> list[ProxyEvent]:
        """Logged requests, all or those for ``target`` (``"host:port"``, case-insensitive)."""
        if target is None:
            return list(self._log)
        return [e for e in self._log if e.target.lower() == target.lower()]

    def count(self, target: str | None = None) -> int:
        """How many requests :meth:`log` would return."""
        return len(self.log(target))

    def clear(self) -> None:
        """Forget the log."""
        self._log.clear()

    def _lookup(self, host: str, port: int) -> tuple[str, int] | None:
        key = (host.rstrip(".").lower(), port)
        if callable(self._resolve):
            return self._resolve(*key)
        return self._resolve.get(key)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername") or ("?", 0)  # None if already gone
        client = (peer[0], peer[1])
        try:
            await self._serve(reader, writer, client)
        except (ConnectionError, OSError):
            pass  # the client left or was aborted at shutdown
        finally:
            self._writers.discard(writer)
            writer.close()  # after an abort (reset, shutdown) this is a no-op
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: tuple[str, int]
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0] or rest
        if self.fault is ProxyFault.HANG:
            self._log.append(ProxyEvent(target, client, ProxyOutcome.HUNG))
            while await reader.read(4096):
                pass
            return
        if self.fault is ProxyFault.REFUSE:
            self._log.append(ProxyEvent(target, client, ProxyOutcome.REFUSED))
            await _answer(writer, 403, "Forbidden")
            return
        host, _, port_text = target.rpartition(":")
        if method != "CONNECT" or not host or not port_text.isdigit():
            self._log.append(ProxyEvent(target or line, client, ProxyOutcome.BAD_REQUEST))
            await _answer(writer, 405 if method != "CONNECT" else 400, "Bad Request")
            return
        upstream = self._lookup(host.strip("[]"), int(port_text))
        try:
            if upstream is None:
                raise NotLoopbackError(None)
            upstream = (require_loopback(upstream[0]), upstream[1])
        except NotLoopbackError:
            self._log.append(ProxyEvent(target, client, ProxyOutcome.DENIED, upstream))
            await _answer(writer, 403, "Forbidden")
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(*upstream)
        except (OSError, TimeoutError):
            self._log.append(ProxyEvent(target, client, ProxyOutcome.UNREACHABLE, upstream))
            await _answer(writer, 502, "Bad Gateway")
            return
        self._writers.add(up_writer)
        try:
            self._log.append(ProxyEvent(target, client, ProxyOutcome.TUNNELLED, upstream))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(reader, up_writer))
                group.create_task(_pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await up_writer.wait_closed()


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (ConnectionError, OSError):
        # Pass a reset on as a reset, so the far side sees what the near side saw.
        sock = dst.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        dst.transport.abort()
