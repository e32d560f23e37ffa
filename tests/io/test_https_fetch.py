"""The policy fetch on the pipe (direct and through a CONNECT proxy), and the TLS-RPT
POST through httpx on the same network, on asyncio's loop and on uvloop."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from engine.core.clock import ManualClock
from engine.core.discovery import FetchErrorKind, FetchFailed, FetchOk
from engine.io.dialer import Dialer
from engine.io.fetch import USER_AGENT, PolicyFetcher
from engine.io.https import pkix_judge
from engine.tlsrpt.poster import ReportPoster
from tests.io.tls_peers import LOOPS, ConnectProxy, FixedResolver, HttpsServer, Pki, run

pytestmark = pytest.mark.parametrize("loop", LOOPS)

POLICY = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"
CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(POLICY)
    + POLICY
)


def _clock() -> ManualClock:
    import time

    return ManualClock(time.time())  # trustme issues its certificates at the wall clock


def _fetcher(pki: Pki, port: int, resolver: Any, proxy: str | None = None) -> PolicyFetcher:
    dialer = Dialer(endpoint_map={("127.0.0.1", 443): ("127.0.0.1", port)}, loopback_only=True)
    judge = pkix_judge([pki.root_der()])
    return PolicyFetcher(resolver, dialer, judge, _clock(), timeout=10, proxy=proxy)


def test_a_direct_fetch_resolves_dials_judges_and_gets(loop: str) -> None:
    async def main() -> None:
        pki = Pki()
        https = HttpsServer(OK, pki.server_context())
        _, port = await https.start()
        resolver = FixedResolver()
        try:
            outcome = await _fetcher(pki, port, resolver).fetch("example.com")
        finally:
            await https.stop()
        assert outcome == FetchOk(POLICY, "text/plain")
        assert resolver.asked == [("mta-sts.example.com", "A")]
        (request,) = https.requests
        assert request.startswith(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n")
        assert b"Host: mta-sts.example.com\r\n" in request
        assert f"User-Agent: {USER_AGENT}\r\n".encode() in request
        assert b"Accept-Encoding: identity\r\n" in request

    run(loop, main)


def test_a_fetch_through_the_proxy_tunnels_to_the_policy_host(loop: str) -> None:
    async def main() -> None:
        pki = Pki()
        https = HttpsServer(OK, pki.server_context())
        upstream = await https.start()
        proxy = ConnectProxy(upstream)
        phost, pport = await proxy.start()
        resolver = FixedResolver()
        try:
            fetcher = _fetcher(pki, 1, resolver, proxy=f"{phost}:{pport}")
            outcome = await fetcher.fetch("example.com")
        finally:
            await proxy.stop()
            await https.stop()
        assert outcome == FetchOk(POLICY, "text/plain")
        assert resolver.asked == []  # the proxy resolves
        assert proxy.asked == [
            b"CONNECT mta-sts.example.com:443 HTTP/1.1\r\nHost: mta-sts.example.com:443\r\n\r\n"
        ]
        assert len(https.requests) == 1

    run(loop, main)


def test_a_proxy_that_forges_the_tunnels_first_bytes_gets_no_policy_through(loop: str) -> None:
    # The proxy answers 200 and, in the same write, a "response" of its own: it must not
    # be read as the policy host's (it never went through TLS).
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(POLICY) + POLICY

    async def main() -> None:
        pki = Pki()
        proxy = ConnectProxy(("127.0.0.1", 1), extra=forged)
        phost, pport = await proxy.start()
        try:
            fetcher = _fetcher(pki, 1, FixedResolver(), proxy=f"{phost}:{pport}")
            outcome = await fetcher.fetch("example.com")
        finally:
            await proxy.stop()
        assert isinstance(outcome, FetchFailed)
        assert outcome.kind is FetchErrorKind.CONNECT
        assert "before the TLS handshake" in outcome.detail

    run(loop, main)


def test_a_proxy_refusing_the_tunnel_is_a_connect_failure(loop: str) -> None:
    async def main() -> None:
        proxy = ConnectProxy(("127.0.0.1", 1), reply=b"HTTP/1.1 403 Forbidden\r\n\r\n")
        phost, pport = await proxy.start()
        try:
            outcome = await _fetcher(Pki(), 1, FixedResolver(), f"{phost}:{pport}").fetch(
                "example.com"
            )
        finally:
            await proxy.stop()
        assert outcome == FetchFailed(
            FetchErrorKind.CONNECT, "proxy: CONNECT mta-sts.example.com:443 answered 403"
        )

    run(loop, main)


def test_a_certificate_for_another_name_is_refused_before_any_request(loop: str) -> None:
    async def main() -> None:
        pki = Pki(names=("mta-sts.other.example",))
        https = HttpsServer(OK, pki.server_context())
        _, port = await https.start()
        try:
            outcome = await _fetcher(pki, port, FixedResolver()).fetch("example.com")
        finally:
            await https.stop()
        assert isinstance(outcome, FetchFailed)
        assert outcome.kind is FetchErrorKind.CERTIFICATE
        assert https.requests == []

    run(loop, main)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (b"HTTP/1.1 301 Moved\r\nLocation: https://evil.example/\r\n\r\n", FetchErrorKind.REDIRECT),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", FetchErrorKind.STATUS),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n", FetchErrorKind.OVERSIZE),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n", FetchErrorKind.BODY),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            FetchErrorKind.CONNECT,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 70000, FetchErrorKind.OVERSIZE),
    ],
)
def test_answers_that_are_not_a_policy(loop: str, answer: bytes, kind: FetchErrorKind) -> None:
    async def main() -> None:
        pki = Pki()
        https = HttpsServer(answer, pki.server_context())
        _, port = await https.start()
        try:
            outcome = await _fetcher(pki, port, FixedResolver()).fetch("example.com")
        finally:
            await https.stop()
        assert isinstance(outcome, FetchFailed) and outcome.kind is kind, outcome

    run(loop, main)


def test_the_tlsrpt_post_goes_through_httpx_on_the_engine_network(loop: str) -> None:
    report = gzip.compress(b'{"organization-name": "x"}')

    async def main() -> None:
        pki = Pki(names=("tlsrpt.example.com",))
        https = HttpsServer(CREATED, pki.server_context())
        _, port = await https.start()
        resolver = FixedResolver()
        dialer = Dialer(endpoint_map={("127.0.0.1", 443): ("127.0.0.1", port)}, loopback_only=True)
        poster = ReportPoster(resolver, dialer, [pki.root_der()], _clock(), timeout=10)  # type: ignore[arg-type]
        try:
            result = await poster.post("https://tlsrpt.example.com/v1/report", report)
        finally:
            await poster.aclose()
            await https.stop()
        assert result == (True, "HTTP 201")
        assert resolver.asked == [("tlsrpt.example.com", "A")]
        (request,) = https.requests
        head, _, body = request.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v1/report HTTP/1.1\r\n")
        assert b"content-type: application/tlsrpt+gzip" in head.lower()
        assert body == report

    run(loop, main)


def test_a_tlsrpt_collector_with_a_bad_certificate_is_not_sent_the_report(loop: str) -> None:
    async def main() -> None:
        pki = Pki(names=("other.example.com",))
        https = HttpsServer(CREATED, pki.server_context())
        _, port = await https.start()
        dialer = Dialer(endpoint_map={("127.0.0.1", 443): ("127.0.0.1", port)}, loopback_only=True)
        poster = ReportPoster(FixedResolver(), dialer, [pki.root_der()], _clock(), timeout=10)  # type: ignore[arg-type]
        try:
            accepted, detail = await poster.post("https://tlsrpt.example.com/v1/report", b"x")
        finally:
            await poster.aclose()
            await https.stop()
        assert not accepted and "HttpsRefused" in detail
        assert https.requests == []

    run(loop, main)
