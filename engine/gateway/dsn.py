"""Delivery status notifications (RFC 3464) for bounced and delayed recipients.

Theory of operation
-------------------
A DSN is a ``multipart/report; report-type=delivery-status`` message (RFC 6522)
with three parts: a human-readable explanation, a ``message/delivery-status``
part (RFC 3464 §2.2, §2.3: per-message fields, then one block per recipient),
and the original message. docs/gateway-behaviour.md §4 (CISCO 9.1 UG p.24-39): the
original goes in whole when it is under 10 KB, else only its header block, as
``text/rfc822-headers`` (RFC 6522 §3).

Everything here is a pure function of its arguments (times are passed in), so
the same bounce gives the same bytes. The gateway sends the result from the
null sender ``<>`` (RFC 5321 §4.5.5), and never answers a message that itself
came from ``<>`` (:func:`dsn_wanted`): no DSN for a DSN.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from enum import StrEnum

__all__ = [
    "MAX_BOUNCE_COPY",
    "DsnAction",
    "DsnRecipient",
    "build_dsn",
    "dsn_wanted",
]

MAX_BOUNCE_COPY = 10 * 1024  # docs/gateway-behaviour.md §4: the original is quoted under 10 KB


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
        diagnostic: the remote reply or our reason, for ``Diagnostic-Code``.
        remote_mta: the MX that answered, if any.
        last_attempt: when the last attempt was made (POSIX seconds), if any.
    """

    rcpt: str
    action: DsnAction
    status: str
    diagnostic: str
    remote_mta: str | None = None
    last_attempt: float | None = None


def dsn_wanted(mail_from: str) -> bool:
    """Whether a message from ``mail_from`` may be answered by a DSN.

    RFC 5321 §4.5.5 / RFC 3464 §4: never send a DSN for a message from the null
    sender, which is how DSNs themselves travel.
    """
    return mail_from.strip("<> ") != ""


def _header_block(data: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, _ = data.partition(sep)
        if found:
            return head + b"\r\n"
    return data


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


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
        mid: the original's MID (``X-Original-MID``; also seeds the boundary).

    Returns:
        The message bytes, CRLF line endings.

    Raises:
        ValueError: no recipients.
    """
    if not recipients:
        raise ValueError("a DSN needs at least one recipient block")
    action = recipients[0].action
    boundary = "dsn-" + hashlib.sha256(b"%d:%f:" % (mid, now) + original[:256]).hexdigest()[:24]
    subject = (
        "Delivery Status Notification (Failure)"
        if action is DsnAction.FAILED
        else "Delivery Status Notification (Delay)"
    )
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\n"
        f"To: <{mail_from}>\n"
        f"Subject: {subject}\n"
        f"Date: {formatdate(now, usegmt=True)}\n"
        f"Auto-Submitted: auto-replied\n"  # RFC 3834 §5
        f"X-Original-MID: {mid}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        "\n"
        "This is a MIME-encapsulated message.\n"
    )
    verb = "could not be delivered" if action is DsnAction.FAILED else "has not yet been delivered"
    lines = [f"Your message {verb} to the following recipients:", ""]
    lines += [f"  <{r.rcpt}>: {r.status} {r.diagnostic}" for r in recipients]
    if action is DsnAction.DELAYED:
        lines += ["", "Delivery will be retried; you do not need to resend the message."]
    human = "\n".join(lines) + "\n"
    # RFC 3464 §2.2: per-message fields, a blank line, then per-recipient blocks.
    status = [f"Reporting-MTA: dns; {reporting_mta}", f"Arrival-Date: {formatdate(arrival)}"]
    for r in recipients:
        status.append("")
        status.append(f"Final-Recipient: rfc822; {r.rcpt}")
        status.append(f"Action: {r.action.value}")
        status.append(f"Status: {r.status}")
        if r.remote_mta:
            status.append(f"Remote-MTA: dns; {r.remote_mta}")
        diag = r.diagnostic.replace("\r", " ").replace("\n", " ")
        status.append(f"Diagnostic-Code: smtp; {diag}")
        if r.last_attempt is not None:
            status.append(f"Last-Attempt-Date: {formatdate(r.last_attempt)}")
    if len(original) < MAX_BOUNCE_COPY:
        third_type, third = "message/rfc822", original
    else:
        # docs/gateway-behaviour.md §4: over 10 KB only the headers are returned (RFC 6522 §3).
        third_type, third = "text/rfc822-headers", _header_block(original)
    body = (
        _crlf(head)
        + _crlf(f"\n--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{human}")
        + _crlf(f"\n--{boundary}\nContent-Type: message/delivery-status\n\n")
        + _crlf("\n".join(status) + "\n")
        + _crlf(f"\n--{boundary}\nContent-Type: {third_type}\n\n")
        + third.rstrip(b"\r\n")
        + _crlf(f"\n\n--{boundary}--\n")
    )
    return body
