"""A listener on a real socket and a raw SMTP client that sends exact bytes.

The client reads whole replies (multi-line ones too) and never normalises what it
sends, so a test can put a NUL, a bare CR or invalid UTF-8 on the wire.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.config import ListenerConfig
from engine.core.clock import ManualClock
from engine.core.events import ListSink
from engine.gateway.listener import Listener
from engine.gateway.queue import Queue

START = 1_767_225_600.0
TIMEOUT = 10.0


class RawClient:
    """One SMTP client connection on raw streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.greeting = ""

    @classmethod
    async def connect(cls, address: tuple[str, int], *, local: str | None = None) -> RawClient:
        local_addr = (local, 0) if local else None
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(*address, local_addr=local_addr)
        client = cls(reader, writer)
        client.greeting = await client.reply()
        return client

    async def reply(self) -> str:
        """One whole reply (all its lines), without line ends; "" when the server closed."""
        lines = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = await self.reader.readline()
                if not line:
                    return "\n".join(lines)
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(text)
                if len(text) < 4 or text[3] != "-":
                    return "\n".join(lines)

    async def send(self, data: bytes) -> str:
        """Write ``data`` as is and return the reply it gets."""
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def cmd(self, line: str | bytes) -> str:
        """A command line with CRLF added."""
        raw = line.encode() if isinstance(line, str) else line
        return await self.send(raw + b"\r\n")

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        assert (await self.cmd("STARTTLS")).startswith("220")
        async with asyncio.timeout(TIMEOUT):
            await self.writer.start_tls(context, server_hostname=server_hostname)

    async def closed(self) -> bool:
        """Whether the server closed the connection (EOF) within the timeout."""
        async with asyncio.timeout(TIMEOUT):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@asynccontextmanager
async def running_listener(
    tmp_path: Path, queue: Queue | None = None, **config: Any
) -> AsyncIterator[tuple[Listener, ListSink]]:
    """A listener on 127.0.0.1 port 0 with ``config`` over the defaults."""
    sink = ListSink()
    q = queue or Queue(tmp_path / "queue.sqlite")
    cfg = replace(ListenerConfig(host="127.0.0.1", port=0), **config)
    try:
        async with Listener(q, clock=ManualClock(START), sink=sink, config=cfg) as listener:
            yield listener, sink
    finally:
        q.close()


async def session(listener: Listener, *, local: str | None = None) -> RawClient:
    """A connected client past EHLO."""
    client = await RawClient.connect(listener.address, local=local)
    assert client.greeting.startswith("220"), client.greeting
    assert (await client.cmd("EHLO client.example")).startswith("250")
    return client


def codes(sink: ListSink) -> list[str]:
    return [e.code for e in sink.events]
