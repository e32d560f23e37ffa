"""The durable outbound queue: messages and per-recipient delivery state in SQLite.

Theory of operation
-------------------
A message is accepted by :meth:`Queue.enqueue`, which commits the bytes and
one row per recipient in a single transaction with ``synchronous=FULL``; the
listener answers ``250`` only after it returns, so an acknowledged message
survives a crash and a power loss (durability before acknowledgement). Other
commits run at ``synchronous=NORMAL``, which in WAL mode survives a process
crash (``kill -9``) and at worst forgets the last bookkeeping step after a
power loss, so a message may be delivered twice but is never lost.

Each recipient moves through this table (anything else raises
:class:`~engine.core.errors.StateError`)::

    state      event                                   next state
    ---------  --------------------------------------  ----------
    queued     claim_due (next_attempt_at <= now)      inflight
    inflight   recover (start-up, or lease expired)    queued
    queued/inflight  mark_deferred                     queued
    queued/inflight  mark_delivered                    delivered (final)
    queued/inflight  mark_bounced                      bounced   (final)

A claim is a *lease*: ``lease_until`` says until when the claimer owns the
recipient. Nothing renews or ends a lease except the marks; a claimer that
dies leaves its rows ``inflight``, and :meth:`Queue.recover` (run at start-up
with every lease, and from time to time for expired ones) puts them back to
``queued`` with their ``next_attempt_at`` unchanged, hence due at once. So
every enqueued recipient is always in exactly one state, and it reaches a
final state only through an explicit mark: delivery is at least once.

Numbering follows the appliance (docs/gateway-behaviour.md §5.1): MIDs, DCIDs and
ICIDs are persistent counters that only increase; RIDs index a message's
recipients from 0. When every recipient of a message is final the message is
marked done (``done_at``); :meth:`Queue.purge` deletes done messages later,
so a bounce can still quote the message it bounces.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from engine.core.errors import MxPatternError, StateError
from engine.core.events import ResultType
from engine.core.mx import normalize_host
from engine.core.retry import BounceProfile, next_attempt
from engine.gateway.queue_model import (
    COLUMNS,
    FINAL,
    OPEN,
    SCHEMA,
    DomainBatch,
    QueuedMessage,
    QueueError,
    RcptState,
    Recipient,
    recipient_from_row,
)

__all__ = ["DomainBatch", "Queue", "QueueError", "QueuedMessage", "RcptState", "Recipient"]


def _rcpt_domain(rcpt: str) -> str:
    local, at, domain = rcpt.rpartition("@")
    if not at or not local or not domain:
        raise QueueError(f"recipient {rcpt!r} has no domain")
    if domain.startswith("[") and domain.endswith("]"):
        return domain.lower()  # RFC 5321 §4.1.3 address literal: routed as written
    try:
        # The queue is per destination domain in A-labels (RFC 8461 §4.1; docs/architecture.md).
        return normalize_host(domain)
    except MxPatternError as exc:
        raise QueueError(f"recipient {rcpt!r}: {exc.reason}") from exc


class Queue:
    """The outbound queue in one SQLite file.

    Args:
        path: the database file (created if missing), or ``":memory:"`` (tests only: no WAL).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def close(self) -> None:
        """Close the database; leases held stay ``inflight`` until :meth:`recover`."""
        self._db.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        if durable:
            # Durability before acknowledgement: fsync the WAL at this commit.
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def _bump(self, name: str) -> int:
        row = self._db.execute(
            "UPDATE counter SET value = value + 1 WHERE name = ? RETURNING value", (name,)
        ).fetchone()
        return int(row[0])

    def next_dcid(self) -> int:
        """A new delivery connection ID (persistent, increasing)."""
        with self._tx():
            return self._bump("dcid")

    def next_icid(self) -> int:
        """A new injection connection ID (persistent, increasing)."""
        with self._tx():
            return self._bump("icid")

    def enqueue(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        now: float,
        *,
        icid: int | None = None,
    ) -> tuple[int, list[int]]:
        """Accept a message durably; answer the client only after this returns.

        Args:
            mail_from: the envelope sender (``""`` for the null sender).
            rcpts: the envelope recipients, in RCPT order (RID = index).
            data: the message bytes.
            now: the engine clock; every recipient is due at once.
            icid: the injection connection, if the message came over SMTP.

        Returns:
            The new MID and the RIDs.

        Raises:
            QueueError: no recipients, or a recipient without a usable domain.
        """
        if not rcpts:
            raise QueueError("a message needs at least one recipient")
        domains = [_rcpt_domain(r) for r in rcpts]
        with self._tx(durable=True) as db:
            mid = self._bump("mid")
            db.execute(
                "INSERT INTO message (mid, mail_from, data, received_at, icid) "
                "VALUES (?, ?, ?, ?, ?)",
                (mid, mail_from, bytes(data), now, icid),
            )
            db.executemany(
                "INSERT INTO recipient (mid, rid, rcpt, domain, state, next_attempt_at) "
                "VALUES (?, ?, ?, ?, 'queued', ?)",
                [
                    (mid, rid, r, d, now)
                    for rid, (r, d) in enumerate(zip(rcpts, domains, strict=True))
                ],
            )
        return mid, list(range(len(rcpts)))

    def claim_due(self, now: float, *, limit: int, lease_seconds: float) -> list[DomainBatch]:
        """Lease up to ``limit`` due recipients, grouped by destination domain.

        Args:
            now: the engine clock.
            limit: the most recipients to claim (>= 1).
            lease_seconds: how long the claim lasts (> 0).

        Returns:
            One batch per domain, in the order of each domain's most overdue recipient.

        Raises:
            ValueError: ``limit`` below 1 or a lease that is not positive.
        """
        if limit < 1 or lease_seconds <= 0:
            raise ValueError(f"limit {limit!r} must be >= 1, lease {lease_seconds!r} > 0")
        lease = now + lease_seconds
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM recipient WHERE state = 'queued' "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at, mid, rid LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE recipient SET state = 'inflight', lease_until = ? "
                "WHERE mid = ? AND rid = ?",
                [(lease, row[0], row[1]) for row in rows],
            )
        groups: dict[str, list[Recipient]] = {}
        for row in rows:
            r = recipient_from_row(row)
            claimed = replace(r, state=RcptState.INFLIGHT, lease_until=lease)
            groups.setdefault(r.domain, []).append(claimed)
        return [DomainBatch(d, lease, tuple(rs)) for d, rs in groups.items()]

    def recover(self, now: float, *, expired_only: bool = False) -> int:
        """Return leased recipients to ``queued``.

        Args:
            now: the engine clock.
            expired_only: only leases that ended at or before ``now``; at start-up pass
                False, since no claimer from before the restart is alive.

        Returns:
            How many recipients were returned.
        """
        sql = "UPDATE recipient SET state = 'queued', lease_until = NULL WHERE state = 'inflight'"
        with self._tx() as db:
            if expired_only:
                return db.execute(sql + " AND lease_until <= ?", (now,)).rowcount
            return db.execute(sql).rowcount

    def _open_state(self, mid: int, rid: int, event: str) -> Recipient:
        row = self._db.execute(
            f"SELECT {COLUMNS} FROM recipient WHERE mid = ? AND rid = ?", (mid, rid)
        ).fetchone()
        if row is None:
            raise QueueError(f"no recipient RID {rid!r} in MID {mid!r}")
        r = recipient_from_row(row)
        if r.state not in OPEN:
            raise StateError("queue", r.state.value, f"{event} MID {mid} RID {rid}")
        return r

    def _mark(
        self,
        mid: int,
        rid: int,
        event: str,
        state: RcptState,
        now: float,
        changes: dict[str, object],
        *,
        attempted: bool = True,
    ) -> None:
        with self._tx() as db:
            r = self._open_state(mid, rid, event)
            sets: dict[str, object] = {"state": state.value, "lease_until": None, **changes}
            if attempted:
                sets["attempts"] = r.attempts + 1
                sets["first_attempt_at"] = now if r.first_attempt_at is None else r.first_attempt_at
            if state in FINAL:
                sets["final_at"] = now
            assignments = ", ".join(f"{k} = ?" for k in sets)
            db.execute(
                f"UPDATE recipient SET {assignments} WHERE mid = ? AND rid = ?",
                (*sets.values(), mid, rid),
            )
            if state in FINAL:
                # A message is done when none of its recipients is still open.
                db.execute(
                    "UPDATE message SET done_at = ? WHERE mid = ? AND NOT EXISTS "
                    "(SELECT 1 FROM recipient WHERE mid = ? AND state IN ('queued', 'inflight'))",
                    (now, mid, mid),
                )

    def mark_delivered(self, mid: int, rid: int, now: float, *, reply: str | None = None) -> None:
        """The next hop accepted the recipient (counts one attempt).

        Raises:
            QueueError: no such recipient.
            StateError: the recipient is already final.
        """
        self._mark(mid, rid, "mark_delivered", RcptState.DELIVERED, now, {"last_reply": reply})

    def mark_deferred(
        self,
        mid: int,
        rid: int,
        now: float,
        reason: str,
        next_attempt_at: float,
        *,
        result_type: ResultType | None = None,
    ) -> None:
        """The attempt failed temporarily; try again at ``next_attempt_at`` (counts one attempt).

        Raises:
            QueueError: no such recipient.
            StateError: the recipient is already final.
        """
        changes: dict[str, object] = {
            "next_attempt_at": next_attempt_at,
            "last_error": reason,
            "last_result_type": None if result_type is None else result_type.value,
        }
        self._mark(mid, rid, "mark_deferred", RcptState.QUEUED, now, changes)

    def mark_bounced(
        self,
        mid: int,
        rid: int,
        now: float,
        reason: str,
        *,
        result_type: ResultType | None = None,
        attempted: bool = True,
    ) -> None:
        """The recipient hard-bounced.

        Args:
            mid: the message.
            rid: the recipient.
            now: the engine clock.
            reason: why (the reply or the expiry), for ``queue show`` and the DSN.
            result_type: the TLS failure behind the bounce, if any.
            attempted: the bounce follows a delivery attempt (a 5xx); False for a bounce
                decided without one (expiry, an operator's delete-with-bounce).

        Raises:
            QueueError: no such recipient.
            StateError: the recipient is already final.
        """
        changes: dict[str, object] = {
            "last_error": reason,
            "last_result_type": None if result_type is None else result_type.value,
        }
        self._mark(mid, rid, "mark_bounced", RcptState.BOUNCED, now, changes, attempted=attempted)

    def defer_or_bounce(
        self,
        mid: int,
        rid: int,
        now: float,
        reason: str,
        profile: BounceProfile,
        *,
        result_type: ResultType | None = None,
    ) -> float | None:
        """A failed attempt: defer by the bounce profile's schedule, or bounce when it ends.

        Returns:
            The next attempt time, or None when the recipient was bounced
            (docs/gateway-behaviour.md §4: retries used up, or past the maximum time in queue).

        Raises:
            QueueError: no such recipient.
            StateError: the recipient is already final.
        """
        r = self._open_state(mid, rid, "defer_or_bounce")
        first = now if r.first_attempt_at is None else r.first_attempt_at
        when = next_attempt(first, r.attempts + 1, now, profile)
        if when is None:
            self.mark_bounced(mid, rid, now, reason, result_type=result_type)
        else:
            self.mark_deferred(mid, rid, now, reason, when, result_type=result_type)
        return when

    def mark_delay_warned(self, mid: int, rid: int) -> None:
        """Note that a delay-warning DSN went out for this recipient (CISCO 212837)."""
        with self._tx() as db:
            self._open_state(mid, rid, "mark_delay_warned")
            db.execute(
                "UPDATE recipient SET delay_warned = 1 WHERE mid = ? AND rid = ?", (mid, rid)
            )

    def recipient(self, mid: int, rid: int) -> Recipient | None:
        """One recipient row, or None."""
        row = self._db.execute(
            f"SELECT {COLUMNS} FROM recipient WHERE mid = ? AND rid = ?", (mid, rid)
        ).fetchone()
        return None if row is None else recipient_from_row(row)

    def message(self, mid: int) -> QueuedMessage | None:
        """The message with its bytes and recipients (``queue show``), or None."""
        row = self._db.execute(
            "SELECT mid, mail_from, data, received_at, icid, done_at FROM message WHERE mid = ?",
            (mid,),
        ).fetchone()
        if row is None:
            return None
        rows = self._db.execute(
            f"SELECT {COLUMNS} FROM recipient WHERE mid = ? ORDER BY rid", (mid,)
        ).fetchall()
        return QueuedMessage(
            mid=row[0],
            mail_from=row[1],
            data=bytes(row[2]),
            received_at=row[3],
            icid=row[4],
            done_at=row[5],
            recipients=tuple(recipient_from_row(r) for r in rows),
        )

    def counts(self) -> dict[RcptState, int]:
        """How many recipients are in each state (every state listed)."""
        rows = self._db.execute("SELECT state, count(*) FROM recipient GROUP BY state")
        found = {RcptState(s): int(n) for s, n in rows}
        return {s: found.get(s, 0) for s in RcptState}

    def retry(self, now: float, mid: int | None = None) -> int:
        """Make queued recipients due now (``queue retry``; the appliance's ``delivernow``).

        Args:
            now: the engine clock.
            mid: one message, or None for every message.

        Returns:
            How many recipients were made due.
        """
        sql = "UPDATE recipient SET next_attempt_at = ? WHERE state = 'queued'"
        with self._tx() as db:
            if mid is None:
                return db.execute(sql, (now,)).rowcount
            return db.execute(sql + " AND mid = ?", (now, mid)).rowcount

    def delete(self, mid: int) -> bool:
        """Remove a message and its recipients whatever their state (``queue delete``).

        Returns:
            False when there was no such message.
        """
        with self._tx() as db:
            db.execute("DELETE FROM recipient WHERE mid = ?", (mid,))
            return db.execute("DELETE FROM message WHERE mid = ?", (mid,)).rowcount > 0

    def purge(self, before: float) -> int:
        """Delete messages that were done before ``before``; returns how many."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM recipient WHERE mid IN "
                "(SELECT mid FROM message WHERE done_at IS NOT NULL AND done_at < ?)",
                (before,),
            )
            return db.execute(
                "DELETE FROM message WHERE done_at IS NOT NULL AND done_at < ?", (before,)
            ).rowcount

    def list(
        self,
        *,
        state: RcptState | None = None,
        domain: str | None = None,
        include_done: bool = False,
    ) -> tuple[Recipient, ...]:
        """Recipient rows in MID, RID order (``queue list``).

        Args:
            state: only this state.
            domain: only this destination domain (any case).
            include_done: include recipients of messages that are done.

        Returns:
            The matching rows.
        """
        where, args = [], []
        if state is not None:
            where.append("r.state = ?")
            args.append(RcptState(state).value)
        if domain is not None:
            where.append("r.domain = ?")
            args.append(domain.lower().rstrip("."))
        if not include_done:
            where.append("m.done_at IS NULL")
        cols = ", ".join(f"r.{c.strip()}" for c in COLUMNS.split(","))
        sql = f"SELECT {cols} FROM recipient r JOIN message m ON m.mid = r.mid"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + " ORDER BY r.mid, r.rid", args).fetchall()
        return tuple(recipient_from_row(r) for r in rows)
