"""PolicyHost over real sockets with real clients (httpx, ssl + asyncio streams)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

import httpx
import pytest
import trustme
from cryptography import x509

from harness.world.web._server import NotLoopbackError
from harness.world.web.behaviour import PolicyBehaviour, PolicyResponse
from harness.world.web.policy_host import DEFAULT_CERT_NAME, POLICY_PATH, PolicyHost

HOST = "mta-sts.example.com"
OTHER = "mta-sts.other.example"
POLICY = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"


def cert_pair(ca: trustme.CA, name: str) -> tuple[bytes, bytes]:
    cert = ca.issue_cert(name)
    return b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@pytest.fixture
async def policy_host(ca):
    async with PolicyHost() as ph:
        await ph.add_host(HOST, address="127.0.0.2", cert=cert_pair(ca, HOST))
        ph.set_response(HOST, PolicyResponse(body=POLICY))
        yield ph


@pytest.fixture
async def client(trusting):
    async with httpx.AsyncClient(verify=trusting, timeout=5.0, follow_redirects=False) as c:
        yield c


async def fetch(client, ph, host=HOST, path=POLICY_PATH, **kwargs) -> httpx.Response:
    address, port = ph.endpoint(host)
    return await client.get(
        f"https://{address}:{port}{path}",
        headers={"Host": host},
        extensions={"sni_hostname": host},
        **kwargs,
    )


async def served_cert_names(ph, host_name, sni: str | None) -> list[str]:
    """Handshake without verification and return the SAN DNS names presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    address, port = ph.endpoint(host_name)
    _, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=sni or None
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return san.value.get_values_for_type(x509.DNSName)


# --- serving -----------------------------------------------------------------------------


async def test_serve_returns_body_content_type_and_extra_headers(policy_host, client):
    policy_host.update(
        HOST,
        headers=(("Cache-Control", "max-age=31536000"), ("ETag", '"a1"'), ("Expires", "never")),
    )
    response = await fetch(client, policy_host)
    assert response.status_code == 200
    assert response.content == POLICY
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["cache-control"] == "max-age=31536000"
    assert response.headers["etag"] == '"a1"'
    assert response.headers["expires"] == "never"
    assert "server" not in response.headers and "date" not in response.headers


async def test_serve_without_content_type_sends_no_header(policy_host, client):
    policy_host.update(HOST, content_type=None)
    response = await fetch(client, policy_host)
    assert response.content == POLICY
    assert "content-type" not in response.headers
    assert set(response.headers) == {"content-length"}


@pytest.mark.parametrize("status", [201, 204, 304, 404, 429, 503])
async def test_serve_status_is_as_configured(policy_host, client, status):
    policy_host.update(HOST, status=status)
    response = await fetch(client, policy_host)
    assert response.status_code == status


async def test_other_paths_are_404_and_logged_unserved(policy_host, client):
    response = await fetch(client, policy_host, path="/mta-sts.txt")
    assert response.status_code == 404
    (request,) = policy_host.requests()
    assert request.path == "/mta-sts.txt" and request.served is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_not_followed_by_a_client_configured_not_to(policy_host, client, status):
    target = f"https://{OTHER}{POLICY_PATH}"
    policy_host.set_response(HOST, PolicyResponse.redirect(target, status))
    response = await fetch(client, policy_host)
    assert response.status_code == status
    assert response.headers["location"] == target
    assert policy_host.count() == 1 and policy_host.count(OTHER) == 0


def test_redirect_needs_3xx_and_location():
    with pytest.raises(ValueError, match="redirect"):
        PolicyResponse(PolicyBehaviour.REDIRECT, status=200, location="https://x/")
    with pytest.raises(ValueError, match="redirect"):
        PolicyResponse(PolicyBehaviour.REDIRECT, status=301)
    with pytest.raises(ValueError, match="99"):
        PolicyResponse(status=99)


# --- TLS and SNI (FETCH-16) ------------------------------------------------------------


async def test_sni_selects_the_host_certificate(policy_host):
    assert await served_cert_names(policy_host, HOST, HOST) == [HOST]
    assert policy_host.hellos(HOST)[-1].cert_name == HOST


async def test_no_sni_gets_the_default_certificate(policy_host):
    assert await served_cert_names(policy_host, HOST, None) == [DEFAULT_CERT_NAME]
    hello = policy_host.hellos()[-1]
    assert hello.sni is None and hello.cert_name == DEFAULT_CERT_NAME


async def test_unknown_sni_gets_the_default_certificate(policy_host):
    assert await served_cert_names(policy_host, HOST, "www.example.com") == [DEFAULT_CERT_NAME]


async def test_sni_of_a_host_on_another_address_gets_the_default(policy_host, ca):
    await policy_host.add_host(OTHER, address="127.0.0.3", cert=cert_pair(ca, OTHER))
    assert await served_cert_names(policy_host, HOST, OTHER) == [DEFAULT_CERT_NAME]


async def test_client_not_trusting_the_ca_fails(policy_host):
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(untrusting)
    async with httpx.AsyncClient(verify=untrusting) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(c, policy_host)
    assert policy_host.count() == 0
    assert policy_host.hellos(HOST)  # the handshake was attempted with the right SNI


async def test_wrong_sni_fails_verification_for_the_policy_name(policy_host, trusting):
    address, port = policy_host.endpoint(HOST)
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(address, port, ssl=trusting, server_hostname="a.invalid")


async def test_set_cert_takes_effect_on_the_next_handshake(policy_host, ca, client):
    policy_host.set_cert(HOST, cert_pair(trustme.CA(), HOST))
    with pytest.raises(httpx.ConnectError):
        await fetch(client, policy_host)
    policy_host.set_cert(HOST, cert_pair(ca, HOST))
    assert (await fetch(client, policy_host)).status_code == 200


async def test_hosts_sharing_an_address_are_chosen_by_sni_and_host(policy_host, ca, client):
    address, port = await policy_host.add_host(
        OTHER, address="127.0.0.2", cert=cert_pair(ca, OTHER), response=PolicyResponse(body=b"B")
    )
    assert (address, port) == policy_host.endpoint(HOST)
    assert policy_host.ports == {"127.0.0.2": port}
    assert (await fetch(client, policy_host, OTHER)).content == b"B"
    assert (await fetch(client, policy_host, HOST)).content == POLICY


# --- request log ------------------------------------------------------------------------


async def test_request_log_records_host_sni_path_headers_address_and_tls(policy_host, client):
    await fetch(client, policy_host)
    (request,) = policy_host.requests(HOST)
    assert (request.method, request.path, request.host, request.sni) == (
        "GET",
        POLICY_PATH,
        HOST,
        HOST,
    )
    assert request.address == "127.0.0.2" and request.port == policy_host.endpoint(HOST)[1]
    assert request.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert request.header("Host") == HOST
    assert request.header("if-none-match") is None
    assert request.site == HOST and request.served == policy_host.response(HOST)
    assert policy_host.count(OTHER) == 0
    policy_host.clear()
    assert policy_host.count() == 0 and policy_host.hellos() == []


async def test_conditional_headers_are_logged_when_sent(policy_host, client):
    address, port = policy_host.endpoint(HOST)
    await client.get(
        f"https://{address}:{port}{POLICY_PATH}",
        headers={"Host": HOST, "If-None-Match": '"a1"'},
        extensions={"sni_hostname": HOST},
    )
    assert policy_host.requests()[0].header("If-None-Match") == '"a1"'


async def test_mutation_between_requests_is_seen_and_logged(policy_host, client):
    assert (await fetch(client, policy_host)).content == POLICY
    policy_host.update(HOST, body=b"version: STSv1\nmode: none\nmax_age: 60\n", status=200)
    assert b"mode: none" in (await fetch(client, policy_host)).content
    policy_host.update(HOST, status=503)
    assert (await fetch(client, policy_host)).status_code == 503
    assert [r.served.status for r in policy_host.requests()] == [200, 200, 503]


# --- misbehaviour -----------------------------------------------------------------------


async def test_hang_never_answers_before_the_client_times_out(policy_host, client):
    policy_host.update(HOST, behaviour=PolicyBehaviour.HANG)
    with pytest.raises(httpx.ReadTimeout):
        await fetch(client, policy_host, timeout=httpx.Timeout(5.0, read=0.1))
    assert policy_host.count() == 1


async def test_slow_body_outlasts_a_short_client_timeout(policy_host, client):
    policy_host.update(HOST, behaviour=PolicyBehaviour.SLOW_BODY, trickle_interval=0.5)
    with pytest.raises(httpx.ReadTimeout):
        await fetch(client, policy_host, timeout=httpx.Timeout(5.0, read=0.05))


async def test_slow_body_arrives_whole_with_a_patient_client(policy_host, client):
    policy_host.update(
        HOST, behaviour=PolicyBehaviour.SLOW_BODY, trickle_interval=0.001, trickle_bytes=16
    )
    response = await fetch(client, policy_host)
    assert response.content == POLICY
    assert response.headers["content-length"] == str(len(POLICY))


async def _read_streamed(client, ph, limit: int) -> tuple[httpx.Headers, int]:
    address, port = ph.endpoint(HOST)
    url = f"https://{address}:{port}{POLICY_PATH}"
    got = 0
    async with client.stream(
        "GET", url, headers={"Host": HOST}, extensions={"sni_hostname": HOST}
    ) as response:
        async for chunk in response.aiter_raw():
            got += len(chunk)
            if got > limit:
                break
        return response.headers, got


async def test_oversize_with_content_length_declares_the_full_size(policy_host, client):
    policy_host.update(HOST, behaviour=PolicyBehaviour.OVERSIZE)
    headers, got = await _read_streamed(client, policy_host, 64 * 1024)
    assert headers["content-length"] == str(10 * 1024 * 1024)
    assert got > 64 * 1024


async def test_oversize_chunked_has_no_content_length_and_the_exact_size(policy_host, client):
    policy_host.update(HOST, behaviour=PolicyBehaviour.OVERSIZE_CHUNKED, oversize_bytes=100_000)
    headers, got = await _read_streamed(client, policy_host, 10**9)
    assert "content-length" not in headers
    assert headers["transfer-encoding"] == "chunked"
    assert got == 100_000


async def test_endless_chunked_body_keeps_coming(policy_host, client):
    policy_host.update(HOST, behaviour=PolicyBehaviour.ENDLESS)
    headers, got = await _read_streamed(client, policy_host, 1024 * 1024)
    assert headers["transfer-encoding"] == "chunked" and got > 1024 * 1024


async def test_reset_aborts_the_connection_after_the_request(policy_host, client):
    policy_host.update(HOST, behaviour=PolicyBehaviour.RESET)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await fetch(client, policy_host)
    assert policy_host.count() == 1


async def test_reset_is_a_tcp_rst(policy_host, trusting):
    policy_host.update(HOST, behaviour=PolicyBehaviour.RESET)
    address, port = policy_host.endpoint(HOST)
    reader, writer = await asyncio.open_connection(
        address, port, ssl=trusting, server_hostname=HOST
    )
    writer.write(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    with pytest.raises(ConnectionResetError):
        await reader.read(1)
    writer.transport.abort()


# --- lifecycle --------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.1", "0.0.0.0", "::1", "localhost"])
async def test_binding_outside_loopback_is_refused(ca, address):
    async with PolicyHost() as ph:
        with pytest.raises(NotLoopbackError, match=repr(address)):
            await ph.add_host(HOST, address=address, cert=cert_pair(ca, HOST))


async def test_add_host_needs_a_running_host_and_a_new_name(ca):
    ph = PolicyHost()
    with pytest.raises(RuntimeError, match="running"):
        await ph.add_host(HOST, address="127.0.0.2", cert=cert_pair(ca, HOST))
    async with ph:
        await ph.add_host(HOST, address="127.0.0.2", cert=cert_pair(ca, HOST))
        with pytest.raises(ValueError, match="already added"):
            await ph.add_host(HOST.upper(), address="127.0.0.2", cert=cert_pair(ca, HOST))
        with pytest.raises(KeyError, match="nowhere"):
            ph.response("nowhere.example")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_shutdown_leaks_no_tasks_or_fds_with_requests_in_flight(ca, trusting):
    tasks_before, fds_before = asyncio.all_tasks(), _fds()
    async with httpx.AsyncClient(verify=trusting) as c, PolicyHost() as ph:
        await ph.add_host(HOST, address="127.0.0.2", cert=cert_pair(ca, HOST))
        await ph.add_host(OTHER, address="127.0.0.3", cert=cert_pair(ca, OTHER))
        ph.update(HOST, behaviour=PolicyBehaviour.HANG)
        ph.update(OTHER, behaviour=PolicyBehaviour.ENDLESS)
        hanging = asyncio.ensure_future(fetch(c, ph, HOST))
        endless = asyncio.ensure_future(
            c.send(
                c.build_request(
                    "GET",
                    f"https://127.0.0.3:{ph.ports['127.0.0.3']}{POLICY_PATH}",
                    headers={"Host": OTHER},
                    extensions={"sni_hostname": OTHER},
                ),
                stream=True,
            )
        )
        streaming = await endless
        async with asyncio.timeout(5):  # yield until the hanging request is in the app too
            while ph.count() < 2:
                await asyncio.sleep(0)
    with pytest.raises(httpx.HTTPError):
        await hanging
    await streaming.aclose()
    assert asyncio.all_tasks() == tasks_before
    assert _fds() == fds_before
    sock = socket.socket()
    with pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.2", ph.ports["127.0.0.2"]))
    sock.close()
