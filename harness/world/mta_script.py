"""What a fake receiving MTA says: STARTTLS modes and scripted replies per stage.

Theory of operation
-------------------
A ``Script`` is a frozen table from SMTP stage to *action*. An action is either
a ``Reply`` (sent verbatim, one line) or ``Disconnect`` (the server drops the
connection instead of answering). A stage with no action behaves like a
well-mannered MX: everything is accepted with ``250``.

What a reply means depends on its class, as in RFC 5321 §4.2.1:

* 2yz at MAIL / RCPT / DATA: the sender, recipient or message is accepted
  (with the scripted text instead of the default one).
* 4yz / 5yz: the command is refused; the transaction state is unchanged.
* ``421`` at any stage: RFC 5321 §3.8 -- the server sends it and closes the
  connection.
* A banner other than ``220``: RFC 5321 §3.1 -- the server answers every later
  command except QUIT with ``503``.

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
    "Action",
    "Disconnect",
    "Reply",
    "Script",
    "StartTls",
    "parse_action",
]


class StartTls(StrEnum):
    """How the MX handles STARTTLS (RFC 3207).

    Attributes:
        OFFERED: advertised in EHLO; the handshake is real.
        ABSENT: not advertised (the MITM-stripped case); sent anyway, it gets 500.
        REFUSED: advertised, but the command gets ``454 4.7.0 TLS not available``.
        BROKEN_CLOSE: advertised, answers 220, reads the ClientHello, then closes.
        BROKEN_GARBAGE: advertised, answers 220, reads the ClientHello, then
            writes bytes that are not a TLS record instead of a ServerHello.
    """

    OFFERED = "offered"
    ABSENT = "absent"
    REFUSED = "refused"
    BROKEN_CLOSE = "broken-close"
    BROKEN_GARBAGE = "broken-garbage"


@dataclass(frozen=True, slots=True)
class Reply:
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


Action = Reply | Disconnect
"""What the server does at one stage."""

HELO_ONLY = Reply(502, '5.5.1 Error: command "EHLO" not recognized')
"""An EHLO reply that makes RFC 5321 §4.1.4 clients fall back to HELO."""


def parse_action(text: str) -> Action:
    """Parse an action as written in a scenario file.

    Args:
        text: ``"disconnect"``, or a reply such as ``"450 4.2.0 Try later"``.

    Returns:
        The ``Disconnect`` or ``Reply`` it names.

    Raises:
        ValueError: ``text`` is neither.
    """
    stripped = text.strip()
    if stripped.lower() == "disconnect":
        return Disconnect()
    code, _, rest = stripped.partition(" ")
    if len(code) != 3 or not code.isdigit():
        raise ValueError(f"expected 'disconnect' or '<code> <text>', got {text!r}")
    return Reply(int(code), rest.strip())


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
    mail: Action | None = None
    rcpt: Mapping[str, Action] = field(default_factory=dict)
    rcpt_by_index: Mapping[int, Action] = field(default_factory=dict)
    data_start: Action | None = None
    data: Action | None = None

    def __post_init__(self) -> None:
        for name in ("banner", "ehlo", "helo", "mail", "data_start", "data"):
            _check_action(name, getattr(self, name), optional=True)
        for address, action in self.rcpt.items():
            _check_action(f"rcpt[{address!r}]", action, optional=False)
        for index, action in self.rcpt_by_index.items():
            if not isinstance(index, int) or index < 0:
                raise ValueError(f"rcpt_by_index keys are indexes >= 0, got {index!r}")
            _check_action(f"rcpt_by_index[{index}]", action, optional=False)
        if isinstance(self.banner, Reply) and self.banner.positive and self.banner.code != 220:
            raise ValueError(f"a positive banner must be 220, got {self.banner.line!r}")
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
    if not isinstance(action, Reply | Disconnect):
        raise TypeError(f"Script.{name} must be a Reply or Disconnect, got {action!r}")
