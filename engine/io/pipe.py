"""One client connection as an asyncio protocol with a read buffer: the policy fetch's pipe.

Theory of operation
-------------------
:class:`Pipe` is the protocol of one TCP connection, later upgraded to TLS in place
(``loop.start_tls``, in C on uvloop). Received bytes go into one buffer;
:meth:`~Pipe.read` hands over everything buffered (waiting if there is nothing yet),
:meth:`~Pipe.read_until` takes the bytes up to a separator (a line, a head). That is all an HTTP/1.1
client of one request needs, with less per-read work than ``asyncio.StreamReader``.

It also closes a hole that streams leave open. Bytes that arrive on a plain
connection before :meth:`~Pipe.start_tls` would be handed to the reader as if they
had come through TLS; a CONNECT proxy could so write the "response" to a request it
cannot read. :meth:`~Pipe.start_tls` refuses to upgrade while anything is buffered,
and nothing can arrive in between: ``loop.start_tls`` stops reading before it yields.

Nothing here has a timeout: the caller bounds the whole exchange. No flow control
either: a request is a few hundred bytes, and a reader stops at its own cap.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

__all__ = ["Pipe", "connect"]


class Pipe(asyncio.Protocol):
    """The protocol of one client connection; see the module comment."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- the event loop's side -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports implement asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Buffer ``data`` and wake the reader."""
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        """The peer has finished sending; the transport may close."""
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone; a waiting reader sees the end or the error."""
        self._eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the client's side ---------------------------------------------------------

    async def read(self, max_bytes: int = -1) -> bytes:
        """Received bytes not yet read (at most ``max_bytes`` if given), waiting for some.

        Returns:
            At least one byte, or ``b""`` at the end of the stream.

        Raises:
            OSError: the connection broke (reset) before the end.
            ssl.SSLError: the TLS layer failed.
        """
        while not self._buffer:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            await self._wait()
        if 0 <= max_bytes < len(self._buffer):
            data = bytes(self._buffer[:max_bytes])
            del self._buffer[:max_bytes]
        else:
            data = bytes(self._buffer)
            self._buffer.clear()
        return data

    async def read_until(self, separator: bytes, limit: int) -> bytes | None:
        """The bytes up to and including the first ``separator``.

        Returns:
            Those bytes, or None if the stream ended first or the separator does not
            start within the first ``limit`` bytes.
        """
        while True:
            end = self._buffer.find(separator)
            if 0 <= end <= limit:
                data = bytes(self._buffer[: end + len(separator)])
                del self._buffer[: end + len(separator)]
                return data
            # A separator starting within ``limit`` would be whole in the buffer by now.
            if self._eof or len(self._buffer) >= limit + len(separator):
                return None
            await self._wait()

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport."""
        assert self.transport is not None
        self.transport.write(data)

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Upgrade the connection to TLS in place, with SNI ``server_hostname``.

        Raises:
            ValueError: bytes are buffered that did not come through TLS.
            OSError, ssl.SSLError: the handshake failed.
        """
        assert self.transport is not None
        if self._buffer:
            raise ValueError(f"{len(self._buffer)} bytes arrived before the TLS handshake")
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(self.transport, self, context, server_hostname=server_hostname)
        assert tls is not None
        self.transport = tls

    def get_extra_info(self, name: str) -> object:
        """The transport's extra info (``ssl_object``, ``peername``, ...)."""
        return self.transport.get_extra_info(name) if self.transport is not None else None

    def close(self) -> None:
        """Close; over TLS a close_notify is sent first (RFC 8446 §6.1), not waited for."""
        if self.transport is not None:
            self.transport.close()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


async def connect(host: str, port: int) -> Pipe:
    """A TCP connection to ``host:port`` (an address the dialer chose).

    Raises:
        OSError: the connection was refused or failed.
    """
    _transport, pipe = await asyncio.get_running_loop().create_connection(Pipe, host, port)
    return pipe
