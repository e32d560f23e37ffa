"""engine.io.http11: one request and its response on a pipe, h11 as the oracle.

Generated responses go through :class:`Exchange` on a pipe that delivers them in
generated pieces, and through h11 in one piece (the oracle): both must give the same
status, headers and body. Where this reader is stricter than h11 (both Content-Length
and Transfer-Encoding) it must refuse; it must never accept what h11 refuses. The
bounds are tested on their own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io.http11 import HEAD_LIMIT, Exchange, HttpProtocolError, ResponseHead, open_tunnel
from engine.io.pipe import Pipe

GET = [("Host", "mta-sts.example.com"), ("Accept", "text/plain")]


class _Wire:
    """A transport stand-in: keeps what the client writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> object:
        return None


class ScriptedPipe(Pipe):
    """A pipe that receives the given pieces one at a time, each when the reader waits
    for more, then the end of the stream: the reader sees exactly those pieces."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        super().__init__()
        self.wire = _Wire()
        self.connection_made(self.wire)  # type: ignore[arg-type]
        self._pieces = [p for p in pieces if p]
        self.reads = 0

    async def _wait(self) -> None:
        self.reads += 1
        if self._pieces:
            self.data_received(self._pieces.pop(0))
        else:
            self.eof_received()


async def exchange(pieces: Sequence[bytes]) -> tuple[ResponseHead, bytes, bytes]:
    """GET on a scripted pipe: the head, the body and what was written."""
    pipe = ScriptedPipe(pieces)
    ex = Exchange(pipe)
    ex.send("GET", "/.well-known/mta-sts.txt", GET)
    head = await ex.response()
    body = b"".join([piece async for piece in ex.body()])
    return head, body, bytes(pipe.wire.written)


def oracle(data: bytes) -> tuple[int, list[tuple[str, str]], bytes] | str:
    """h11 on its own, all bytes at once: (status, headers, body), or its error text."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=GET))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    status, headers, body = 0, [], b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = [(n.decode(), v.decode("latin-1")) for n, v in event.headers]
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body
    except h11.RemoteProtocolError as exc:
        return str(exc)


# --- generated responses ---------------------------------------------------------------

TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
TOKEN = st.text(TCHAR, min_size=1, max_size=12)  # RFC 9110 §5.6.2
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
FRAMING_NAMES = {"content-length", "transfer-encoding", "connection", "upgrade"}


@dataclass(frozen=True)
class Response:
    """A response as the generator meant it."""

    status: int
    fields: list[tuple[str, str, str]]  # (name, value, folded continuation or "")
    framing: str  # "length", "chunked", "close"
    chunks: list[bytes]
    chunk_ext: bool
    trailers: list[tuple[str, str]]
    informational: int  # a 1xx head sent first (0: none)
    reason: str = "OK"  # RFC 9112 §4: reason-phrase, possibly empty
    version: str = "1.1"

    @property
    def body(self) -> bytes:
        return b"" if self.status in (204, 304) else b"".join(self.chunks)

    def wire(self) -> bytes:
        out = bytearray()
        if self.informational:
            out += b"HTTP/1.1 %d Continue\r\n\r\n" % self.informational
        out += f"HTTP/{self.version} {self.status} {self.reason}\r\n".encode("latin-1")
        for name, value, fold in self.fields:
            out += f"{name}: {value}\r\n".encode()
            if fold:
                out += f" \t{fold}\r\n".encode()  # RFC 9112 §5.2 obs-fold
        body = self.body
        if self.framing == "length":
            out += b"Content-Length: %d\r\n\r\n" % len(body) + body
        elif self.framing == "chunked":
            out += b"Transfer-Encoding: chunked\r\n\r\n"
            if self.status not in (204, 304):
                for chunk in self.chunks:
                    if chunk:
                        ext = b";name=value" if self.chunk_ext else b""
                        out += b"%x%s\r\n%s\r\n" % (len(chunk), ext, chunk)
                out += b"0\r\n"
                for name, value in self.trailers:
                    out += f"{name}: {value}\r\n".encode()
                out += b"\r\n"
        else:
            out += b"Connection: close\r\n\r\n" + body
        return bytes(out)

    def headers(self) -> list[tuple[str, str]]:
        """The fields as a reader sees them: lower-case names, obs-fold as one space."""
        out = [(n.lower(), f"{v} {f}".strip() if f else v) for n, v, f in self.fields]
        if self.framing == "length":
            out.append(("content-length", str(len(self.body))))
        elif self.framing == "chunked":
            out.append(("transfer-encoding", "chunked"))
        else:
            out.append(("connection", "close"))
        return out


@st.composite
def responses(draw: st.DrawFn) -> Response:
    names = TOKEN.filter(lambda n: n.lower() not in FRAMING_NAMES)
    fields = draw(st.lists(st.tuples(names, VALUE, st.one_of(st.just(""), VALUE)), max_size=6))
    return Response(
        status=draw(st.sampled_from([200, 200, 201, 203, 204, 206, 301, 304, 404, 500])),
        fields=fields,
        framing=draw(st.sampled_from(["length", "chunked", "close"])),
        chunks=draw(st.lists(st.binary(max_size=300), max_size=5)),
        chunk_ext=draw(st.booleans()),
        trailers=draw(st.lists(st.tuples(names, VALUE), max_size=3)),
        informational=draw(st.sampled_from([0, 0, 100, 103])),
        # RFC 9112 §4: HTAB, SP, VCHAR and obs-text.
        reason=draw(
            st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=12)
        ),
        version=draw(st.sampled_from(["1.1", "1.0"])),
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(responses(), st.lists(st.integers(min_value=0), max_size=8))
def test_a_generated_response_reads_as_h11_reads_it(response: Response, cuts: list[int]) -> None:
    data = response.wire()
    expected = oracle(data)
    assert not isinstance(expected, str), expected  # the generator makes valid responses
    head, body, _ = asyncio.run(exchange(split(data, cuts)))
    assert (head.status, list(head.headers), body) == expected
    # ... and as the generator meant it.
    assert (head.status, list(head.headers), body) == (
        response.status,
        response.headers(),
        response.body,
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=4))
def test_garbage_after_a_valid_head_is_refused_when_h11_refuses_it(
    tail: bytes, cuts: list[int]
) -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + tail
    expected = oracle(data)

    async def run() -> tuple[ResponseHead, bytes, bytes] | str:
        try:
            return await exchange(split(data, cuts))
        except HttpProtocolError as exc:
            return str(exc)

    got = asyncio.run(run())
    if not isinstance(got, str):  # accepted: so does h11, with the same body
        assert not isinstance(expected, str), (expected, got)
        assert got[1] == expected[2]


# --- the request ---------------------------------------------------------------------


async def test_the_request_is_a_get_with_the_given_headers_and_no_body() -> None:
    _, _, written = await exchange([b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert written == (
        b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n"
        b"Accept: text/plain\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/a b", GET),  # a space would end the request target
        ("/", [*GET, ("X-Evil", "a\r\nInjected: yes")]),  # CRLF would start a field
        ("/", [*GET, ("Bad Name", "x")]),
    ],
)
async def test_what_http_cannot_carry_is_not_sent(
    target: str, headers: list[tuple[str, str]]
) -> None:
    pipe = ScriptedPipe([])
    with pytest.raises(HttpProtocolError, match="cannot send"):
        Exchange(pipe).send("GET", target, headers)
    assert pipe.wire.written == b""


# --- refusals and bounds -------------------------------------------------------------


async def _refused(pieces: Sequence[bytes]) -> str:
    with pytest.raises(HttpProtocolError) as info:
        await exchange(pieces)
    return str(info.value)


async def test_both_content_length_and_transfer_encoding_are_refused() -> None:
    # RFC 9112 §6.3 item 3; h11 alone lets chunked win.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert not isinstance(oracle(data), str)
    assert "both" in await _refused([data])


@pytest.mark.parametrize(
    "length", [b"abc", b"-1", b"1, 2", b"5 5", b"0x10", b"99999999999999999999999"]
)
async def test_a_bad_content_length_is_refused(length: bytes) -> None:
    await _refused([b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nhello"])


async def test_a_transfer_coding_other_than_chunked_is_refused() -> None:
    await _refused([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"])


async def test_a_head_over_the_limit_in_small_pieces_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * (HEAD_LIMIT + 2000) + b"\r\n\r\n"
    pieces = [head[i : i + 1000] for i in range(0, len(head), 1000)]
    assert "too long" in await _refused(pieces)


async def test_a_head_over_the_limit_in_one_piece_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * HEAD_LIMIT + b"\r\n\r\n"
    assert "too long" in await _refused([head + b"body"])


@pytest.mark.parametrize(("extra", "ok"), [(0, True), (1, False)])
async def test_the_head_limit_is_where_its_blank_line_may_start(extra: int, ok: bool) -> None:
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Filler: "
    head = start + b"a" * (HEAD_LIMIT - len(start) + extra) + b"\r\n\r\n"
    assert head.index(b"\r\n\r\n") == HEAD_LIMIT + extra
    pieces = [head[:1000], head[1000:]]
    if ok:
        response, _, _ = await exchange(pieces)
        assert response.status == 200
    else:
        assert "too long" in await _refused(pieces)


async def test_a_chunks_crlf_split_across_pieces_is_read() -> None:
    # A TLS record or TCP segment may end between the CR and the LF after chunk data.
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, body, _ = await exchange([head + b"5\r\nhello\r", b"\n0\r\n\r\n"])
    assert body == b"hello"


async def test_an_endless_chunk_size_line_is_refused_within_the_limit() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    pipe = ScriptedPipe([head, *[b"1" * 1000] * 1000])
    ex = Exchange(pipe)
    ex.send("GET", "/", GET)
    await ex.response()
    with pytest.raises(HttpProtocolError, match="bad chunk-size line"):
        async for _ in ex.body():
            pass
    assert pipe.reads <= 3  # it stopped reading at the line limit (1 KiB)


async def test_chunk_data_without_its_crlf_is_refused() -> None:
    base = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    await _refused([base + b"5\r\nhelloXX0\r\n\r\n"])


@pytest.mark.parametrize(
    "data",
    [
        b"",  # closed before anything
        b"HTTP/1.1 200 OK\r\nContent-Len",  # closed inside the head
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",  # body cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # no last chunk
    ],
)
async def test_a_response_cut_short_is_refused(data: bytes) -> None:
    await _refused([data])


async def test_a_101_nobody_asked_for_is_refused() -> None:
    await _refused([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\n\r\nbytes"])


async def test_not_http_is_refused() -> None:
    await _refused([b"SSH-2.0-OpenSSH_9.6\r\n"])


async def test_a_close_delimited_body_is_everything_up_to_the_end() -> None:
    head, body, _ = await exchange([b"HTTP/1.0 200 OK\r\n\r\n", b"mode: ", b"enforce\n"])
    assert (head.status, body) == (200, b"mode: enforce\n")


async def test_repeated_fields_are_joined_in_order() -> None:
    data = b"HTTP/1.1 200 OK\r\nVia: a\r\nContent-Length: 0\r\nvia: b\r\n\r\n"
    head, _, _ = await exchange([data])
    assert head.get("via") == "a, b" and head.get("absent") is None


# --- the CONNECT request -------------------------------------------------------------


async def test_connect_asks_for_the_authority_and_returns_the_status() -> None:
    pipe = ScriptedPipe([b"HTTP/1.1 200 Connection established\r\n\r\n"])
    assert await open_tunnel(pipe, "mta-sts.example.com:443") == 200
    assert pipe.wire.written == (
        b"CONNECT mta-sts.example.com:443 HTTP/1.1\r\nHost: mta-sts.example.com:443\r\n\r\n"
    )


async def test_a_refused_connect_returns_its_status_without_reading_the_body() -> None:
    pipe = ScriptedPipe([b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1000000\r\n\r\n"])
    assert await open_tunnel(pipe, "mta-sts.example.com:443") == 403


async def test_bytes_that_come_with_the_proxys_2xx_stay_for_start_tls_to_refuse() -> None:
    # They would pass for the TLS server's first bytes: the proxy could forge them.
    pipe = ScriptedPipe([b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01forged"])
    assert await open_tunnel(pipe, "mta-sts.example.com:443") == 200
    with pytest.raises(ValueError, match="9 bytes arrived before the TLS handshake"):
        await pipe.start_tls(ssl.create_default_context(), "mta-sts.example.com")


async def test_an_authority_that_cannot_be_sent_is_refused() -> None:
    pipe = ScriptedPipe([])
    with pytest.raises(HttpProtocolError):
        await open_tunnel(pipe, "evil.example:443\r\nX: y")
    assert pipe.wire.written == b""
