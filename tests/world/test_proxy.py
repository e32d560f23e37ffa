"""Proxy: HTTP CONNECT through to a real PolicyHost, faults, refusals and the log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl

import httpx
import pytest
import trustme

from harness.world.web._server import NotLoopbackError
from harness.world.web.behaviour import PolicyBehaviour, PolicyResponse, ProxyFault
from harness.world.web.policy_host import POLICY_PATH, PolicyHost
from harness.world.web.proxy import Proxy, ProxyEvent, ProxyOutcome

HOST = "mta-sts.example.com"
URL = f"https://{HOST}{POLICY_PATH}"
POLICY = b"version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@contextlib.asynccontextmanager
async def running_policy_host(ca):
    cert = ca.issue_cert(HOST)
    pair = b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()
    async with PolicyHost() as ph:
        await ph.add_host(
            HOST, address="127.0.0.2", cert=pair, response=PolicyResponse(body=POLICY)
        )
        yield ph


@pytest.fixture
async def policy_host(ca):
    async with running_policy_host(ca) as ph:
        yield ph


@pytest.fixture
async def proxy(policy_host):
    async with Proxy({(HOST, 443): policy_host.endpoint(HOST)}, address="127.0.0.9") as p:
        yield p


def via(proxy: Proxy, trusting, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(proxy=proxy.url, verify=trusting, **kwargs)


async def test_connect_tunnels_to_the_policy_host(proxy, policy_host, trusting):
    async with via(proxy, trusting) as client:
        response = await client.get(URL)
    assert response.content == POLICY
    (event,) = proxy.log()
    assert event.target == f"{HOST}:443" and event.outcome is ProxyOutcome.TUNNELLED
    assert event.upstream == policy_host.endpoint(HOST)
    assert event.client[0] == "127.0.0.1"
    (request,) = policy_host.requests(HOST)
    assert request.sni == HOST  # TLS is end to end through the tunnel
    assert proxy.count(f"{HOST.upper()}:443") == 1


async def test_callable_resolver_is_consulted(policy_host, trusting):
    seen = []

    def resolve(host, port):
        seen.append((host, port))
        return policy_host.endpoint(HOST) if host == HOST else None

    async with Proxy(resolve, address="127.0.0.9") as proxy, via(proxy, trusting) as client:
        assert (await client.get(URL)).status_code == 200
    assert seen == [(HOST, 443)]


async def test_refuse_fault_answers_403(proxy, trusting):
    proxy.fault = ProxyFault.REFUSE
    async with via(proxy, trusting) as client:
        with pytest.raises(httpx.ProxyError, match="403"):
            await client.get(URL)
    assert proxy.log() == [ProxyEvent(f"{HOST}:443", proxy.log()[0].client, ProxyOutcome.REFUSED)]


async def test_hang_fault_never_answers_before_the_client_times_out(proxy, policy_host, trusting):
    proxy.fault = ProxyFault.HANG
    async with via(proxy, trusting, timeout=httpx.Timeout(5.0, read=0.1)) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.get(URL)
    assert proxy.log()[0].outcome is ProxyOutcome.HUNG
    assert policy_host.count() == 0


async def test_unknown_target_is_denied(proxy, policy_host, trusting):
    async with via(proxy, trusting) as client:
        with pytest.raises(httpx.ProxyError, match="403"):
            await client.get(f"https://mta-sts.elsewhere.example{POLICY_PATH}")
    assert proxy.log()[0].outcome is ProxyOutcome.DENIED
    assert policy_host.count() == 0


async def test_target_outside_loopback_is_denied(trusting):
    proxy = Proxy({(HOST, 443): ("192.0.2.1", 443)}, address="127.0.0.9")
    async with proxy, via(proxy, trusting) as client:
        with pytest.raises(httpx.ProxyError, match="403"):
            await client.get(URL)
    assert proxy.log()[0].outcome is ProxyOutcome.DENIED


async def test_closed_target_is_unreachable_502(trusting):
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    closed_port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    proxy = Proxy({(HOST, 443): ("127.0.0.2", closed_port)}, address="127.0.0.9")
    async with proxy, via(proxy, trusting) as client:
        with pytest.raises(httpx.ProxyError, match="502"):
            await client.get(URL)
    assert proxy.log()[0].outcome is ProxyOutcome.UNREACHABLE


async def test_non_connect_request_is_405(proxy):
    reader, writer = await asyncio.open_connection(proxy.address, proxy.port)
    writer.write(b"GET http://mta-sts.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 405")
    writer.close()
    await writer.wait_closed()
    assert proxy.log()[0].outcome is ProxyOutcome.BAD_REQUEST


async def test_untrusted_certificate_through_the_tunnel_fails(proxy):
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(untrusting)
    async with via(proxy, untrusting) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(URL)
    assert proxy.log()[0].outcome is ProxyOutcome.TUNNELLED


async def test_policy_host_reset_reaches_the_client_through_the_tunnel(
    proxy, policy_host, trusting
):
    policy_host.update(HOST, behaviour=PolicyBehaviour.RESET)
    async with via(proxy, trusting) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get(URL)


@pytest.mark.parametrize("address", ["10.0.0.1", "0.0.0.0", "::1"])
def test_listening_outside_loopback_is_refused(address):
    with pytest.raises(NotLoopbackError):
        Proxy({}, address=address)


async def test_shutdown_leaks_no_tasks_or_fds(ca, trusting):
    tasks_before, fds_before = asyncio.all_tasks(), set(os.listdir("/proc/self/fd"))
    async with running_policy_host(ca) as ph:
        proxy = Proxy({(HOST, 443): ph.endpoint(HOST)}, address="127.0.0.9")
        async with proxy, via(proxy, trusting) as client:
            assert (await client.get(URL)).status_code == 200  # a live keep-alive tunnel
            proxy.fault = ProxyFault.HANG
            _, hung = await asyncio.open_connection(proxy.address, proxy.port)
            hung.write(b"CONNECT mta-sts.example.com:443 HTTP/1.1\r\n\r\n")
            await hung.drain()
        hung.close()
        with contextlib.suppress(ConnectionResetError):  # shutdown aborts the hung client
            await hung.wait_closed()
    assert asyncio.all_tasks() == tasks_before
    assert set(os.listdir("/proc/self/fd")) == fds_before
