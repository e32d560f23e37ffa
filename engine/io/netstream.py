"""httpcore's network stream on plain asyncio streams (the engine's HTTPS transport).

Why not httpcore's own ``AnyIOBackend``: through a CONNECT proxy it runs TLS in
anyio's ``TLSStream``, which pumps every record through an ``ssl.SSLObject`` from
Python, and wraps each read and write in an anyio cancel scope. On a cold policy
fetch that was most of the client's CPU after the handshake itself
(``bench/bench_resolve.py``). asyncio's ``StreamWriter.start_tls`` does the same TLS
in the event loop's transport (in C on uvloop), and ``asyncio.timeout`` bounds each
call. httpx and httpcore still do all of HTTP; this is only the byte pipe under them,
with httpcore's exception types so its error handling is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import httpcore

__all__ = ["AsyncioStream", "open_tcp"]


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP connection (later perhaps TLS) as httpcore wants it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes``; ``b""`` at the end of the stream."""
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send ``buffer`` and wait until the transport has taken it."""
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        """Close; a TLS close_notify is sent, and not waited for (no keep-alive to save)."""
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Upgrade this connection to TLS in place (SNI ``server_hostname``)."""
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> object:
        """``ssl_object``, ``client_addr``, ``server_addr``, ``socket`` or ``is_readable``."""
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # httpcore asks this of idle keep-alive connections (the engine keeps none):
            # a connection the peer has closed is not worth reusing.
            return self._reader.at_eof()
        return None


async def open_tcp(host: str, port: int, timeout: float | None) -> AsyncioStream:
    """Connect to ``host:port`` (an address the dialer chose).

    Raises:
        httpcore.ConnectTimeout: not connected within ``timeout``.
        httpcore.ConnectError: the connection was refused or failed.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    return AsyncioStream(reader, writer)
