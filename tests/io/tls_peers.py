"""Loopback peers for the HTTPS tests: a TLS server with canned answers and a CONNECT proxy.

Each runs on the test's own event loop (asyncio's or uvloop's), on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trustme

from engine.eventloop import loop_factory

LOOPS = ("asyncio", "uvloop")


def run(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """``main()`` on a fresh loop of kind ``loop``, as the engine's commands run it."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        if loop == "uvloop":
            assert type(runner.get_loop()).__module__.startswith("uvloop")
        return runner.run(main())  # type: ignore[arg-type]


@dataclass
class Pki:
    """A CA and a server context for ``names``."""

    names: tuple[str, ...] = ("mta-sts.example.com",)
    ca: trustme.CA = field(default_factory=trustme.CA)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*self.names).configure_cert(ctx)
        return ctx

    def root_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.ca.cert_pem.bytes().decode())


class _Peer:
    """Keeps its handlers' tasks, so that stopping ends them all before the loop closes."""

    server: asyncio.Server | None
    tasks: set[asyncio.Task[Any]]

    def _track(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class HttpsServer(_Peer):
    """Answers each request with ``answer``; keeps the requests (head and body) it got."""

    answer: bytes
    context: ssl.SSLContext
    requests: list[bytes] = field(default_factory=list)
    closed_cleanly: list[bool] = field(default_factory=list)
    server: asyncio.Server | None = None
    handled: asyncio.Event | None = None  # set when a connection's handler has finished
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> tuple[str, int]:
        self.handled = asyncio.Event()
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            self.requests.append(head + await reader.readexactly(length))
            writer.write(self.answer)
            await writer.drain()
            # The client closes: with a close_notify, this read ends without an error.
            self.closed_cleanly.append(await reader.read() == b"")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            self.closed_cleanly.append(False)
        finally:
            writer.close()
            assert self.handled is not None
            self.handled.set()


@dataclass
class ConnectProxy(_Peer):
    """An HTTP CONNECT proxy that sends every tunnel to ``upstream``.

    ``reply`` is its answer to CONNECT; ``extra`` bytes follow that answer in the
    same write (a proxy forging the start of the tunnel).
    """

    upstream: tuple[str, int]
    reply: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n"
    extra: bytes = b""
    asked: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        up_writer: asyncio.StreamWriter | None = None
        try:
            self.asked.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.reply + self.extra)
            if not self.reply.startswith(b"HTTP/1.1 2") or self.extra:
                await writer.drain()
                await reader.read()
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if up_writer is not None:
                up_writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


class FixedResolver:
    """Answers every A query with ``address`` (the engine's resolver, as far as HTTPS asks)."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Any:
        self.asked.append((name, rdtype))
        address = self.address if rdtype == "A" else None

        class Answer:
            def addresses(self) -> list[str]:
                return [address] if address else []

        return Answer()
