"""engine.io.netstream: the byte pipe under httpcore, with httpcore's exception types."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import httpcore
import pytest

from engine.io.netstream import open_tcp


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    """A plain TCP server on loopback that echoes one line, then waits for more."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        yield host, port


async def test_write_then_read_round_trips(echo_server: tuple[str, int]) -> None:
    stream = await open_tcp(*echo_server, timeout=2)
    await stream.write(b"hello\n", timeout=2)
    assert await stream.read(100, timeout=2) == b"hello\n"
    assert stream.get_extra_info("server_addr") == echo_server
    assert stream.get_extra_info("ssl_object") is None
    await stream.aclose()


async def test_a_silent_peer_is_a_read_timeout(echo_server: tuple[str, int]) -> None:
    stream = await open_tcp(*echo_server, timeout=2)
    with pytest.raises(httpcore.ReadTimeout):
        await stream.read(100, timeout=0.05)  # nothing was sent, so nothing comes back
    await stream.aclose()


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpcore.ConnectError):
        await open_tcp("127.0.0.1", port, timeout=2)


async def test_tls_to_a_server_that_does_not_speak_it_is_a_connect_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 plain text, not a TLS record\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        stream = await open_tcp(*server.sockets[0].getsockname()[:2], timeout=2)
        with pytest.raises(httpcore.ConnectError):
            await stream.start_tls(ssl.create_default_context(), "example.com", timeout=2)
        await stream.aclose()
