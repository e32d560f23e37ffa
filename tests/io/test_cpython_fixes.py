"""engine/_cpython.py: the asyncio sslproto bug of early 3.11 releases (Debian 12's stock
3.11.2; issue 16 item 9) does not reach the engine or the world.

There, an SSL transport closed twice lost its protocol and ``abort()`` raised
``AttributeError: 'NoneType' object has no attribute '_abort'`` (the world's policy host
hit it when stopping). On interpreters without the bug the test passes as it is; the
tox environment ``py311-debian`` runs it where the bug is."""

from __future__ import annotations

import asyncio
import sys

import engine
from certs import CertFactory
from engine._cpython import SSLPROTO_ABORT_FIXED

HOST = "mx1.example.com"


async def test_abort_after_a_second_close_is_quiet() -> None:
    factory = CertFactory()
    server_ctx = factory.issue(HOST).server_context()
    loop = asyncio.get_running_loop()
    # Plain protocols on both ends: no StreamWriter left to warn at garbage collection.
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=factory.client_context(), server_hostname=HOST
        )
        transport.close()
        transport.close()  # early 3.11: the second close() drops the protocol
        transport.abort()  # raised AttributeError there
        assert transport.is_closing()
    finally:
        server.close()
        await server.wait_closed()


def test_the_fix_is_applied_only_where_the_probe_found_the_bug() -> None:
    assert engine.__version__  # importing the engine is what applies it
    fixed_upstream = sys.version_info >= (3, 11, 7)
    assert not (SSLPROTO_ABORT_FIXED and fixed_upstream)
