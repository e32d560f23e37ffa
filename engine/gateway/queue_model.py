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
    "DomainBatch",
    "QueueError",
    "QueuedMessage",
    "RcptState",
    "Recipient",
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
    """A queue operation named a message or recipient that is not there, or a bad address."""


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
CREATE INDEX IF NOT EXISTS recipient_due ON recipient (state, next_attempt_at);
"""
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
