"""ReportSink: TLS-RPT POSTs over real TLS, decoding, status scripts and the log."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import ssl

import httpx
import pytest
import trustme

from harness.world.web._server import NotLoopbackError
from harness.world.web.report_sink import GZIP_TYPE, JSON_TYPE, ReportSink

NAME = "c.rpt.example"
REPORT = {
    "organization-name": "Sender Org",
    "date-range": {
        "start-datetime": "2026-01-01T00:00:00Z",
        "end-datetime": "2026-01-01T23:59:59Z",
    },
    "contact-info": "tlsrpt@sender.example",
    "report-id": "r-1",
    "policies": [],
}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def cert_pair(ca: trustme.CA) -> tuple[bytes, bytes]:
    cert = ca.issue_cert(NAME)
    return b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()


@pytest.fixture
async def sink(ca):
    async with ReportSink(NAME, address="127.0.0.5", cert=cert_pair(ca)) as s:
        yield s


@pytest.fixture
async def client(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    async with httpx.AsyncClient(verify=context, timeout=5.0) as c:
        yield c


async def post(client, sink, body: bytes, content_type: str | None, path="/tlsrpt", method="POST"):
    address, port = sink.endpoint
    headers = {"Host": NAME} | ({"Content-Type": content_type} if content_type else {})
    return await client.request(
        method,
        f"https://{address}:{port}{path}",
        content=body,
        headers=headers,
        extensions={"sni_hostname": NAME},
    )


async def test_gzip_report_is_decoded_and_answered_201(sink, client):
    body = gzip.compress(json.dumps(REPORT).encode())
    response = await post(client, sink, body, GZIP_TYPE)
    assert response.status_code == 201
    (received,) = sink.reports("/tlsrpt")
    assert received.report == REPORT and received.error is None
    assert received.raw_size == len(body)
    assert received.content_type == GZIP_TYPE and received.host == NAME
    assert received.method == "POST" and received.status == 201


async def test_json_report_is_decoded(sink, client):
    response = await post(client, sink, json.dumps(REPORT).encode(), JSON_TYPE)
    assert response.status_code == 201
    assert sink.reports()[0].report == REPORT


async def test_status_script_runs_in_order_and_the_last_repeats(sink, client):
    sink.script("/tlsrpt", 503, 500, 201)
    body = json.dumps(REPORT).encode()
    statuses = [(await post(client, sink, body, JSON_TYPE)).status_code for _ in range(5)]
    assert statuses == [503, 500, 201, 201, 201]
    assert [r.status for r in sink.reports()] == statuses
    assert all(r.report == REPORT for r in sink.reports())


async def test_scripts_are_per_path(sink, client):
    sink.script("/a", 503)
    body = json.dumps(REPORT).encode()
    assert (await post(client, sink, body, JSON_TYPE, path="/a")).status_code == 503
    assert (await post(client, sink, body, JSON_TYPE, path="/b")).status_code == 201
    assert sink.count("/a") == 1 and sink.count("/b") == 1 and sink.count() == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{}", "application/json", 415, "unsupported media type"),
        (b"{}", None, 415, "unsupported media type"),
        (b"not gzip", GZIP_TYPE, 400, "not gzip"),
        (gzip.compress(b"{")[:-4], GZIP_TYPE, 400, "truncated"),
        (b"{", JSON_TYPE, 400, "not JSON"),
        (b"[1]", JSON_TYPE, 400, "not an object"),
    ],
    ids=["json-type", "no-type", "bad-gzip", "truncated-gzip", "bad-json", "json-array"],
)
async def test_undecodable_reports_are_recorded_and_refused(
    sink, client, body, content_type, status, error
):
    response = await post(client, sink, body, content_type)
    assert response.status_code == status
    (received,) = sink.reports()
    assert received.report is None and error in received.error


async def test_scripted_failure_wins_over_a_bad_body(sink, client):
    sink.script("/tlsrpt", 503)
    assert (await post(client, sink, b"{", JSON_TYPE)).status_code == 503


async def test_non_post_is_405(sink, client):
    response = await post(client, sink, b"", None, method="GET")
    assert response.status_code == 405
    assert sink.reports()[0].method == "GET"


def test_script_rejects_bad_statuses():
    sink = ReportSink(NAME, address="127.0.0.5", cert=(b"", b""))
    with pytest.raises(ValueError, match="bad statuses"):
        sink.script("/x")
    with pytest.raises(ValueError, match="700"):
        sink.script("/x", 201, 700)


async def test_url_and_clear(sink, client):
    assert sink.url("/tlsrpt") == f"https://{NAME}/tlsrpt"
    sink.script("/tlsrpt", 503)
    await post(client, sink, b"{}", JSON_TYPE)
    sink.clear()
    assert sink.count() == 0
    assert (await post(client, sink, b"{}", JSON_TYPE)).status_code == 201


async def test_client_not_trusting_the_ca_fails(sink):
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(untrusting)
    async with httpx.AsyncClient(verify=untrusting) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(c, sink, b"{}", JSON_TYPE)
    assert sink.count() == 0


@pytest.mark.parametrize("address", ["10.0.0.1", "::1"])
def test_listening_outside_loopback_is_refused(ca, address):
    with pytest.raises(NotLoopbackError):
        ReportSink(NAME, address=address, cert=cert_pair(ca))


async def test_shutdown_leaks_no_tasks_or_fds(ca, client):
    tasks_before, fds_before = asyncio.all_tasks(), set(os.listdir("/proc/self/fd"))
    async with ReportSink(NAME, address="127.0.0.5", cert=cert_pair(ca)) as sink:
        assert (await post(client, sink, b"{}", JSON_TYPE)).status_code == 201
    await client.aclose()  # drop the pooled keep-alive connection too
    assert asyncio.all_tasks() == tasks_before
    assert set(os.listdir("/proc/self/fd")) == fds_before
