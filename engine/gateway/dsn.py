"""Delivery status notifications (RFC 3464) for bounced and delayed recipients.

Theory of operation
-------------------
A DSN is a ``multipart/report; report-type=delivery-status`` message (RFC 6522)
with three parts: a human-readable explanation, a ``message/delivery-status``
part (RFC 3464 §2.2, §2.3: per-message fields, then one block per recipient),
and the original message. docs/gateway-behaviour.md §4 (CISCO 9.1 UG p.24-39): the
original goes in whole when it is under 10 KB, else only its header block, as
``text/rfc822-headers`` (RFC 6522 §3).

One DSN covers every recipient of one message that reached the same action in the
same delivery round (RFC 3464 §2: the per-recipient blocks exist for exactly that);
the scheduler collects them and calls :func:`build_dsn` once per message and action.

What each field says, and where the rule is:

* ``Date`` and the ``*-Date`` fields are UTC written ``+0000`` (RFC 5322 §3.3: the
  obsolete ``GMT`` zone name must not be generated, and ``-0000`` means "zone
  unknown");
* ``Message-ID`` (RFC 5322 §3.6.4) is derived from the DSN's own content and our
  host name, so the same bounce gives the same bytes and two DSNs differ;
* ``Diagnostic-Code: smtp;`` carries only a reply a remote SMTP server actually sent
  (RFC 3464 §2.3.6); a reason of the engine's own (a TLS failure, an expiry, a
  missing extension) is typed ``X-Engine``, the private-type form RFC 3464 allows;
* ``Last-Attempt-Date`` is the time of the last real delivery attempt, and is left
  out when there was none or it is not known (RFC 3464 §2.3.7: it is optional,
  and a bounce at expiry without a new attempt is not an attempt);
* a recipient address that is not ASCII is written as a ``utf-8`` address with
  ``\\x{HEX}`` escapes (RFC 6533 §3), which keeps the part plain ASCII;
* an 8-bit original is labelled ``Content-Transfer-Encoding: 8bit`` on its part and
  on the whole DSN (RFC 2045 §6.4: a composite type cannot be encoded, only labelled).

Everything here is a pure function of its arguments (times are passed in), so
the same bounce gives the same bytes. The gateway sends the result from the
null sender ``<>`` (RFC 5321 §4.5.5), and never answers a message that itself
came from ``<>`` (:func:`dsn_wanted`): no DSN for a DSN.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum

__all__ = [
    "DIAGNOSTIC_ENGINE",
    "MAX_BOUNCE_COPY",
    "DsnAction",
    "DsnRecipient",
    "build_dsn",
    "dsn_address",
    "dsn_date",
    "dsn_wanted",
]

MAX_BOUNCE_COPY = 10 * 1024  # docs/gateway-behaviour.md §4: the original is quoted under 10 KB
#: The diagnostic-type of the engine's own reasons (RFC 3464 §2.3.6: ``smtp`` is for
#: SMTP replies; a type of our own starts with ``X-``).
DIAGNOSTIC_ENGINE = "X-Engine"
_FOLD = 76  # RFC 5322 §2.1.1: lines SHOULD stay under 78 characters


class DsnAction(StrEnum):
    """RFC 3464 §2.3.3 ``Action`` values the gateway produces."""

    FAILED = "failed"
    DELAYED = "delayed"


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One recipient block of a DSN (RFC 3464 §2.3).

    Attributes:
        rcpt: the envelope recipient.
        action: failed or delayed.
        status: the enhanced status code (RFC 3463), e.g. ``5.4.7``.
        diagnostic: our reason, for the human-readable part (and for
            ``Diagnostic-Code: X-Engine;`` when no remote reply explains it).
        remote_mta: the MX that answered, if any.
        last_attempt: when the last real delivery attempt was made (POSIX seconds);
            None when there was none or it is not known.
        reply: the SMTP reply the remote server sent about this recipient, if any
            (``Diagnostic-Code: smtp;``).
    """

    rcpt: str
    action: DsnAction
    status: str
    diagnostic: str
    remote_mta: str | None = None
    last_attempt: float | None = None
    reply: str | None = None


def dsn_wanted(mail_from: str) -> bool:
    """Whether a message from ``mail_from`` may be answered by a DSN.

    RFC 5321 §4.5.5 / RFC 3464 §4: never send a DSN for a message from the null
    sender, which is how DSNs themselves travel.
    """
    return mail_from.strip("<> ") != ""


def dsn_date(when: float) -> str:
    """An RFC 5322 §3.3 date-time in UTC with the numeric zone ``+0000``."""
    return format_datetime(datetime.fromtimestamp(when, UTC))


def dsn_address(address: str) -> str:
    """``rfc822; a@b`` for an ASCII address, else ``utf-8; `` with RFC 6533 §3 escapes.

    RFC 6533 §3 (utf-8-addr-xtext): each non-ASCII character becomes ``\\x{HEX}``, and
    a backslash, ``+`` or ``=`` is escaped the same way, so the field stays ASCII.
    """
    if address.isascii():
        return f"rfc822; {address}"
    out = []
    for ch in address:
        if not ch.isascii() or ch in "\\+=" or not ch.isprintable():
            out.append(f"\\x{{{ord(ch):X}}}")
        else:
            out.append(ch)
    return "utf-8; " + "".join(out)


def _header_block(data: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, _ = data.partition(sep)
        if found:
            return head + b"\r\n"
    return data


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _field(name: str, value: str) -> str:
    """``Name: value`` on one line, folded at spaces into continuation lines.

    RFC 5322 §2.2.3 folding, which RFC 3464 §2.1.1 fields follow; a word longer
    than a line stays whole (lines stay far below the 998-character limit).
    """
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    words = value.split(" ")
    lines, line = [], f"{name}: {words[0]}"
    for word in words[1:]:
        if len(line) + 1 + len(word) > _FOLD:
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    return "\n".join(lines)


def _diagnostic(r: DsnRecipient) -> str:
    if r.reply:
        # RFC 3464 §2.3.6: the reply the remote MTA sent, as it sent it.
        return _field("Diagnostic-Code", f"smtp; {r.reply}")
    return _field("Diagnostic-Code", f"{DIAGNOSTIC_ENGINE}; {r.diagnostic}")


def _status_fields(reporting_mta: str, arrival: float, recipients: Sequence[DsnRecipient]) -> str:
    # RFC 3464 §2.2: per-message fields, a blank line, then per-recipient blocks.
    status = [f"Reporting-MTA: dns; {reporting_mta}", f"Arrival-Date: {dsn_date(arrival)}"]
    for r in recipients:
        status.append("")
        status.append(f"Final-Recipient: {dsn_address(r.rcpt)}")
        status.append(f"Action: {r.action.value}")
        status.append(f"Status: {r.status}")
        if r.remote_mta:
            status.append(f"Remote-MTA: dns; {r.remote_mta}")
        status.append(_diagnostic(r))
        if r.last_attempt is not None:
            # RFC 3464 §2.3.7: the last attempt actually made, never a bounce's own time.
            status.append(f"Last-Attempt-Date: {dsn_date(r.last_attempt)}")
    return "\n".join(status) + "\n"


def build_dsn(
    *,
    original: bytes,
    mail_from: str,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    arrival: float,
    now: float,
    mid: int,
) -> bytes:
    """A complete DSN message, ready to enqueue from ``<>`` to ``mail_from``.

    Args:
        original: the original message bytes.
        mail_from: the original envelope sender (the DSN's recipient).
        recipients: the recipients this DSN is about (all one action).
        reporting_mta: our host name (``Reporting-MTA: dns; <name>``).
        arrival: when the original was received (``Arrival-Date``).
        now: the DSN's ``Date``.
        mid: the original's MID (``X-Original-MID``).

    Returns:
        The message bytes, CRLF line endings.

    Raises:
        ValueError: no recipients, or recipients with different actions.
    """
    if not recipients:
        raise ValueError("a DSN needs at least one recipient block")
    action = recipients[0].action
    if any(r.action is not action for r in recipients):
        raise ValueError(
            f"one DSN reports one action; got {sorted({r.action for r in recipients})}"
        )
    status = _status_fields(reporting_mta, arrival, recipients)
    seed = hashlib.sha256(
        b"%d:%r:%s\0%s\0" % (mid, now, reporting_mta.encode(), status.encode()) + original
    ).hexdigest()
    boundary = "dsn-" + seed[:24]
    subject = (
        "Delivery Status Notification (Failure)"
        if action is DsnAction.FAILED
        else "Delivery Status Notification (Delay)"
    )
    verb = "could not be delivered" if action is DsnAction.FAILED else "has not yet been delivered"
    lines = [f"Your message {verb} to the following recipients:", ""]
    lines += [f"  <{r.rcpt}>: {r.status} {r.reply or r.diagnostic}" for r in recipients]
    if action is DsnAction.DELAYED:
        lines += ["", "Delivery will be retried; you do not need to resend the message."]
    human = "\n".join(lines) + "\n"
    if len(original) < MAX_BOUNCE_COPY:
        third_type, third = "message/rfc822", original
    else:
        # docs/gateway-behaviour.md §4: over 10 KB only the headers are returned (RFC 6522 §3).
        third_type, third = "text/rfc822-headers", _header_block(original)
    # RFC 2045 §6.4 / RFC 6152 §3: 8-bit text is labelled, on its part and on the whole.
    human_cte = "" if human.isascii() else "Content-Transfer-Encoding: 8bit\n"
    third_cte = "" if third.isascii() else "Content-Transfer-Encoding: 8bit\n"
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\n"
        f"To: <{mail_from}>\n"
        f"Subject: {subject}\n"
        f"Date: {dsn_date(now)}\n"
        # RFC 5322 §3.6.4: unique; our host name on the right, the content's hash left.
        f"Message-ID: <dsn.{seed[:32]}.{mid}@{reporting_mta}>\n"
        f"Auto-Submitted: auto-replied\n"  # RFC 3834 §5
        f"X-Original-MID: {mid}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        + ("Content-Transfer-Encoding: 8bit\n" if human_cte or third_cte else "")
        + "\n"
        "This is a MIME-encapsulated message.\n"
    )
    return (
        _crlf(head)
        + _crlf(f"\n--{boundary}\nContent-Type: text/plain; charset=utf-8\n{human_cte}\n{human}")
        + _crlf(f"\n--{boundary}\nContent-Type: message/delivery-status\n\n")
        + _crlf(status)
        + _crlf(f"\n--{boundary}\nContent-Type: {third_type}\n{third_cte}\n")
        + third.rstrip(b"\r\n")
        + _crlf(f"\n\n--{boundary}--\n")
    )
