"""The queue's values: recipient states, rows, messages, claimed batches, and the schema.

:mod:`engine.gateway.queue` owns the database and every transition; this module only
describes what is stored (one ``message`` row per MID, one ``recipient`` row
per (MID, RID)) and how a row reads back as a frozen value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.core.errors import StsError
from engine.core.events import ResultType

__all__ = [
    "COLUMNS",
    "FINAL",
    "OPEN",
    "SCHEMA",
    "TABLES",
    "DomainBatch",
    "QueueCorrupt",
    "QueueError",
    "QueueUnavailable",
    "QueuedMessage",
    "RcptState",
    "Recipient",
    "Unavailable",
    "recipient_from_row",
]


class RcptState(StrEnum):
    """Where one recipient of one message stands."""

    QUEUED = "queued"
    INFLIGHT = "inflight"
    DELIVERED = "delivered"
    BOUNCED = "bounced"


FINAL = (RcptState.DELIVERED, RcptState.BOUNCED)
OPEN = (RcptState.QUEUED, RcptState.INFLIGHT)


class QueueError(StsError):
    """A queue operation named a message or recipient that is not there, or a bad address.

    A mistake in the request itself, so asking again will not help: the listener answers
    a permanent ``5yz`` for a recipient the queue cannot take. Never raised for a
    storage failure; that is :class:`QueueUnavailable`.
    """


class Unavailable(StrEnum):
    """Why the queue's storage cannot be used (:attr:`QueueUnavailable.reason`)."""

    DISK_FULL = "disk-full"  # SQLITE_FULL, or no space left to open the file
    LOCKED = "locked"  # SQLITE_BUSY / SQLITE_LOCKED: another process holds the write lock
    READ_ONLY = "read-only"  # the file, its directory or its filesystem cannot be written
    CORRUPT = "corrupt"  # not a queue, or a damaged one (:class:`QueueCorrupt`)
    IO_ERROR = "io-error"  # the operating system failed a read or write


class QueueUnavailable(StsError):
    """The queue's storage cannot take or give data now; nothing was changed.

    Raised by every :class:`~engine.gateway.queue.Queue` operation in place of the
    ``sqlite3`` exception behind it (the transaction was rolled back, so a message
    being accepted was not stored and must not be acknowledged). Callers choose by
    :attr:`reason`; the injection listener's intended replies (RFC 3463 codes):

    * :attr:`Unavailable.DISK_FULL`: ``452 4.3.1`` (mail system full; the client retries);
    * anything else: ``421 4.3.0`` (mail system unavailable; the client retries later).

    Attributes:
        reason: what kind of failure (:class:`Unavailable`).
        path: the queue file.
        detail: what SQLite or the operating system said, one line.
        recovery: what the operator can do about it, one sentence ("" when nothing).
    """

    def __init__(self, reason: Unavailable, path: str, detail: str, recovery: str = "") -> None:
        self.reason = reason
        self.path = path
        self.detail = detail
        self.recovery = recovery
        text = f"queue {path!r}: {detail}"
        super().__init__(f"{text}; {recovery}" if recovery else text)

    @property
    def transient(self) -> bool:
        """Whether waiting may help (a full disk, a lock) rather than an operator."""
        return self.reason in (Unavailable.DISK_FULL, Unavailable.LOCKED)


class QueueCorrupt(QueueUnavailable):
    """The file is not a usable queue: empty, truncated, not SQLite, damaged, or foreign.

    Start-up refuses such a file (``sts-engine serve`` prints the one line and exits 2);
    ``sts-engine queue check`` says what is wrong, and docs/hardening.md ("Queue
    recovery") how to recover. :attr:`reason` is always :attr:`Unavailable.CORRUPT`.
    """

    def __init__(self, path: str, detail: str, recovery: str) -> None:
        super().__init__(Unavailable.CORRUPT, path, detail, recovery)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient row (``sts-engine queue show``).

    Attributes:
        mid: the message ID.
        rid: the recipient's index in the message, from 0.
        rcpt: the envelope recipient as given.
        domain: the destination domain, lower-case A-labels (the queue is per domain).
        state: see :class:`RcptState`.
        attempts: delivery attempts counted so far.
        first_attempt_at: the first attempt's time, or None before any.
        next_attempt_at: when the recipient is next due.
        lease_until: the claim's end while ``inflight``, else None.
        last_error: the last deferral or bounce reason.
        last_result_type: the RFC 8460 result type behind that failure, if any.
        last_reply: the accepting reply of the delivery.
        delay_warned: a delay-warning DSN went out.
        final_at: when the recipient was delivered or bounced.
    """

    mid: int
    rid: int
    rcpt: str
    domain: str
    state: RcptState
    attempts: int
    first_attempt_at: float | None
    next_attempt_at: float
    lease_until: float | None
    last_error: str | None
    last_result_type: ResultType | None
    last_reply: str | None
    delay_warned: bool
    final_at: float | None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A queued message with its bytes and its recipients (in RID order)."""

    mid: int
    mail_from: str
    data: bytes
    received_at: float
    icid: int | None
    done_at: float | None
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True, slots=True)
class DomainBatch:
    """Claimed recipients for one destination domain (docs/gateway-behaviour.md §4).

    Attributes:
        domain: the destination domain (lower-case A-labels).
        lease_until: when the claim lapses unless a mark ends it.
        recipients: the claimed recipients, due-time order.
    """

    domain: str
    lease_until: float
    recipients: tuple[Recipient, ...]

    def by_message(self) -> dict[int, tuple[int, ...]]:
        """MID -> RIDs, for ``Delivery start DCID d MID m to RID [0, 1]`` (§5.1)."""
        out: dict[int, tuple[int, ...]] = {}
        for r in self.recipients:
            out[r.mid] = (*out.get(r.mid, ()), r.rid)
        return out


SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES ('mid', 0), ('dcid', 0), ('icid', 0);
CREATE TABLE IF NOT EXISTS message (
    mid INTEGER PRIMARY KEY,
    mail_from TEXT NOT NULL,
    data BLOB NOT NULL,
    received_at REAL NOT NULL,
    icid INTEGER,
    done_at REAL
);
CREATE TABLE IF NOT EXISTS recipient (
    mid INTEGER NOT NULL,
    rid INTEGER NOT NULL,
    rcpt TEXT NOT NULL,
    domain TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'inflight', 'delivered', 'bounced')),
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    last_error TEXT,
    last_result_type TEXT,
    last_reply TEXT,
    delay_warned INTEGER NOT NULL DEFAULT 0,
    final_at REAL,
    PRIMARY KEY (mid, rid)
);
-- What the scheduler asks for, in index order (docs/hardening.md, "A queue that scales"):
-- queued recipients by due time (claim_due, next_due), leases by end (recover); both
-- partial, so they hold open work only, however many finished rows the queue keeps.
DROP INDEX IF EXISTS recipient_due;
CREATE INDEX IF NOT EXISTS recipient_queued ON recipient (next_attempt_at, mid, rid)
    WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS recipient_leased ON recipient (lease_until) WHERE state = 'inflight';
-- One destination's recipients (queue list --domain).
CREATE INDEX IF NOT EXISTS recipient_domain ON recipient (domain, mid, rid);
-- Messages not done yet (queue list), and done ones by age (purge).
CREATE INDEX IF NOT EXISTS message_open ON message (mid) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS message_done ON message (done_at) WHERE done_at IS NOT NULL;
"""
#: The tables and columns a queue file must have (checked when it is opened).
TABLES = {
    "counter": ("name", "value"),
    "message": ("mid", "mail_from", "data", "received_at", "icid", "done_at"),
    "recipient": (
        "mid",
        "rid",
        "rcpt",
        "domain",
        "state",
        "attempts",
        "first_attempt_at",
        "next_attempt_at",
        "lease_until",
        "last_error",
        "last_result_type",
        "last_reply",
        "delay_warned",
        "final_at",
    ),
}
COLUMNS = (
    "mid, rid, rcpt, domain, state, attempts, first_attempt_at, next_attempt_at, lease_until, "
    "last_error, last_result_type, last_reply, delay_warned, final_at"
)


def recipient_from_row(row: Sequence[Any]) -> Recipient:
    """A :class:`Recipient` from a ``SELECT {COLUMNS}`` row."""
    mid, rid, rcpt, domain, state, attempts, first, nxt, lease, err, rtype, reply, warned, fin = row
    return Recipient(
        mid=int(mid),
        rid=int(rid),
        rcpt=str(rcpt),
        domain=str(domain),
        state=RcptState(state),
        attempts=int(attempts),
        first_attempt_at=None if first is None else float(first),
        next_attempt_at=float(nxt),
        lease_until=None if lease is None else float(lease),
        last_error=err,
        last_result_type=None if rtype is None else ResultType(rtype),
        last_reply=reply,
        delay_warned=bool(warned),
        final_at=None if fin is None else float(fin),
    )
