"""A tiny MX whose EHLO keywords and RCPT replies a test chooses; it records the wire.

The harness's receiving MTA (aiosmtpd) always offers 8BITMIME and never SMTPUTF8 and
keeps no MAIL FROM parameters; the outbound tests need all three under their control.
It speaks just enough SMTP for one client: no STARTTLS (never offered), no pipelining.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["ExtMx"]


@dataclass
class ExtMx:
    """``async with ExtMx(address, keywords=(...)) as mx``; it listens on ``mx.port``.

    Attributes:
        address: the loopback address to bind (port 0).
        keywords: the EHLO keywords offered (``8BITMIME``, ``SMTPUTF8``, ...).
        rcpt_replies: the reply to RCPT per recipient address (default ``250 2.1.5 ok``).
        mail_lines: every MAIL command line received, as sent.
        rcpt_lines: every RCPT command line received.
        messages: the message bytes received (dot-stuffing undone), in order.
        received: set when a message arrives (the readiness signal; no sleeps).
    """

    address: str
    keywords: tuple[str, ...] = ("8BITMIME",)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_lines: list[str] = field(default_factory=list)
    rcpt_lines: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> ExtMx:
        self._server = await asyncio.start_server(self._session, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            writer.write(b"220 mx.ext.example ESMTP\r\n")
            while line := await reader.readline():
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                verb = text[:4].upper()
                if verb == "EHLO":
                    lines = ["mx.ext.example", *self.keywords]
                    out = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
                    writer.write(out.encode())
                elif verb == "MAIL":
                    self.mail_lines.append(text)
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    self.rcpt_lines.append(text)
                    address = text.partition("<")[2].partition(">")[0]
                    reply = self.rcpt_replies.get(address, "250 2.1.5 ok")
                    writer.write(reply.encode() + b"\r\n")
                elif verb == "DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = bytearray()
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        body += chunk[1:] if chunk.startswith(b"..") else chunk
                    self.messages.append(bytes(body))
                    self.received.set()
                    writer.write(b"250 2.0.0 accepted\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
