"""One HTTP/1.1 request and its response on a :class:`~engine.io.pipe.Pipe`, with h11.

Theory of operation
-------------------
The policy fetch makes one request per connection (RFC 8461 §3.3: a GET of one
well-known path, no caching, no redirects), and an HTTP CONNECT proxy takes one
request before the tunnel. Neither needs a client library's pools, URL objects,
cookie jars or redirect machinery: on a cold resolution those layers (httpx,
httpcore, anyio) cost more of the client's CPU than the TLS handshake. What they do
need is a strict reader of RFC 9112, and that is h11 (the parser under httpx),
driven here directly on the pipe: :class:`Exchange` feeds it what the pipe received
and turns its events into a head and body pieces.

Why h11 and not a reader of our own: one was written and measured against h11 on the
same pipe (a GET and a 200 of ~70 body bytes, CPU per exchange, 20,000 exchanges):
16 µs against 67 µs on asyncio's loop, 13 µs against 60 µs on uvloop. The difference,
about 50 µs, is 3 to 5 % of the client's CPU for a cold resolution (1.0 to 1.6 ms,
``bench/bench_resolve.py``), below what that bench can tell apart run to run; three
A/B runs of the bench showed no difference. A well-kept parser is worth that.

What h11 checks, and this module adds (RFC 9112):

* status line, field lines, obs-fold, chunked framing and trailers, by h11; a head,
  a chunk-size line or a trailer section over twice :data:`HEAD_LIMIT` never passes
  (h11 bounds what it holds unparsed; the pipe hands it at most that much at a time);
* a response with both ``Transfer-Encoding`` and ``Content-Length`` is refused
  (§6.3 item 3: "ought to be handled as an error"; h11 lets chunked win);
* a 101 without an Upgrade request, and a body cut short, are errors;
* after a CONNECT proxy's 2xx, any byte that came with its answer is refused: the
  tunnel's first bytes must be the TLS server's, not the proxy's (see
  :mod:`engine.io.pipe` for the other half of that check).

Nothing here has a timeout: the caller bounds the exchange.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import h11

from engine.io.pipe import Pipe

__all__ = ["HEAD_LIMIT", "Exchange", "HttpProtocolError", "ResponseHead", "open_tunnel"]

#: Bytes of an unfinished head, chunk-size line or trailer section that h11 holds before
#: it gives up; with at most this much handed over at a time, nothing over twice it passes.
HEAD_LIMIT = 16 * 1024


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


class Exchange:
    """One request and its response on a connection that is not reused.

    Args:
        pipe: the connection.
    """

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)

    def send(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> None:
        """Write a request without a body (``headers`` must include ``Host``).

        Raises:
            HttpProtocolError: a method, target, name or value that HTTP cannot carry.
        """
        try:
            data = self._h11.send(h11.Request(method=method, target=target, headers=list(headers)))
            data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise HttpProtocolError(f"cannot send {method} {target!r}: {exc}") from None
        self._pipe.write(data)

    async def response(self) -> ResponseHead:
        """The final response's head (1xx heads are skipped, RFC 9110 §15.2).

        Raises:
            HttpProtocolError: malformed, over :data:`HEAD_LIMIT`, both framing headers,
                or the connection closed before a response.
        """
        while True:
            event = await self._next()
            if isinstance(event, h11.InformationalResponse):
                continue  # h11 refuses a 101 that no Upgrade asked for
            if not isinstance(event, h11.Response):
                raise HttpProtocolError("connection closed before a response")
            head = ResponseHead(
                event.status_code,
                tuple((n.decode("ascii"), v.decode("latin-1")) for n, v in event.headers),
            )
            if head.get("transfer-encoding") is not None and head.get("content-length"):
                # RFC 9112 §6.3 item 3: "ought to be handled as an error".
                raise HttpProtocolError("both Transfer-Encoding and Content-Length")
            return head

    async def body(self) -> AsyncIterator[bytes]:
        """The body of the response, piece by piece as it arrives, framing removed.

        Raises:
            HttpProtocolError: bad chunk framing, or the body ended early.
        """
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise HttpProtocolError("connection closed before the body's end")

    async def _next(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]  # h11's union names NEED_DATA
            # b"" at the end of the stream: h11 then ends a close-delimited body, or
            # reports a body or head cut short.
            self._h11.receive_data(await self._pipe.read(HEAD_LIMIT))

    def trailing(self) -> bytes:
        """Bytes received after the head of a switched-to protocol (CONNECT's 2xx)."""
        return bytes(self._h11.trailing_data[0])


async def open_tunnel(pipe: Pipe, authority: str) -> int:
    """Ask an HTTP proxy for a tunnel to ``authority`` (``host:port``).

    RFC 9110 §9.3.6: a 2xx means the tunnel starts right after the head; any other
    code means there is none (its body is not read: the caller closes the connection).

    Returns:
        The proxy's status code.

    Raises:
        HttpProtocolError: ``authority`` cannot be sent, the answer is not an HTTP
            head, or bytes came after a 2xx head (they would pass for the server's).
    """
    exchange = Exchange(pipe)
    # RFC 9112 §3.2.3: the authority-form target; Host the same (§7.2 of RFC 9110).
    exchange.send("CONNECT", authority, [("Host", authority)])
    head = await exchange.response()
    if 200 <= head.status < 300 and exchange.trailing():
        raise HttpProtocolError("proxy sent bytes after its CONNECT answer")
    return head.status
