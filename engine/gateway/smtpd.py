"""The listener's SMTP session: aiosmtpd's protocol with our admission, timers and commands.

Theory of operation
-------------------
One :class:`SmtpSession` per client connection, made by
:class:`~engine.gateway.listener.Listener` (the :class:`SessionOwner`). aiosmtpd runs
the command loop, EHLO, STARTTLS and the AUTH exchanges; this class takes over what
aiosmtpd leaves lenient, each at the command that carries it:

* ``connection_made``: the listener admits the client or gives the ``421`` to send;
* ``_timeout_cb`` (aiosmtpd's idle timer) and a session deadline end with ``421 4.4.2``;
* HELO, EHLO, NOOP, VRFY, HELP and AUTH refuse control characters and invalid UTF-8;
  MAIL and RCPT are parsed by :mod:`engine.gateway.inbound`;
* DATA is read here: only ``CRLF . CRLF`` ends it, a bare LF becomes CRLF, a bare CR or
  a line over 1,000 octets refuses the message (docs/hardening.md says why);
* ``push`` never sends a control character (aiosmtpd echoes an unknown verb).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol, cast

from aiosmtpd.smtp import MISSING, SMTP, syntax

from engine.config import ListenerConfig
from engine.gateway.auth import Users
from engine.gateway.inbound import Refusal, check_argument, parse_mail, parse_rcpt

__all__ = ["SessionOwner", "SmtpSession"]


class SessionOwner(Protocol):
    """What a session needs of the listener that made it (``engine.gateway.listener``)."""

    @property
    def config(self) -> ListenerConfig:
        """The ``[listener]`` settings in force."""

    @property
    def users(self) -> Users | None:
        """The AUTH users, or None when AUTH is not offered."""

    def admit(self, proto: SmtpSession, transport: asyncio.BaseTransport) -> str | None:
        """The reply refusing a new client, or None to admit it."""

    def disconnected(self, proto: SmtpSession) -> None:
        """The client went away."""

    def timed_out(self, proto: SmtpSession, which: str) -> None:
        """An idle or session time limit was reached."""

    def refused_data(self, proto: SmtpSession, reply: str) -> None:
        """A message was refused at the end of DATA."""

    def failed(self, proto: SmtpSession, error: Exception) -> str:
        """An exception in the session: the reply to send."""


def _printable(text: str) -> str:
    """A reply never carries a control character (aiosmtpd echoes unknown verbs)."""
    return "".join(c if " " <= c != "\x7f" else "?" for c in text)


class SmtpSession(SMTP):  # aiosmtpd ships no type information (Any base)
    """aiosmtpd's SMTP session with our admission, timers, commands and DATA reader.

    Args:
        listener: the listener that admits, counts and logs this session.
        kwargs: aiosmtpd's ``SMTP`` arguments.
    """

    def __init__(self, listener: SessionOwner, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        # aiosmtpd keeps these limits in a class-level dict that EHLO mutates.
        limit = SMTP.command_size_limit
        self.command_size_limits = collections.defaultdict(lambda: limit)
        self.icid = 0
        self.client = ""
        self.auth_failures = 0  # failed AUTH attempts in this session
        self._listener = listener
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- admission and time ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:  # the TLS transport after STARTTLS
            super().connection_made(transport)
            return
        refusal = self._listener.admit(self, transport)
        if refusal is not None:
            # RFC 5321 §3.8: a server that cannot serve says 421 before it closes.
            # uvloop's transports are not registered as asyncio.WriteTransport: a cast.
            cast(asyncio.WriteTransport, transport).write(f"421 {refusal}\r\n".encode())
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        cfg = self._listener.config
        self._deadline = self.loop.call_later(cfg.session_timeout, self._expire, "session")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return  # refused before the session began: nothing to tear down
        self._admitted = False
        if self._deadline is not None:
            self._deadline.cancel()
        self._listener.disconnected(self)
        super().connection_lost(exc)

    def _timeout_cb(self) -> None:  # aiosmtpd's idle timer (closes without a word)
        self._expire("idle")

    def _expire(self, which: str) -> None:
        if self.transport is None:
            return
        self._listener.timed_out(self, which)
        what = "Idle timeout" if which == "idle" else "Session time limit"
        # RFC 5321 §4.5.3.2.7 timeouts; RFC 3463 X.4.2 "bad connection".
        self._writer.write(f"421 4.4.2 {self.hostname} {what} exceeded, closing\r\n".encode())
        self.transport.close()

    async def handle_exception(self, error: Exception) -> str:
        return self._listener.failed(self, error)

    async def push(self, status: Any) -> None:
        await super().push(_printable(status) if isinstance(status, str) else status)

    async def _refused(self, verb: str, arg: str | None) -> bool:
        try:
            check_argument(verb, arg)
        except Refusal as r:
            await self.push(r.reply)
            return True
        return False

    # -- commands ----------------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refused("HELO", hostname):
            await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refused("EHLO", hostname):
            await super().smtp_EHLO(hostname)

    @syntax("NOOP [ignored]")
    async def smtp_NOOP(self, arg: str) -> None:
        if not await self._refused("NOOP", arg):
            await super().smtp_NOOP(arg)

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:
        if not await self._refused("VRFY", arg):
            await super().smtp_VRFY(arg)

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str) -> None:
        if not await self._refused("HELP", arg):
            await super().smtp_HELP(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self._listener.users is None:
            await self.push("502 5.5.1 AUTH not available")  # not advertised either
        elif not await self._refused("AUTH", arg):
            await super().smtp_AUTH(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.session is not None and self.envelope is not None
        try:
            mail = parse_mail(arg, max_size=self._listener.config.max_message_size)
        except Refusal as r:
            await self.push(r.reply)
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
        elif mail.options and not self.session.extended_smtp:
            await self.push("501 5.5.4 MAIL parameters need EHLO")  # RFC 5321 §4.1.1.11
        else:
            # aiosmtpd's convention: "<>" is the null reverse-path.
            self.envelope.mail_from = mail.address or "<>"
            self.envelope.smtp_utf8 = mail.smtputf8
            self.envelope.mail_options.extend(mail.options)
            await self.push("250 2.1.0 Ok")

    @syntax("RCPT TO: <address>")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        try:
            address = parse_rcpt(arg, smtputf8=bool(self.envelope.smtp_utf8))
        except Refusal as r:
            await self.push(r.reply)
            return
        status = await self._call_handler_hook("RCPT", address, [])
        await self.push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data, fault = await self._read_body()
        if fault is None:
            self.envelope.content = self.envelope.original_content = data
            status = await self._call_handler_hook("DATA")
        else:
            self._listener.refused_data(self, fault)
            status = fault
        self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
        if status is not MISSING:
            await self.push(status)
        if status.startswith("421") and self.transport is not None:
            self.transport.close()

    async def _read_body(self) -> tuple[bytes, str | None]:
        """The message up to ``CRLF . CRLF``; (content, None) or (b"", the reply)."""
        limit = self._listener.config.max_message_size
        lines: list[bytes] = []
        size, fault, tail = 0, None, False
        while True:
            try:
                # RFC 5321 §4.1.1.4: only CRLF . CRLF ends the data, never LF . LF.
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as over:
                await self._reader.readexactly(over.consumed)
                # RFC 5321 §4.5.3.1.6: a line is at most 1000 octets with its CRLF.
                fault = fault or "554 5.6.0 Message has a line longer than 1000 octets"
                tail = True  # what follows is the rest of that line, not a new one
                continue
            self._reset_timeout()  # a line of DATA is activity
            if line == b".\r\n" and not tail:
                break
            tail = False
            if fault is not None:
                continue  # read on to the end, keep nothing (RFC 5321 §4.2.5)
            text = line[:-2]
            if text.startswith(b"."):
                text = text[1:]  # RFC 5321 §4.5.2: transparency
            if b"\r" in text:
                # RFC 5321 §2.3.8: CR only as part of CRLF. A bare CR is refused, never
                # forwarded: a receiver that ends lines on CR would read it as one.
                fault, lines = "554 5.6.0 Message contains a bare CR; lines end in CRLF", []
                continue
            # A bare LF becomes CRLF (Postfix's smtpd_forbid_bare_newline = normalize).
            text = text.replace(b"\n", b"\r\n")
            size += len(text) + 2
            if size > limit:
                # RFC 1870 §6.3 / RFC 3463 X.3.4.
                fault, lines = "552 5.3.4 Message size exceeds fixed maximum message size", []
                continue
            lines.append(text)
        if fault is not None:
            return b"", fault
        return b"".join(t + b"\r\n" for t in lines), None
