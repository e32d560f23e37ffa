"""What a fake receiving MTA observed: one frozen record per SMTP session.

Scenario expectations ("which MX received it, over what TLS, was anything sent
in clear") are asserted against these records, so they say what happened on
the wire and nothing the engine told us about itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["MtaSession", "RcptResult", "ReceivedMessage", "SessionEnd", "Transaction"]


class SessionEnd(StrEnum):
    """How a session ended (the first cause observed wins).

    Attributes:
        QUIT: the client sent QUIT.
        CLIENT_DROP: the client closed or reset the connection without QUIT.
        SERVER_DISCONNECT: the script dropped it (``Disconnect``, a 421 reply, or a
            ``multiline-broken`` reply).
        SERVER_RESET: the script aborted it with a TCP RST (a ``reset`` fault, or
            the ``broken-reset`` STARTTLS mode).
        TLS_FAILED: the STARTTLS handshake failed (either side gave up), or a
            ``broken-*`` mode broke it.
        TIMEOUT: the client was idle for longer than the MTA's idle timeout.
        SHUTDOWN: the MTA was shut down while the session was live.
    """

    QUIT = "quit"
    CLIENT_DROP = "client-drop"
    SERVER_DISCONNECT = "server-disconnect"
    SERVER_RESET = "server-reset"
    TLS_FAILED = "tls-failed"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class RcptResult:
    """One RCPT TO and the reply it got.

    Attributes:
        address: the recipient as the client sent it.
        reply: the reply line sent, or None if the server disconnected instead.
    """

    address: str
    reply: str | None

    @property
    def accepted(self) -> bool:
        """True if the recipient got a 2yz reply."""
        return self.reply is not None and self.reply.startswith("2")


@dataclass(frozen=True, slots=True)
class Transaction:
    """One MAIL FROM and what followed it, up to the end of DATA or a reset.

    Attributes:
        mail_from: the reverse path as sent (``""`` for the null sender).
        mail_reply: the reply to MAIL, or None if the server disconnected instead.
        rcpts: every RCPT TO in order, with its reply.
        data_reply: the reply after the message (or the scripted reply to the
            DATA command itself); None if DATA did not get that far.
        message: the message bytes (dot-unstuffed, CRLF line ends) when the
            final ``.`` arrived, whatever the reply; otherwise None.
        over_tls: True if MAIL FROM was sent inside a TLS session.
    """

    mail_from: str
    mail_reply: str | None
    rcpts: tuple[RcptResult, ...]
    data_reply: str | None
    message: bytes | None
    over_tls: bool

    @property
    def delivered(self) -> bool:
        """True if the message was received and accepted with a 2yz reply."""
        return self.message is not None and (self.data_reply or "").startswith("2")


@dataclass(frozen=True, slots=True)
class MtaSession:
    """Everything one receiving MTA saw in one SMTP connection.

    Attributes:
        session_id: 1-based, in connection order, per MTA.
        mx_host: the MX host name the MTA played.
        client: the client's (address, port).
        helo_verb: ``"EHLO"`` or ``"HELO"``, whichever greeting was accepted
            last, or None.
        helo_name: the name the client gave in that greeting, or None.
        starttls_offered: STARTTLS was advertised in an EHLO reply.
        starttls_attempted: the client sent STARTTLS.
        tls_completed: a TLS handshake completed.
        tls_version: e.g. ``"TLSv1.3"`` when TLS completed, else None.
        cipher: the negotiated cipher suite name, else None.
        sni: the SNI host name the client sent in its ClientHello, or None.
        cert_served: the label of the certificate served (``ServerCert.label``
            or its SAN/subject), or None if no ClientHello arrived.
        tls_error: why the handshake failed, or None.
        transactions: every MAIL transaction, in order.
        in_clear: some MAIL, RCPT or DATA command was sent without TLS.
        commands: the command verbs received, in order (``"EHLO"``, ``"MAIL"``...).
        ended: how the session ended.
        protocol_errors: unexpected things the client did (or the MTA itself
            failed at); empty for a well-behaved session.
        faults: what went wrong on the server's side, in order, as ``"<stage>:
            <what>"``: every scripted action that refused or broke a stage
            (``"mail: reset"``, ``"rcpt: 450 4.2.0 busy"``), a STARTTLS mode that
            broke the handshake (``"handshake: broken-stall"``), and a real
            handshake that failed (``"handshake: failed: <error>"``).
    """

    session_id: int
    mx_host: str
    client: tuple[str, int]
    helo_verb: str | None
    helo_name: str | None
    starttls_offered: bool
    starttls_attempted: bool
    tls_completed: bool
    tls_version: str | None
    cipher: str | None
    sni: str | None
    cert_served: str | None
    tls_error: str | None
    transactions: tuple[Transaction, ...]
    in_clear: bool
    commands: tuple[str, ...]
    ended: SessionEnd
    protocol_errors: tuple[str, ...]
    faults: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message the MTA accepted (the mailbox view).

    Attributes:
        session_id: the session it arrived in.
        mx_host: the MX host name the MTA played.
        mail_from: the reverse path.
        rcpt_to: the recipients that were accepted, in order.
        data: the message bytes.
        tls_version: the TLS version it arrived over, or None if in clear.
    """

    session_id: int
    mx_host: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    tls_version: str | None

    @property
    def in_clear(self) -> bool:
        """True if the message arrived without TLS."""
        return self.tls_version is None
