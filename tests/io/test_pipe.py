"""engine.io.pipe: one client connection as a protocol, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

import pytest

from engine.io.https import no_verify_tls_context
from engine.io.pipe import Pipe, connect
from tests.io.tls_peers import LOOPS, HttpsServer, Pki, run

pytestmark = pytest.mark.parametrize("loop", LOOPS)


async def _serve_once(payload: bytes, *, reset: bool = False) -> tuple[asyncio.Server, int]:
    """A plain server that writes ``payload`` in one write, then closes (or resets)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        if reset:  # SO_LINGER 0: close() sends a RST, not a FIN
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_lines_then_the_rest_then_the_end(loop: str) -> None:
    async def main() -> None:
        server, port = await _serve_once(b"line one\r\nline two\r\nrest")
        async with server:
            pipe = await connect("127.0.0.1", port)
            assert await pipe.read_until(b"\r\n", 100) == b"line one\r\n"
            assert await pipe.read_until(b"\r\n", 100) == b"line two\r\n"
            rest = b""
            while data := await pipe.read():
                rest += data
            assert rest == b"rest"
            assert await pipe.read() == b""  # the end stays the end
            assert await pipe.read_until(b"\r\n", 100) is None
            pipe.close()

    run(loop, main)


def test_a_read_takes_at_most_what_it_asks_for(loop: str) -> None:
    async def main() -> None:
        server, port = await _serve_once(b"0123456789")
        async with server:
            pipe = await connect("127.0.0.1", port)
            assert await pipe.read_until(b"9", 100) == b"0123456789"
            pipe.close()
        server2, port2 = await _serve_once(b"abcdef")
        async with server2:
            pipe = await connect("127.0.0.1", port2)
            first = await pipe.read(2)
            assert 1 <= len(first) <= 2 and b"abcdef".startswith(first)
            pipe.close()

    run(loop, main)


def test_no_separator_within_the_limit_is_none(loop: str) -> None:
    async def main() -> None:
        server, port = await _serve_once(b"x" * 500 + b"\r\n")
        async with server:
            pipe = await connect("127.0.0.1", port)
            assert await pipe.read_until(b"\r\n", 100) is None
            pipe.close()

    run(loop, main)


def test_a_reset_is_an_error_not_an_end(loop: str) -> None:
    async def main() -> None:
        server, port = await _serve_once(b"", reset=True)
        async with server:
            pipe = await connect("127.0.0.1", port)
            with pytest.raises(OSError):
                while await pipe.read():
                    pass
            pipe.close()

    run(loop, main)


def test_start_tls_refuses_bytes_that_came_before_the_handshake(loop: str) -> None:
    # A CONNECT proxy writes its answer and, in the same segment, bytes of its own:
    # read as if they came through TLS, they would be the "server's" response.
    async def main() -> None:
        server, port = await _serve_once(b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n")
        async with server:
            pipe = await connect("127.0.0.1", port)
            assert await pipe.read_until(b"\r\n\r\n", 1000) == b"HTTP/1.1 200 OK\r\n\r\n"
            with pytest.raises(ValueError, match="17 bytes arrived before the TLS handshake"):
                await pipe.start_tls(no_verify_tls_context(), "mta-sts.example.com")
            assert pipe.get_extra_info("ssl_object") is None
            pipe.close()

    run(loop, main)


def test_tls_in_place_with_sni_then_a_clean_close(loop: str) -> None:
    async def main() -> None:
        pki = Pki()
        sni: list[str | None] = []
        context = pki.server_context()
        context.sni_callback = lambda obj, name, ctx: sni.append(name)
        https = HttpsServer(b"HTTP/1.1 204 No Content\r\n\r\n", context)
        _, port = await https.start()
        try:
            pipe = await connect("127.0.0.1", port)
            await pipe.start_tls(no_verify_tls_context(), "mta-sts.example.com")
            ssl_object = pipe.get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            pipe.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await pipe.read_until(b"\r\n\r\n", 1000) == b"HTTP/1.1 204 No Content\r\n\r\n"
            pipe.close()
            assert https.handled is not None
            async with asyncio.timeout(5):
                await https.handled.wait()
            assert sni == ["mta-sts.example.com"]
            assert https.requests == [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
            assert https.closed_cleanly == [True]  # RFC 8446 §6.1: close_notify was sent
        finally:
            await https.stop()

    run(loop, main)


def test_a_handshake_with_a_plain_server_is_an_error(loop: str) -> None:
    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)  # the ClientHello has begun; answer in plain text
            writer.write(b"220 not TLS at all\r\n" * 10)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            pipe = await connect("127.0.0.1", server.sockets[0].getsockname()[1])
            with pytest.raises((ssl.SSLError, OSError)):
                async with asyncio.timeout(5):
                    await pipe.start_tls(no_verify_tls_context(), "mta-sts.example.com")
            pipe.close()

    run(loop, main)


def test_a_refused_connection_is_an_os_error(loop: str) -> None:
    async def main() -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(OSError):
            await connect("127.0.0.1", port)

    run(loop, main)


def test_a_pipe_without_a_connection_has_no_extra_info(loop: str) -> None:
    async def main() -> None:
        pipe = Pipe()
        assert pipe.get_extra_info("peername") is None
        pipe.close()  # nothing to close: no error

    run(loop, main)
