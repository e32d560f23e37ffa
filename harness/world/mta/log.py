"""The fake MX's per-session logic, without I/O: apply the script, record what happens.

Theory of operation
-------------------
``SessionLog`` is the sans-IO half of a session (h11 style). The aiosmtpd
protocol (``session.py``) tells it what arrived -- a command verb, an
EHLO name, a recipient, a message, a handshake result -- and gets back an
``SessionAnswer``: the reply lines to send, whether the stage succeeded, whether the
reply was scripted, or that the connection must be dropped. The log keeps the
mutable record and turns it into a frozen ``MtaSession`` at the end.

A 5yz reply the script did not choose means the client broke the protocol
(aiosmtpd only says 5yz by itself for bad syntax or bad sequence); it is
recorded as a protocol error so the harness fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.world.mta.records import (
    MtaSession,
    RcptResult,
    ReceivedMessage,
    SessionEnd,
    Transaction,
)
from harness.world.mta.script import (
    POSITIVE_CODES,
    Action,
    Disconnect,
    Fault,
    FaultKind,
    MxStartTls,
    Script,
    ScriptedReply,
    is_fault,
)
from harness.world.mta.tls import TlsSetup

__all__ = ["SessionAnswer", "SessionConfig", "SessionLog", "describe_action"]

_ENVELOPE_VERBS = frozenset({"MAIL", "RCPT", "DATA"})
_RESET_VERBS = frozenset({"EHLO", "HELO", "RSET", "STARTTLS"})
_BAD_SEQUENCE = ScriptedReply(503, "5.5.1 Error: bad sequence of commands")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The MTA's configuration, snapshotted when a client connects."""

    session_id: int
    identity: str
    starttls: MxStartTls
    script: Script
    tls: TlsSetup | None
    idle_timeout: float


@dataclass(frozen=True, slots=True)
class SessionAnswer:
    """What the server does at one stage.

    Attributes:
        lines: reply lines to send (empty when hanging up or breaking the transport).
        accepted: the stage succeeded (greeting, sender, recipient, message taken).
        scripted: the script chose this reply, so a 5yz here is no protocol error.
        hangup: drop the connection instead of replying.
        fault: break the transport this way instead of replying.
        code: the stage's positive reply code (a ``multiline-broken`` reply starts so).
    """

    lines: tuple[str, ...]
    accepted: bool = True
    scripted: bool = False
    hangup: bool = False
    fault: FaultKind | None = None
    code: int = 250


_HANGUP = SessionAnswer((), accepted=False, scripted=True, hangup=True)


def _answer(action: Action | None, default: str, stage: str = "") -> SessionAnswer:
    if action is None:
        return SessionAnswer((default,))
    if isinstance(action, Disconnect):
        return _HANGUP
    if isinstance(action, Fault):
        code = POSITIVE_CODES.get(stage, 250)
        return SessionAnswer((), accepted=False, scripted=True, fault=action.kind, code=code)
    return SessionAnswer((action.line,), accepted=action.positive, scripted=True)


def describe_action(action: Action) -> str:
    """How a session record names a scripted action (``"reset"``, ``"450 4.2.0 busy"``)."""
    if isinstance(action, Disconnect):
        return "disconnect"
    if isinstance(action, Fault):
        return str(action.kind)
    return action.line


@dataclass
class _Txn:
    mail_from: str
    over_tls: bool
    mail_reply: str | None = None
    rcpts: list[RcptResult] = field(default_factory=list)
    data_reply: str | None = None
    message: bytes | None = None

    def freeze(self) -> Transaction:
        rcpts = tuple(self.rcpts)
        return Transaction(
            self.mail_from, self.mail_reply, rcpts, self.data_reply, self.message, self.over_tls
        )


class SessionLog:
    """One session's script decisions and record.

    Args:
        config: the MTA's configuration when the client connected.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.session_id = config.session_id
        self.identity = config.identity
        self.script = config.script
        self.starttls_mode = config.starttls
        self.client: tuple[str, int] = ("", 0)
        self.helo_verb: str | None = None
        self.helo_name: str | None = None
        self.starttls_offered = False
        self.starttls_attempted = False
        self.tls_version: str | None = None
        self.cipher: str | None = None
        self.sni: str | None = None
        self.cert_served: str | None = None
        self.tls_error: str | None = None
        self.in_clear = False
        self.commands: list[str] = []
        self.ended: SessionEnd | None = None
        self.errors: list[str] = []
        self.faults: list[str] = []
        self._txns: list[_Txn] = []
        self._txn: _Txn | None = None
        self._accepted_rcpts: list[str] = []
        self._refusing = False  # a non-220 banner was sent (RFC 5321 §3.1)
        self._current = "(banner)"

    # -- recording ---------------------------------------------------------------

    def _scripted(self, stage: str, action: Action | None, default: str) -> SessionAnswer:
        """The answer for ``action`` at ``stage``, noting it when it refuses or breaks."""
        if is_fault(action):
            assert action is not None
            self.fault(stage, describe_action(action))
        return _answer(action, default, stage)

    def fault(self, stage: str, what: str) -> None:
        """Note a fault played (or a handshake that failed) at ``stage``."""
        self.faults.append(f"{stage}: {what}")

    def end(self, how: SessionEnd) -> None:
        """Note how the session ends; the first cause noted wins."""
        if self.ended is None:
            self.ended = how

    def reply_sent(self, line: str, *, scripted: bool) -> None:
        """Note a reply going out; an unscripted 5yz is a protocol error."""
        if line.startswith("5") and not scripted:
            self.errors.append(f"server replied {line!r} (last command: {self._current})")

    def internal_error(self, error: BaseException) -> None:
        """Note a failure of the fake MTA itself (a bug to fix, not a finding)."""
        self.errors.append(f"{self._current}: fake MTA failed with {error!r}")

    def cleartext_after_tls_failure(self, data: bytes) -> None:
        """Note SMTP sent in clear on a connection whose TLS handshake failed."""
        self.errors.append(f"cleartext after the failed STARTTLS handshake: {data[:80]!r}")
        if any(verb in data.upper() for verb in (b"MAIL", b"RCPT", b"DATA")):
            self.in_clear = True

    def tls_established(self, version: str | None, cipher: str | None) -> None:
        """Note a completed handshake."""
        self.tls_version, self.cipher = version, cipher

    def freeze(self) -> MtaSession:
        """The final record (the session must have ended)."""
        assert self.ended is not None, f"session {self.session_id} has not ended"
        return MtaSession(
            session_id=self.session_id,
            mx_host=self.identity,
            client=self.client,
            helo_verb=self.helo_verb,
            helo_name=self.helo_name,
            starttls_offered=self.starttls_offered,
            starttls_attempted=self.starttls_attempted,
            tls_completed=self.tls_version is not None,
            tls_version=self.tls_version,
            cipher=self.cipher,
            sni=self.sni,
            cert_served=self.cert_served,
            tls_error=self.tls_error,
            transactions=tuple(t.freeze() for t in self._txns),
            in_clear=self.in_clear,
            commands=tuple(self.commands),
            ended=self.ended,
            protocol_errors=tuple(self.errors),
            faults=tuple(self.faults),
        )

    # -- stages ------------------------------------------------------------------

    def greet(self, default: str) -> SessionAnswer:
        """The banner."""
        answer = self._scripted("banner", self.script.banner, default)
        if answer.scripted and answer.lines:
            self._refusing = not answer.lines[0].startswith("220")
        return answer

    def command(self, verb: str, arg: str | None, *, tls_active: bool) -> SessionAnswer | None:
        """A command arrived; an ``SessionAnswer`` pre-empts it, None lets it run."""
        self._current = f"{verb} {arg}" if arg else verb
        self.commands.append(verb)
        if verb in _ENVELOPE_VERBS and not tls_active:
            self.in_clear = True
        if verb in _RESET_VERBS:
            self._txn, self._accepted_rcpts = None, []
        if verb == "QUIT" and not arg:
            self.end(SessionEnd.QUIT)
            return None
        if self._refusing:
            return _answer(_BAD_SEQUENCE, "")
        start = self.script.data_start
        if verb == "DATA" and start is not None and not arg and self._accepted_rcpts:
            assert self._txn is not None
            answer = self._scripted("data_start", start, "")
            self._txn.data_reply = answer.lines[0] if answer.lines else None
            return answer
        return None

    def ehlo(self, name: str, keywords: list[str], *, tls_possible: bool) -> SessionAnswer:
        """EHLO: the script, else aiosmtpd's keywords with STARTTLS per the mode."""
        if self.script.ehlo is not None:
            answer = self._scripted("ehlo", self.script.ehlo, "")
            if answer.accepted:  # a 2yz with no extensions at all
                self.helo_verb, self.helo_name = "EHLO", name
            return answer
        self.helo_verb, self.helo_name = "EHLO", name
        # An MX offers no AUTH; whether it offers STARTTLS is ours to decide.
        kept = [k for k in keywords if not k.upper().startswith(("STARTTLS", "AUTH"))]
        if self.starttls_mode is not MxStartTls.ABSENT and tls_possible:
            kept.insert(1, "STARTTLS")
            self.starttls_offered = True
        lines = [f"250-{k}" for k in kept[:-1]] + [f"250 {kept[-1]}"]
        return SessionAnswer(tuple(lines))

    def helo(self, name: str) -> SessionAnswer:
        """HELO."""
        answer = self._scripted("helo", self.script.helo, f"250 {self.identity}")
        if answer.accepted:
            self.helo_verb, self.helo_name = "HELO", name
        return answer

    def mail(self, address: str, *, tls_active: bool) -> SessionAnswer:
        """MAIL FROM: starts a transaction record whatever the reply."""
        self._txn = _Txn(address, over_tls=tls_active)
        self._txns.append(self._txn)
        answer = self._scripted("mail", self.script.mail, "250 2.1.0 OK")
        self._txn.mail_reply = answer.lines[0] if answer.lines else None
        return answer

    def rcpt(self, address: str) -> SessionAnswer:
        """RCPT TO: by address, else by index in the transaction."""
        assert self._txn is not None, "aiosmtpd passed RCPT before MAIL"
        action = self.script.rcpt_action(address, len(self._txn.rcpts))
        answer = self._scripted("rcpt", action, "250 2.1.5 OK")
        self._txn.rcpts.append(RcptResult(address, answer.lines[0] if answer.lines else None))
        if answer.accepted:
            self._accepted_rcpts.append(address)
        return answer

    def data(self, message: bytes) -> tuple[SessionAnswer, ReceivedMessage | None]:
        """The message after DATA arrived; returns the answer and, if accepted, the mail."""
        assert self._txn is not None, "aiosmtpd passed DATA before MAIL"
        txn, rcpts = self._txn, tuple(self._accepted_rcpts)
        self._txn, self._accepted_rcpts = None, []
        txn.message = message
        answer = self._scripted("data", self.script.data, "250 2.0.0 OK: queued")
        txn.data_reply = answer.lines[0] if answer.lines else None
        if not answer.accepted:
            return answer, None
        delivered = ReceivedMessage(
            self.session_id, self.identity, txn.mail_from, rcpts, message, self.tls_version
        )
        return answer, delivered

    def starttls(self, arg: str | None, *, tls_started: bool) -> SessionAnswer | None:
        """STARTTLS: an ``SessionAnswer`` refuses it; None means say 220 and go on."""
        self.starttls_attempted = True
        if arg or tls_started:
            # RFC 3207 §4: no parameters, and once per session. Unscripted, so
            # it counts as a protocol error.
            return SessionAnswer(("501 5.5.4 Syntax: STARTTLS (once per session)",), accepted=False)
        if self.starttls_mode is MxStartTls.ABSENT:
            self.errors.append("client sent STARTTLS although it was not advertised")
            return _answer(ScriptedReply(500, '5.5.1 Error: command "STARTTLS" unknown'), "")
        if self.script.starttls is not None:
            return self._scripted("starttls", self.script.starttls, "")
        if self.starttls_mode is MxStartTls.REFUSED:
            return _answer(ScriptedReply(454, "4.7.0 TLS not available"), "")
        return None
