"""``ReceivingMta``: a fake MX on a loopback address, scripted and recorded.

Theory of operation
-------------------
One ``ReceivingMta`` plays one MX host (``identity``, used in the banner and
the EHLO reply). ``__aenter__`` binds ``loop.create_server`` in the caller's
event loop on ``(host, 0)`` -- a 127.0.0.0/8 address and a kernel-chosen port
-- so it is ready (bound and listening) the moment it returns, and
``address`` reports the real port. No threads, no fixed ports, no sleeps.

Each connection gets an ``MtaProtocol`` (aiosmtpd's ``SMTP`` with our hooks)
and a snapshot of the configuration (STARTTLS mode, ``Script``, TLS setup).
Everything may be changed between scenario steps -- ``starttls``, ``script``,
``rotate_cert`` -- and applies to the next connection.

Records: a session becomes a frozen ``MtaSession`` when it ends; a message
accepted with a 2yz after DATA goes to ``messages`` at once. ``settle()``
waits until no session is live, so a test reads complete records without
polling. Protocol errors (a 5yz we did not script, a crash) are collected;
``check()`` raises if there are any.

Shutdown (``__aexit__``): stop listening, abort every live session (RST, the
session ends as ``shutdown``), also abort any socket still finishing a TLS
close, wait for every session task, and give the loop one turn so the
transports' close callbacks run. Nothing is left: no task, no transport, no fd.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import weakref
from collections.abc import Mapping
from types import TracebackType

from harness.world.mta.log import SessionConfig
from harness.world.mta.records import (
    MtaSession,
    RcptResult,
    ReceivedMessage,
    SessionEnd,
    Transaction,
)
from harness.world.mta.script import (
    HELO_ONLY,
    Disconnect,
    MxStartTls,
    Script,
    ScriptedReply,
    parse_action,
)
from harness.world.mta.session import MtaProtocol
from harness.world.mta.tls import ServerCert, TlsSetup, describe_cert

__all__ = [
    "HELO_ONLY",
    "Disconnect",
    "MtaSession",
    "MxStartTls",
    "RcptResult",
    "ReceivedMessage",
    "ReceivingMta",
    "Script",
    "ScriptedReply",
    "ServerCert",
    "SessionEnd",
    "Transaction",
    "describe_cert",
    "parse_action",
]


def _loopback(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"ReceivingMta needs an IPv4 address in 127.0.0.0/8, got {host!r}"
        ) from None
    if address.version != 4 or not address.is_loopback:
        # DESIGN §4: the harness must send no traffic beyond loopback.
        raise ValueError(f"ReceivingMta only binds 127.0.0.0/8, refusing {host!r}")
    return str(address)


class ReceivingMta:
    """A receiving MTA (one MX host) for the simulated world.

    Args:
        host: the 127.0.0.0/8 address to bind (port 0 is always used).
        identity: the MX host name it plays, e.g. ``"mx1.example.com"``.
        cert: the certificate served (the default one when ``sni_certs`` is
            given). Needed when STARTTLS is ``offered``.
        sni_certs: certificates selected by the SNI name the client sends.
        starttls: how STARTTLS is handled.
        tls_min: lowest TLS version offered (None: OpenSSL's default, 1.2).
        tls_max: highest TLS version offered (None: the highest supported).
            Below 1.2, legacy ciphers are enabled as OpenSSL 3 needs.
        script: scripted replies; the default accepts everything.
        idle_timeout: seconds a silent client is tolerated.

    Raises:
        ValueError: ``host`` is not in 127.0.0.0/8, a certificate does not
            load, or STARTTLS is offered without a certificate.

    Example::

        async with ReceivingMta("127.0.0.2", "mx1.example.com", cert=cert) as mx:
            ...  # deliver to mx.address
            await mx.settle()
            assert mx.messages[0].tls_version == "TLSv1.3"
    """

    def __init__(
        self,
        host: str,
        identity: str,
        *,
        cert: ServerCert | None = None,
        sni_certs: Mapping[str, ServerCert] | None = None,
        starttls: MxStartTls = MxStartTls.OFFERED,
        tls_min: ssl.TLSVersion | None = None,
        tls_max: ssl.TLSVersion | None = None,
        script: Script | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        self._host = _loopback(host)
        if not identity:
            raise ValueError("ReceivingMta needs the MX host name it plays, got ''")
        self.identity = identity
        self._tls_min, self._tls_max = tls_min, tls_max
        self._tls: TlsSetup | None = None
        self._starttls = MxStartTls(starttls)
        self.script = script or Script()
        self.idle_timeout = idle_timeout
        self.rotate_cert(cert, sni_certs=sni_certs)
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._closing = False
        self._next_id = 1
        self._live: set[MtaProtocol] = set()
        self._raw: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sessions: list[MtaSession] = []
        self._messages: list[ReceivedMessage] = []

    # -- configuration -------------------------------------------------------------

    @property
    def starttls(self) -> MxStartTls:
        """How STARTTLS is handled; settable between steps."""
        return self._starttls

    @starttls.setter
    def starttls(self, mode: MxStartTls) -> None:
        mode = MxStartTls(mode)
        if mode.needs_cert and self._tls is None:
            raise ValueError(f"{self.identity}: starttls={mode.value!r} needs a certificate")
        self._starttls = mode

    def rotate_cert(
        self, cert: ServerCert | None, *, sni_certs: Mapping[str, ServerCert] | None = None
    ) -> None:
        """Serve other certificates from the next STARTTLS on.

        Args:
            cert: the new default certificate, or None for none at all.
            sni_certs: the new SNI-selected certificates (replacing the old ones).

        Raises:
            ValueError: a certificate does not load, ``sni_certs`` come without a
                default ``cert``, or STARTTLS is offered and ``cert`` is None.
        """
        if cert is None:
            if sni_certs:
                raise ValueError(f"{self.identity}: sni_certs need a default cert as well")
            if self._starttls.needs_cert:
                mode = self._starttls.value
                raise ValueError(f"{self.identity}: starttls={mode!r} needs a certificate")
            self._tls = None
            return
        self._tls = TlsSetup(cert, sni_certs, tls_min=self._tls_min, tls_max=self._tls_max)

    # -- life cycle ----------------------------------------------------------------

    async def __aenter__(self) -> ReceivingMta:
        if self._server is not None:
            raise RuntimeError(f"{self.identity}: ReceivingMta is already running")
        loop = asyncio.get_running_loop()
        self._closing = False
        self._server = await loop.create_server(self._new_protocol, self._host, 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and end every session (see the module docstring)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        while self._live:
            live = list(self._live)
            for protocol in live:
                protocol.abort()
            await asyncio.gather(*(p.finished for p in live))
        for transport in list(self._raw):
            transport.abort()  # e.g. a TLS close_notify still in flight
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run

    def _new_protocol(self) -> MtaProtocol:
        config = SessionConfig(
            session_id=self._next_id,
            identity=self.identity,
            starttls=self._starttls,
            script=self.script,
            tls=self._tls,
            idle_timeout=self.idle_timeout,
        )
        self._next_id += 1
        return MtaProtocol(self, config)

    # SessionOwner
    @property
    def closing(self) -> bool:
        """True once shutdown began."""
        return self._closing

    def session_started(self, protocol: MtaProtocol) -> None:
        """Called by a session when its client connects."""
        self._live.add(protocol)
        self._idle.clear()
        if isinstance(protocol.transport, asyncio.Transport):
            self._raw.add(protocol.transport)

    def session_finished(self, protocol: MtaProtocol, record: MtaSession) -> None:
        """Called by a session when it is over."""
        self._live.discard(protocol)
        self._sessions.append(record)
        if not self._live:
            self._idle.set()

    def message_delivered(self, message: ReceivedMessage) -> None:
        """Called by a session when a message was accepted."""
        self._messages.append(message)

    # -- observations --------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the MTA listens on.

        Raises:
            RuntimeError: the MTA is not running.
        """
        if self._address is None or self._server is None:
            raise RuntimeError(f"{self.identity}: ReceivingMta is not running")
        return self._address

    @property
    def sessions(self) -> tuple[MtaSession, ...]:
        """Finished sessions, in connection order."""
        return tuple(sorted(self._sessions, key=lambda s: s.session_id))

    @property
    def messages(self) -> tuple[ReceivedMessage, ...]:
        """Messages accepted, in arrival order (the mailbox)."""
        return tuple(self._messages)

    @property
    def live_sessions(self) -> int:
        """How many sessions are in progress."""
        return len(self._live)

    @property
    def protocol_errors(self) -> tuple[str, ...]:
        """Every protocol error so far (finished and live sessions), prefixed by session."""
        finished = [(s.session_id, e) for s in self._sessions for e in s.protocol_errors]
        live = [(p.log.session_id, e) for p in self._live for e in p.log.errors]
        return tuple(f"{self.identity} session {sid}: {e}" for sid, e in sorted(finished + live))

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until no session is live (so every record is final).

        Args:
            timeout: seconds to wait at most.

        Raises:
            TimeoutError: sessions are still live after ``timeout``.
        """
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    def check(self) -> None:
        """Fail loudly if a client broke the protocol or the MTA itself failed.

        Raises:
            AssertionError: listing every protocol error.
        """
        errors = self.protocol_errors
        if errors:
            raise AssertionError(
                f"{len(errors)} SMTP protocol error(s) at {self.identity}:\n  "
                + "\n  ".join(errors)
            )

    def clear(self) -> None:
        """Forget finished sessions and messages (for reuse between tests)."""
        self._sessions.clear()
        self._messages.clear()
