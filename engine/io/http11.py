"""One HTTP/1.1 request and its response on a :class:`~engine.io.pipe.Pipe`.

Theory of operation
-------------------
The policy fetch makes one request per connection (RFC 8461 §3.3: a GET of one
well-known path, no caching, no redirects), and an HTTP CONNECT proxy takes one
request before the tunnel. Neither needs a client library's pools, URL objects,
header classes, cookie jars or redirect machinery: on a cold resolution those layers
(httpx, httpcore, anyio) cost more of the client's CPU than the TLS handshake.

Why not h11 (the parser under httpx), driven directly on the pipe: it was, and
measured against this reader on the same pipe (CPU per exchange, 20,000 exchanges,
``python`` of a GET answered by a 200 of ~70 body bytes): 68 µs against 16 µs on
asyncio's loop, 60 µs against 13 µs on uvloop, chunked or not; a CONNECT 35 µs against
about 8. Through the proxy a cold resolution makes both, so h11 costs about 75 µs of
the client's 0.9 to 1.5 ms (6 to 8 %), and ``bench/bench_resolve.py``'s target is the
client's CPU per cold resolution at most postfix-mta-sts-resolver's: in three
interleaved runs each, ours/PMSR was 0.97 to 1.25 with h11 and 0.78 to 0.97 with
this reader. So the one response is read here, strictly and with bounds, and h11 is
the test oracle (``tests/io/test_http11.py`` feeds generated responses to both and
requires the same status, headers and body, or a refusal from this reader where it is
stricter).

* :func:`parse_head` checks a head against RFC 9112's grammar: the status line
  (§4), field lines (§5: a token, a colon, a value without CR, LF or NUL; obs-fold
  replaced by a space, §5.2), the blank line; at most 16 KiB (:data:`HEAD_LIMIT`).
* :func:`framing` decides how the body ends (RFC 9112 §6.3): chunked (the only
  transfer coding accepted), a ``Content-Length`` (repeats must agree), or the end of
  the connection; both headers at once, or a bad length, is an error.
* :class:`Exchange` writes the request and yields the body piece by piece, chunk
  framing removed, so the caller can stop at its cap.

Nothing here has a timeout: the caller bounds the exchange.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from engine.io.pipe import Pipe

__all__ = [
    "HEAD_LIMIT",
    "Exchange",
    "HttpProtocolError",
    "ResponseHead",
    "framing",
    "open_tunnel",
    "parse_head",
]

HEAD_LIMIT = 16 * 1024  # bytes of a response head (h11's default bound too)
_LINE_LIMIT = 1024  # bytes of a chunk-size line or a trailer line
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF
# (the SP before an empty reason is often left out; accepted, as h11 does).
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?\r\n")
# RFC 9110 §5.1, §5.5: field-name is a token; a value has no CR, LF or NUL; OWS around.
_FIELD_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\x00]*?)[ \t]*\r\n")
_OBS_FOLD = re.compile(rb"[ \t]+([^\r\n\x00]*?)[ \t]*\r\n")  # RFC 9112 §5.2
# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF (extensions ignored, §7.1.1).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n\x00]*)?\r\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
# A host name or IP address literal as an authority: no space, CR, LF or "/".
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


class HttpProtocolError(Exception):
    """The peer's bytes are not HTTP/1.1 this client accepts, or it closed too early."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A response's status line and headers.

    Attributes:
        status: the status code.
        headers: (lower-case name, value) pairs, in the order received.
    """

    status: int
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The value of header ``name`` (lower case); repeated fields joined by ", "."""
        values = [v for n, v in self.headers if n == name]
        # RFC 9110 §5.3: a repeated field is equivalent to one with the values joined.
        return ", ".join(values) if values else None


def parse_head(head: bytes) -> ResponseHead:
    """Read a response head: the status line, field lines and the blank line.

    Raises:
        HttpProtocolError: anything outside RFC 9112's grammar, named.
    """
    status = _STATUS_LINE.match(head)
    if status is None:
        raise HttpProtocolError(f"bad status line: {head[:40]!r}")
    fields: list[list[bytes]] = []
    pos, end = status.end(), len(head) - 2
    while pos < end:
        line = _FIELD_LINE.match(head, pos)
        if line is not None:
            fields.append([line.group(1), line.group(2)])
        elif fields and (fold := _OBS_FOLD.match(head, pos)) is not None:
            # RFC 9112 §5.2: a recipient replaces obs-fold with SP before reading it.
            fields[-1][1] = b" ".join(v for v in (fields[-1][1], fold.group(1)) if v)
            line = fold
        else:
            raise HttpProtocolError(f"bad header line: {head[pos : pos + 40]!r}")
        pos = line.end()
    if head[pos:] != b"\r\n":
        raise HttpProtocolError("response head does not end with a blank line")
    headers = tuple((n.decode("ascii").lower(), v.decode("latin-1")) for n, v in fields)
    return ResponseHead(int(status.group(1)), headers)


def framing(head: ResponseHead) -> int | None:
    """How the body of a final response to GET ends (RFC 9112 §6.3).

    Returns:
        The ``Content-Length``; -1 for chunked; None for "at the end of the connection".

    Raises:
        HttpProtocolError: a transfer coding other than chunked, both headers, or
            ``Content-Length`` values that are not one decimal number.
    """
    if head.status in (204, 304):
        return 0  # RFC 9112 §6.3 item 1: never a body
    coding = head.get("transfer-encoding")
    length = head.get("content-length")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise HttpProtocolError(f"unsupported Transfer-Encoding {coding!r}")
        if length is not None:
            # RFC 9112 §6.3 item 3: "ought to be handled as an error".
            raise HttpProtocolError("both Transfer-Encoding and Content-Length")
        return -1
    if length is None:
        return None
    values = {v.strip() for v in length.split(",")}
    value = values.pop() if len(values) == 1 else ""
    # RFC 9112 §6.3 item 5: an invalid or disagreeing length is unrecoverable.
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise HttpProtocolError(f"bad Content-Length {length!r}")
    return int(value)


class Exchange:
    """One request and its response on a connection that is not reused.

    Args:
        pipe: the connection.
    """

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._length: int | None = None

    def send(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> None:
        """Write a request without a body (``headers`` must include ``Host``).

        Raises:
            HttpProtocolError: a method, target, name or value that HTTP cannot carry.
        """
        if _TOKEN.fullmatch(method) is None or not target.isprintable() or " " in target:
            raise HttpProtocolError(f"cannot send {method!r} {target!r}")
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        for name, value in headers:
            if _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
                raise HttpProtocolError(f"cannot send header {name!r}: {value!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        self._pipe.write("".join(lines).encode("ascii"))

    async def response(self) -> ResponseHead:
        """The final response's head (1xx heads are skipped, RFC 9110 §15.2).

        Raises:
            HttpProtocolError: malformed, over :data:`HEAD_LIMIT`, both framing headers,
                or the connection closed before a response.
        """
        while True:
            raw = await self._pipe.read_until(b"\r\n\r\n", HEAD_LIMIT)
            if raw is None:
                raise HttpProtocolError("no response head: connection closed or head too long")
            head = parse_head(raw)
            if head.status == 101:
                raise HttpProtocolError("101 Switching Protocols without an Upgrade request")
            if head.status >= 200:
                self._length = framing(head)
                return head

    async def body(self) -> AsyncIterator[bytes]:
        """The body of the response, piece by piece as it arrives, framing removed.

        Raises:
            HttpProtocolError: bad chunk framing, or the body ended early.
        """
        if self._length is None:  # RFC 9112 §6.3 item 8: up to the end of the connection
            while data := await self._pipe.read():
                yield data
        elif self._length >= 0:
            async for data in self._exactly(self._length):
                yield data
        else:
            async for data in self._chunked():
                yield data

    async def _exactly(self, size: int) -> AsyncIterator[bytes]:
        while size > 0:
            data = await self._pipe.read(size)
            if not data:
                raise HttpProtocolError(f"connection closed {size} bytes before the body's end")
            size -= len(data)
            yield data

    async def _chunked(self) -> AsyncIterator[bytes]:
        # RFC 9112 §7.1: *chunk last-chunk trailer-section CRLF.
        while True:
            line = await self._pipe.read_until(b"\r\n", _LINE_LIMIT)
            size = _CHUNK_LINE.fullmatch(line) if line is not None else None
            if size is None:
                raise HttpProtocolError(f"bad chunk-size line: {line!r}")
            if int(size.group(1), 16) == 0:
                break
            async for data in self._exactly(int(size.group(1), 16)):
                yield data
            if await self._pipe.read_until(b"\r\n", 0) is None:
                raise HttpProtocolError("chunk data not followed by CRLF")
        while (line := await self._pipe.read_until(b"\r\n", _LINE_LIMIT)) != b"\r\n":
            # RFC 9112 §7.1.2: trailer fields are not needed here; each must be a field.
            if line is None or _FIELD_LINE.fullmatch(line) is None:
                raise HttpProtocolError(f"bad trailer line: {line!r}")


async def open_tunnel(pipe: Pipe, authority: str) -> int:
    """Ask an HTTP proxy for a tunnel to ``authority`` (``host:port``).

    RFC 9110 §9.3.6: a 2xx means the tunnel starts right after the head; any other
    code means there is none (its body is not read: the caller closes the connection).
    Bytes that came after a 2xx head stay in the pipe, whose ``start_tls`` refuses
    them: they would pass for the TLS server's.

    Returns:
        The proxy's status code.

    Raises:
        HttpProtocolError: ``authority`` is not one, or the answer is not an HTTP head.
    """
    if _AUTHORITY.fullmatch(authority) is None:
        raise HttpProtocolError(f"not a host:port to CONNECT to: {authority!r}")
    # RFC 9110 §9.3.6, RFC 9112 §3.2.3: the authority-form target; Host the same.
    Exchange(pipe).send("CONNECT", authority, [("Host", authority)])
    raw = await pipe.read_until(b"\r\n\r\n", HEAD_LIMIT)
    if raw is None:
        raise HttpProtocolError("proxy closed the connection or sent no head within 16 KiB")
    return parse_head(raw).status
