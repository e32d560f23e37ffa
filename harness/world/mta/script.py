"""What a fake receiving MTA says: STARTTLS modes and scripted replies per stage.

Theory of operation
-------------------
A ``Script`` is a frozen table from SMTP stage to *action*. An action is a
``ScriptedReply`` (sent verbatim, one line), ``Disconnect`` (the server closes the
connection instead of answering) or a ``Fault`` (it breaks the transport the
way servers and middleboxes on the Internet do: a reset, a stall, a line that
is no reply, a multi-line reply cut short). A stage with no action behaves like
a well-mannered MX: everything is accepted with ``250``.

The stages are the greeting (``banner``), ``ehlo`` / ``helo``, the reply to
``starttls``, ``mail``, ``rcpt``, the reply to the ``DATA`` command
(``data_start``) and the reply after the final dot (``data``).

What a reply means depends on its class, as in RFC 5321 §4.2.1:

* 2yz at MAIL / RCPT / DATA: the sender, recipient or message is accepted
  (with the scripted text instead of the default one).
* 4yz / 5yz: the command is refused; the transaction state is unchanged.
* ``421`` at any stage: RFC 5321 §3.8 -- the server sends it and closes the
  connection.
* A banner other than ``220``: RFC 5321 §3.1 -- the server answers every later
  command except QUIT with ``503``.
* A reply to STARTTLS is never positive here (a 220 is what happens without a
  script); a 4yz or 5yz means the server stays in clear text (RFC 3207 §4).

What each ``FaultKind`` does on the wire, at any stage:

* ``reset``: the connection is aborted with a TCP RST (SO_LINGER 0) instead of
  the reply. RFC 5321 §4.2.5 tells the client to treat this like a 451.
* ``stall``: nothing is sent; the server holds the connection until the client
  gives up (its own timeout) or the MTA's idle timeout ends it.
* ``malformed``: one line that does not start with a three-digit code
  (RFC 5321 §4.2); the stage is not accepted and the session goes on.
* ``multiline-broken``: the stage's positive reply begun as a multi-line reply,
  a continuation line with another code (RFC 5321 §4.2.1: every line of a
  multi-line reply MUST carry the same code), and no last line: the server
  closes the connection.

The session takes a snapshot of the script when the client connects, so
changing ``ReceivingMta.script`` between scenario steps never affects a session
already in progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

__all__ = [
    "HELO_ONLY",
    "POSITIVE_CODES",
    "STAGES",
    "Action",
    "Disconnect",
    "Fault",
    "FaultKind",
    "MxStartTls",
    "Script",
    "ScriptedReply",
    "is_fault",
    "parse_action",
]


class MxStartTls(StrEnum):
    """How the MX handles STARTTLS (RFC 3207) and the TLS handshake after its 220.

    Attributes:
        OFFERED: advertised in EHLO; the handshake is real.
        ABSENT: not advertised (the MITM-stripped case); sent anyway, it gets 500.
        REFUSED: advertised, but the command gets ``454 4.7.0 TLS not available``.
        NO_SHARED_CIPHER: advertised, and the handshake is real, but the server
            speaks TLS 1.2 at most with NULL-encryption suites only, which no
            client offers: the handshake fails on the server's side (asyncio then
            aborts the connection, so the client may see a reset after the alert).

    Every ``broken-*`` mode is advertised and answers 220; the server then plays
    a peer that cannot do TLS, on the wire (no TLS library involved):

    Attributes:
        BROKEN_CLOSE: reads the ClientHello, then closes (FIN).
        BROKEN_GARBAGE: reads the ClientHello, then writes bytes that are not a
            TLS record instead of a ServerHello.
        BROKEN_RESET: reads the ClientHello, then aborts with a TCP RST.
        BROKEN_CLOSE_AFTER_220: closes right after the 220, before any ClientHello.
        BROKEN_STALL: reads the ClientHello and answers nothing; the client's
            handshake timeout has to end it.
        BROKEN_ALERT_PROTOCOL_VERSION: answers the ClientHello with a fatal
            ``protocol_version`` alert record (RFC 8446 §6.2, code 70), then closes.
        BROKEN_ALERT_HANDSHAKE_FAILURE: ... a fatal ``handshake_failure`` (40).
        BROKEN_ALERT_INTERNAL_ERROR: ... a fatal ``internal_error`` (80).
        BROKEN_CHAIN_MALFORMED: answers with a TLS 1.2 ServerHello and a
            Certificate message whose one entry is bytes that are not a
            certificate (RFC 5246 §7.4.2), then ServerHelloDone.
    """

    OFFERED = "offered"
    ABSENT = "absent"
    REFUSED = "refused"
    NO_SHARED_CIPHER = "no-shared-cipher"
    BROKEN_CLOSE = "broken-close"
    BROKEN_GARBAGE = "broken-garbage"
    BROKEN_RESET = "broken-reset"
    BROKEN_CLOSE_AFTER_220 = "broken-close-after-220"
    BROKEN_STALL = "broken-stall"
    BROKEN_ALERT_PROTOCOL_VERSION = "broken-alert-protocol-version"
    BROKEN_ALERT_HANDSHAKE_FAILURE = "broken-alert-handshake-failure"
    BROKEN_ALERT_INTERNAL_ERROR = "broken-alert-internal-error"
    BROKEN_CHAIN_MALFORMED = "broken-chain-malformed"

    @property
    def breaks_handshake(self) -> bool:
        """True for the ``broken-*`` modes: 220, then no real TLS at all."""
        return self.value.startswith("broken-")

    @property
    def needs_cert(self) -> bool:
        """True when the server runs a real handshake and so needs a certificate."""
        return self in (MxStartTls.OFFERED, MxStartTls.NO_SHARED_CIPHER)


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One SMTP reply line, sent verbatim.

    Attributes:
        code: the three-digit reply code (200..599).
        text: what follows the code, usually an enhanced status code and words.
    """

    code: int
    text: str = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code must be 200..599, got {self.code!r}")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError(f"reply text must be one line, got {self.text!r}")

    @property
    def line(self) -> str:
        """The reply as it goes on the wire, without CRLF."""
        return f"{self.code} {self.text}" if self.text else str(self.code)

    @property
    def positive(self) -> bool:
        """True for a 2yz reply."""
        return 200 <= self.code < 300


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Drop the connection at this stage instead of replying."""


class FaultKind(StrEnum):
    """How a stage breaks the transport (see the module docstring)."""

    RESET = "reset"
    STALL = "stall"
    MALFORMED = "malformed"
    MULTILINE_BROKEN = "multiline-broken"


@dataclass(frozen=True, slots=True)
class Fault:
    """Break the transport at this stage instead of replying.

    Attributes:
        kind: what the server does.
    """

    kind: FaultKind


Action = ScriptedReply | Disconnect | Fault
"""What the server does at one stage."""

#: The reply each stage gives when all is well: the code a ``multiline-broken``
#: reply starts with.
POSITIVE_CODES = MappingProxyType(
    {
        "banner": 220,
        "ehlo": 250,
        "helo": 250,
        "starttls": 220,
        "mail": 250,
        "rcpt": 250,
        "data_start": 354,
        "data": 250,
    }
)

HELO_ONLY = ScriptedReply(502, '5.5.1 Error: command "EHLO" not recognized')
"""An EHLO reply that makes RFC 5321 §4.1.4 clients fall back to HELO."""


def parse_action(text: str) -> Action:
    """Parse an action as written in a scenario file.

    Args:
        text: ``"disconnect"``, a fault (``"reset"``, ``"stall"``, ``"malformed"``,
            ``"multiline-broken"``), or a reply such as ``"450 4.2.0 Try later"``.

    Returns:
        The ``Disconnect``, ``Fault`` or ``ScriptedReply`` it names.

    Raises:
        ValueError: ``text`` is none of these.
    """
    stripped = text.strip()
    word = stripped.lower()
    if word == "disconnect":
        return Disconnect()
    if word in _FAULTS:
        return Fault(FaultKind(word))
    code, _, rest = stripped.partition(" ")
    if len(code) != 3 or not code.isdigit():
        words = ", ".join(repr(w) for w in ("disconnect", *_FAULTS))
        raise ValueError(f"expected {words} or '<code> <text>', got {text!r}")
    return ScriptedReply(int(code), rest.strip())


_FAULTS = tuple(k.value for k in FaultKind)


#: The single-action stages of a :class:`Script`, in session order.
STAGES = ("banner", "ehlo", "helo", "starttls", "mail", "data_start", "data")

_K = TypeVar("_K")


def _frozen(mapping: Mapping[_K, Action]) -> Mapping[_K, Action]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Script:
    """Scripted replies per stage; ``None`` (or a missing key) means accept.

    Attributes:
        banner: instead of ``220 <identity> ESMTP ...``.
        ehlo: instead of the EHLO reply (``HELO_ONLY`` makes clients use HELO).
            A 2yz reply here is a greeting with no extensions at all.
        helo: instead of ``250 <identity>``.
        starttls: instead of ``220`` to STARTTLS (never positive): the server then
            stays in clear text.
        mail: the reply to MAIL FROM.
        rcpt: replies to RCPT TO by recipient address (case-insensitive).
        rcpt_by_index: replies to RCPT TO by 0-based position in the
            transaction; ``rcpt`` wins when both name the same command.
        data_start: instead of ``354`` to the DATA command.
        data: the reply after the message's final ``.``.
    """

    banner: Action | None = None
    ehlo: Action | None = None
    helo: Action | None = None
    starttls: Action | None = None
    mail: Action | None = None
    rcpt: Mapping[str, Action] = field(default_factory=dict)
    rcpt_by_index: Mapping[int, Action] = field(default_factory=dict)
    data_start: Action | None = None
    data: Action | None = None

    def __post_init__(self) -> None:
        for name in STAGES:
            _check_action(name, getattr(self, name), optional=True)
        for address, action in self.rcpt.items():
            _check_action(f"rcpt[{address!r}]", action, optional=False)
        for index, action in self.rcpt_by_index.items():
            if not isinstance(index, int) or index < 0:
                raise ValueError(f"rcpt_by_index keys are indexes >= 0, got {index!r}")
            _check_action(f"rcpt_by_index[{index}]", action, optional=False)
        if (
            isinstance(self.banner, ScriptedReply)
            and self.banner.positive
            and self.banner.code != 220
        ):
            raise ValueError(f"a positive banner must be 220, got {self.banner.line!r}")
        if isinstance(self.starttls, ScriptedReply) and self.starttls.positive:
            # RFC 3207 §4: a 220 starts the handshake; the STARTTLS mode says how that goes.
            raise ValueError(
                f"a scripted STARTTLS reply must refuse (4yz/5yz), got {self.starttls.line!r}; "
                "set the host's starttls mode for handshake behaviours"
            )
        # Frozen means frozen: copy the caller's dicts so later edits to them
        # cannot change a script a live session is using.
        lowered = {address.lower(): action for address, action in self.rcpt.items()}
        object.__setattr__(self, "rcpt", _frozen(lowered))
        object.__setattr__(self, "rcpt_by_index", _frozen(self.rcpt_by_index))

    def rcpt_action(self, address: str, index: int) -> Action | None:
        """The action for one RCPT TO.

        Args:
            address: the recipient as the client sent it.
            index: its 0-based position among the transaction's RCPT commands.

        Returns:
            The scripted action, or None to accept.
        """
        action = self.rcpt.get(address.lower())
        return action if action is not None else self.rcpt_by_index.get(index)


def _check_action(name: str, action: object, *, optional: bool) -> None:
    if action is None and optional:
        return
    if not isinstance(action, ScriptedReply | Disconnect | Fault):
        raise TypeError(
            f"Script.{name} must be a ScriptedReply, Disconnect or Fault, got {action!r}"
        )


def is_fault(action: Action | None) -> bool:
    """True for an action that refuses or breaks the stage (not a 2yz reply, not None)."""
    return action is not None and not (isinstance(action, ScriptedReply) and action.positive)
