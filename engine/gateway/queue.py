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

Every operation is also safe against the operator: ``sts-engine queue delete``,
``bounce`` and ``retry`` may run (from another process) at any moment of a
delivery. A mark on a recipient that was deleted meanwhile raises
:class:`QueueError`, on one that an operator bounced :class:`StateError`; the
scheduler drops such an outcome with one line (it never stops a round).

Storage failures never escape as ``sqlite3`` exceptions: every public method
raises :class:`QueueUnavailable` (disk full, locked, read-only, I/O error) or
:class:`QueueCorrupt` instead, with the transaction rolled back
(:mod:`engine.gateway.queue_file` translates them, and checks the file before
SQLite opens it). Nothing the scheduler does lists the whole queue: due work,
the next due time, open messages and purges are index lookups (the indexes are
in :data:`~engine.gateway.queue_model.SCHEMA`), and listings page.

Numbering follows the appliance (docs/gateway-behaviour.md §5.1): MIDs, DCIDs and
ICIDs are persistent counters that only increase; RIDs index a message's
recipients from 0. When every recipient of a message is final the message is
marked done (``done_at``); :meth:`Queue.purge` deletes done messages later,
so a bounce can still quote the message it bounces.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from engine.core.errors import MxPatternError, StateError
from engine.core.events import ResultType
from engine.core.mx import normalize_host
from engine.core.retry import BounceProfile, next_attempt
from engine.gateway import queue_file
from engine.gateway.queue_model import (
    COLUMNS,
    FINAL,
    OPEN,
    SCHEMA,
    DomainBatch,
    QueueCorrupt,
    QueuedMessage,
    QueueError,
    QueueUnavailable,
    RcptState,
    Recipient,
    Unavailable,
    recipient_from_row,
)

__all__ = [
    "DomainBatch",
    "Queue",
    "QueueCorrupt",
    "QueueError",
    "QueueUnavailable",
    "QueuedMessage",
    "RcptState",
    "Recipient",
    "Unavailable",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(method: Callable[Concatenate[Queue, _P], _R]) -> Callable[Concatenate[Queue, _P], _R]:
    """Raise the queue's typed errors instead of ``sqlite3``'s (module docstring)."""

    @functools.wraps(method)
    def guarded(self: Queue, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise  # our bug (a closed queue, a bad statement): not the storage's fault
        except sqlite3.Error as exc:
            raise queue_file.translate(exc, self.path) from exc

    return guarded


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
        busy_timeout: seconds to wait for another process's write lock before
            :class:`QueueUnavailable` (``locked``).
        strict: refuse a MID counter behind the MIDs in use; ``queue check --repair``
            opens with False to fix it.

    Raises:
        QueueCorrupt: the file is empty, truncated, not SQLite, not a queue, or its MID
            counter is behind its MIDs (each with how to recover: docs/hardening.md).
        QueueUnavailable: it cannot be opened for writing (read-only, disk full, locked).
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0, strict: bool = True) -> None:
        self.path = str(path)
        self._strict = strict
        if self.path != ":memory:":
            queue_file.preflight(Path(self.path))
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
        except sqlite3.Error as exc:
            raise queue_file.translate(exc, self.path) from exc
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    @_guarded
    def _open(self) -> None:
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        queue_file.check_schema(self._db, self.path)
        # Also the write probe: a file that cannot be written fails here, not at the
        # first message (new tables, new indexes of a newer gateway, counters).
        with self._tx():
            statement = ""
            for line in SCHEMA.splitlines(keepends=True):
                statement += line
                if sqlite3.complete_statement(statement):  # a ";" in a comment is no end
                    self._db.execute(statement)
                    statement = ""
        behind = self._db.execute(
            "SELECT value, (SELECT coalesce(max(mid), 0) FROM message) FROM counter "
            "WHERE name = 'mid'"
        ).fetchone()
        if behind[0] < behind[1] and self._strict:
            raise QueueCorrupt(
                self.path,
                f"MID counter {behind[0]} is behind MID {behind[1]} (new mail would reuse MIDs)",
                "stop the gateway and run 'sts-engine queue check --repair'",
            )

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
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL, some I/O errors), and
                # a failed ROLLBACK must not hide the error that caused it.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def _bump(self, name: str) -> int:
        row = self._db.execute(
            "UPDATE counter SET value = value + 1 WHERE name = ? RETURNING value", (name,)
        ).fetchone()
        return int(row[0])

    @_guarded
    def next_dcid(self) -> int:
        """A new delivery connection ID (persistent, increasing)."""
        with self._tx():
            return self._bump("dcid")

    @_guarded
    def next_icid(self) -> int:
        """A new injection connection ID (persistent, increasing)."""
        with self._tx():
            return self._bump("icid")

    @_guarded
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

    @_guarded
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

    @_guarded
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

    @_guarded
    def mark_delivered(self, mid: int, rid: int, now: float, *, reply: str | None = None) -> None:
        """The next hop accepted the recipient (counts one attempt).

        Raises:
            QueueError: no such recipient.
            StateError: the recipient is already final.
        """
        self._mark(mid, rid, "mark_delivered", RcptState.DELIVERED, now, {"last_reply": reply})

    @_guarded
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

    @_guarded
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

    @_guarded
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

    @_guarded
    def mark_delay_warned(self, mid: int, rid: int) -> None:
        """Note that a delay-warning DSN went out for this recipient (CISCO 212837)."""
        with self._tx() as db:
            self._open_state(mid, rid, "mark_delay_warned")
            db.execute(
                "UPDATE recipient SET delay_warned = 1 WHERE mid = ? AND rid = ?", (mid, rid)
            )

    @_guarded
    def recipient(self, mid: int, rid: int) -> Recipient | None:
        """One recipient row, or None."""
        row = self._db.execute(
            f"SELECT {COLUMNS} FROM recipient WHERE mid = ? AND rid = ?", (mid, rid)
        ).fetchone()
        return None if row is None else recipient_from_row(row)

    @_guarded
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

    @_guarded
    def counts(self) -> dict[RcptState, int]:
        """How many recipients are in each state (every state listed)."""
        rows = self._db.execute("SELECT state, count(*) FROM recipient GROUP BY state")
        found = {RcptState(s): int(n) for s, n in rows}
        return {s: found.get(s, 0) for s in RcptState}

    @_guarded
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

    @_guarded
    def delete(self, mid: int) -> bool:
        """Remove a message and its recipients whatever their state (``queue delete``).

        Returns:
            False when there was no such message.
        """
        with self._tx() as db:
            db.execute("DELETE FROM recipient WHERE mid = ?", (mid,))
            return db.execute("DELETE FROM message WHERE mid = ?", (mid,)).rowcount > 0

    @_guarded
    def purge(self, before: float, *, limit: int | None = None) -> int:
        """Delete messages that were done before ``before``, oldest first; returns how many.

        Args:
            before: the engine clock's cut-off.
            limit: the most messages to delete in this call (keeps one call short).
        """
        with self._tx() as db:
            mids = [
                int(r[0])
                for r in db.execute(
                    "SELECT mid FROM message WHERE done_at IS NOT NULL AND done_at < ? "
                    "ORDER BY done_at LIMIT ?",
                    (before, -1 if limit is None else limit),
                )
            ]
            db.executemany("DELETE FROM recipient WHERE mid = ?", [(m,) for m in mids])
            db.executemany("DELETE FROM message WHERE mid = ?", [(m,) for m in mids])
        return len(mids)

    @_guarded
    def next_due(self) -> float | None:
        """When the earliest queued recipient is due, or None (an index lookup)."""
        row = self._db.execute(
            "SELECT next_attempt_at FROM recipient WHERE state = 'queued' "
            "ORDER BY next_attempt_at LIMIT 1"
        ).fetchone()
        return None if row is None else float(row[0])

    @_guarded
    def is_done(self, mid: int) -> bool:
        """Whether message ``mid`` exists and every recipient of it is final."""
        row = self._db.execute("SELECT done_at FROM message WHERE mid = ?", (mid,)).fetchone()
        return row is not None and row[0] is not None

    @_guarded
    def bounce(self, mid: int, now: float, reason: str) -> list[Recipient]:
        """Bounce every open recipient of a message (``queue bounce``), in flight or not.

        A delivery of it still in progress may finish: its outcome is then dropped
        (module docstring), and the operator's bounce stands.

        Returns:
            The recipients bounced (as they were before), for the DSN; [] when none was open.
        """
        with self._tx() as db:
            rows = [
                recipient_from_row(r)
                for r in db.execute(
                    f"SELECT {COLUMNS} FROM recipient WHERE mid = ? "
                    "AND state IN ('queued', 'inflight') ORDER BY rid",
                    (mid,),
                )
            ]
            db.execute(
                "UPDATE recipient SET state = 'bounced', lease_until = NULL, last_error = ?, "
                "final_at = ? WHERE mid = ? AND state IN ('queued', 'inflight')",
                (reason, now, mid),
            )
            if rows:
                db.execute("UPDATE message SET done_at = ? WHERE mid = ?", (now, mid))
        return rows

    @_guarded
    def check(self, *, full: bool = False, invariants: bool = True) -> list[str]:
        """SQLite's integrity check, then the queue's invariants; [] when all is well.

        Args:
            full: ``integrity_check`` (every index against its table) instead of
                ``quick_check``.
            invariants: also check the queue's own invariants (when SQLite found nothing).
        """
        problems = queue_file.integrity(self._db, full=full)
        if problems or not invariants:
            return problems
        return queue_file.invariants(self._db)

    @_guarded
    def repair(self, now: float) -> list[str]:
        """Fix what can be fixed without a guess (the gateway must be stopped).

        Returns:
            What was done, one line each (see :func:`engine.gateway.queue_file.repair`).
        """
        return queue_file.repair(self._db, now)

    @_guarded
    def salvage(self, broken: str | Path) -> tuple[int, int, list[str]]:
        """Copy every readable message of the damaged queue file ``broken`` into this one.

        Returns:
            Messages and recipients copied, and one line per message left out (see
            :func:`engine.gateway.queue_file.salvage`).

        Raises:
            QueueError: this queue already holds messages.
        """
        if self._db.execute("SELECT 1 FROM message LIMIT 1").fetchone() is not None:
            raise QueueError(f"salvage needs a new, empty queue; {self.path!r} has messages")
        return queue_file.salvage(Path(broken), self._db)

    @_guarded
    def list(
        self,
        *,
        state: RcptState | None = None,
        domain: str | None = None,
        include_done: bool = False,
        after: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> tuple[Recipient, ...]:
        """Recipient rows in MID, RID order (``queue list``), one page at a time.

        Args:
            state: only this state.
            domain: only this destination domain (any case).
            include_done: include recipients of messages that are done.
            after: only rows after this (MID, RID): the last row of the previous page.
            limit: the most rows to return (None: all; commands always page).

        Returns:
            The matching rows.
        """
        where: list[str] = []
        args: list[object] = []
        if state is not None:
            where.append("r.state = ?")
            args.append(RcptState(state).value)
        if domain is not None:
            where.append("r.domain = ?")
            args.append(domain.lower().rstrip("."))
        if after is not None:
            where.append("(r.mid, r.rid) > (?, ?)")
            args.extend(after)
        if not include_done:
            where.append("m.done_at IS NULL")
        cols = ", ".join(f"r.{c.strip()}" for c in COLUMNS.split(","))
        sql = f"SELECT {cols} FROM recipient r JOIN message m ON m.mid = r.mid"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.mid, r.rid LIMIT ?"
        args.append(-1 if limit is None else limit)
        rows = self._db.execute(sql, args).fetchall()
        return tuple(recipient_from_row(r) for r in rows)
