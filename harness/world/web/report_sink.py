"""The world's TLS-RPT HTTPS collector: records every POSTed report, answers as told.

Theory of operation
-------------------
RFC 8460 §5.4 (RPT-14): an ``https:`` rua receives a POST whose body is the report,
``application/tlsrpt+gzip`` (RFC 8460 §5.2, RPT-13: gzip SHOULD be used) or
``application/tlsrpt+json``; 200 and 201 mean "delivered", anything else is a failure the
sender may retry (RPT-15). :class:`ReportSink` serves one host name on one 127.x address
(port 0) with the same hypercorn machinery as the policy hosts
(:class:`~harness.world.web._server.TlsAsgiServer`). For every request it records a
:class:`ReceivedReport`: path, method, content type, raw body size, the decoded JSON (or
why decoding failed), and the status it answered.

Answers: per path, a script of statuses (:meth:`ReportSink.script`), consumed one per
request, the last one repeating; by default 201. So ``script("/tlsrpt", 503, 201)`` gives
a failure then success, which is what a retry test needs. A scripted non-2xx status is
answered even for a malformed body (a collector that is down does not parse); a scripted
2xx is replaced by 415 for an unknown media type and by 400 for a body that does not
gunzip or parse as a JSON object, so a broken sender cannot pass as "delivered".

Reports sent by mail (``mailto:`` rua) are not this module's business: they reach the
receiving MTA of the rua domain (``harness.world`` ReceivingMta) and are read from its
mailbox.
"""

from __future__ import annotations

import json
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from harness.world.web._server import (
    CertPair,
    Receive,
    Scope,
    Send,
    TlsAsgiServer,
    header,
    require_loopback,
    server_context,
)

__all__ = ["GZIP_TYPE", "JSON_TYPE", "ReceivedReport", "ReportSink"]

GZIP_TYPE = "application/tlsrpt+gzip"  # RFC 8460 §5.4 / §6.4
JSON_TYPE = "application/tlsrpt+json"  # RFC 8460 §5.4 / §6.5
_MAX_BODY = 16 * 1024 * 1024  # bytes, raw and decompressed


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """One request that reached the report sink.

    Attributes:
        path: the request path.
        method: e.g. ``"POST"``.
        content_type: the Content-Type as sent, or None.
        raw_size: body size in bytes as received (compressed for gzip).
        report: the decoded JSON object, or None when it could not be decoded.
        error: why decoding failed, or None.
        status: the status answered.
        host: the Host header, or None.
    """

    path: str
    method: str
    content_type: str | None
    raw_size: int
    report: dict[str, Any] | None
    error: str | None
    status: int
    host: str | None


def _decode(content_type: str | None, body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == GZIP_TYPE:
        inflater = zlib.decompressobj(wbits=31)  # gzip framing only
        try:
            body = inflater.decompress(body, _MAX_BODY)
        except zlib.error as exc:
            return None, f"not gzip: {exc}"
        if inflater.unconsumed_tail:
            return None, f"decompressed body exceeds {_MAX_BODY} bytes"
        if not inflater.eof:
            return None, "truncated gzip stream"
    elif media != JSON_TYPE:
        return None, f"unsupported media type {content_type!r}"
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(decoded, dict):
        return None, f"report is a JSON {type(decoded).__name__}, not an object"
    return decoded, None


class ReportSink:
    """A TLS-RPT HTTPS collector for ``name`` on a loopback address (async context manager).

    Args:
        name: the collector's host name, e.g. ``"c.rpt.example"``.
        address: its 127.0.0.0/8 address (port 0 is bound).
        cert: (chain PEM, key PEM) it presents.
        handshake_timeout: seconds a client may take for the TLS handshake.

    Raises:
        NotLoopbackError: ``address`` is outside 127.0.0.0/8.
    """

    def __init__(
        self, name: str, *, address: str, cert: CertPair, handshake_timeout: float = 5.0
    ) -> None:
        self.name = name.rstrip(".").lower()
        self._address = require_loopback(address)
        self._cert = cert
        self._server = TlsAsgiServer(self._app, handshake_timeout=handshake_timeout)
        self._port = 0
        self._scripts: dict[str, deque[int]] = {}
        self._log: list[ReceivedReport] = []

    async def __aenter__(self) -> ReportSink:
        self._port = await self._server.listen(self._address, server_context(self._cert))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.aclose()

    @property
    def endpoint(self) -> tuple[str, int]:
        """The (address, port) the sink listens on (port 0 before it starts)."""
        return self._address, self._port

    def url(self, path: str = "/") -> str:
        """The rua URI a TLSRPT record would carry, ``https://<name><path>`` (port 443)."""
        return f"https://{self.name}{path}"

    def script(self, path: str, *statuses: int) -> None:
        """Answer requests to ``path`` with ``statuses`` in turn; the last one repeats.

        Raises:
            ValueError: no status given, or one outside 100..599.
        """
        if not statuses or any(not 100 <= s <= 599 for s in statuses):
            raise ValueError(f"ReportSink.script({path!r}): bad statuses {statuses!r}")
        self._scripts[path] = deque(statuses)

    def reports(self, path: str | None = None) -> list[ReceivedReport]:
        """Recorded requests, all or those to ``path``."""
        return [r for r in self._log if path is None or r.path == path]

    def count(self, path: str | None = None) -> int:
        """How many requests :meth:`reports` would return."""
        return len(self.reports(path))

    def clear(self) -> None:
        """Forget recorded requests and scripts."""
        self._log.clear()
        self._scripts.clear()

    def _next_status(self, path: str) -> int:
        script = self._scripts.get(path)
        if not script:
            return 201
        return script.popleft() if len(script) > 1 else script[0]

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body, more, too_big = bytearray(), True, False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if len(body) <= _MAX_BODY:
                body += message.get("body", b"")
            else:
                too_big = True
            more = message.get("more_body", False)
        content_type = header(scope, "content-type")
        path, method = scope["path"], scope["method"]
        status = self._next_status(path)
        report: dict[str, Any] | None = None
        if method != "POST":
            error: str | None = f"method {method!r} is not POST"
            status = 405 if 200 <= status < 300 else status
        elif too_big:
            error = f"body exceeds {_MAX_BODY} bytes"
            status = 413 if 200 <= status < 300 else status
        else:
            report, error = _decode(content_type, bytes(body))
            if error is not None and 200 <= status < 300:
                status = 415 if error.startswith("unsupported media type") else 400
        self._log.append(
            ReceivedReport(
                path=path,
                method=method,
                content_type=content_type,
                raw_size=len(body),
                report=report,
                error=error,
                status=status,
                host=header(scope, "host"),
            )
        )
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
