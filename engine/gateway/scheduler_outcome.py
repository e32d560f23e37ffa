"""What the scheduler does with one recipient's outcome: queue marks, log lines, DSNs.

Theory of operation
-------------------
``Engine.deliver`` reports delivered / deferred / bounced per recipient for one
attempt; the queue and the bounce profile decide what that means over the
message's life. The table (docs/gateway-behaviour.md §4, §5.5)::

    attempt result  queue step                       log line          DSN
    --------------  -------------------------------  ----------------  ---------------
    delivered       mark_delivered                   (engine's lines)  -
    bounced (5xx)   mark_bounced                     Bounced: 5.x.x    failed
    deferred        defer_or_bounce -> next time     Delayed: 4.x.x    delayed (opt.)
    deferred        defer_or_bounce -> None          Bounced: 5.4.7    failed
    (expired)       mark_bounced, no attempt         Bounced: 5.4.7    failed

A delay warning (CISCO 212837) goes out only when the bounce profile enables
it, on the second attempt, after a 4xx, and once per recipient. DSNs are
enqueued from ``<>`` into the gateway's own queue; a message from ``<>`` gets
none (no DSN for a DSN).

One DSN per message and action per round (RFC 3464 §2: a DSN reports on any number
of recipients of one message): a bounce or delay warning is *owed* when it is
settled, and :meth:`Settler.flush`, at the end of the round, sends one DSN for all
of a message's recipients that bounced in the round, whatever their domains, and
only then makes the marks that wait on it (``mark_bounced``, ``mark_delay_warned``).
In that order nothing is lost: until the flush, a bounced recipient is still
leased, so a crash before it retries the recipient (a DSN may then come twice,
never not at all).

A :class:`Settler` holds exactly what settling touches (the queue, the clock,
the sink, our host name for DSNs and who to wake when one is queued); the
scheduler makes one and hands it each outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.core.clock import Clock
from engine.core.errors import StateError
from engine.core.events import EventSink, LogEvent, ResultType
from engine.core.retry import BounceProfile, delay_warning_due, next_attempt
from engine.delivery.agent import outcome_fields
from engine.delivery.attempt import RecipientResult
from engine.gateway.dsn import DsnAction, DsnRecipient, build_dsn, dsn_wanted
from engine.gateway.queue import Queue, QueueError
from engine.gateway.queue_model import QueuedMessage, Recipient

__all__ = ["EXPIRED_REASON", "EXPIRED_STATUS", "Settler"]

EXPIRED_STATUS = "5.4.7"  # docs/gateway-behaviour.md §5.5 (OBS Splunk sample)
EXPIRED_REASON = "Delivery expired (message too old)"


def _expired_line(reply: str | None, detail: str) -> dict[str, object]:
    # docs/gateway-behaviour.md §5.5:
    # "5.4.7 - Delivery expired (message too old) ('000', ['timeout'])".
    if reply and reply[:3].isdigit():
        code, lines = reply[:3], [reply[4:]] if len(reply) > 4 else []
    else:
        code, lines = "000", [detail] if detail else []
    return {
        "enhanced": EXPIRED_STATUS,
        "reason": EXPIRED_REASON,
        "code": code,
        "reply_lines": lines,
    }


def _remote(res: RecipientResult) -> str | None:
    """The remote server's reply behind a result, for ``Diagnostic-Code: smtp;``."""
    return res.reply if res.reply and res.reply[:3].isdigit() else None


def _result_type(text: str | None) -> ResultType | None:
    try:
        return None if text is None else ResultType(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Owed:
    """A recipient's DSN block, due at the end of the round, and the mark that follows it."""

    msg: QueuedMessage
    rid: int
    dsn: DsnRecipient
    mark: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Settler:
    """Settles one recipient's outcome: queue marks, log lines, DSNs.

    Attributes:
        queue: the durable queue (the marks; DSNs are enqueued into it).
        clock: the engine clock (event times, the DSN's date).
        sink: where the ``Delayed:``/``Bounced:`` and DSN events go.
        hostname: our name, the DSN's ``Reporting-MTA``.
        on_enqueued: called with the MID of every DSN enqueued (wakes the gateway).
        owed: the DSN blocks settled this round, by (MID, action), until :meth:`flush`.
    """

    queue: Queue
    clock: Clock
    sink: EventSink
    hostname: str
    on_enqueued: Callable[[int], None] | None = None
    owed: dict[tuple[int, DsnAction], list[_Owed]] = field(default_factory=dict)

    def _emit(self, code: str, /, **fields: object) -> None:
        self.sink.emit(LogEvent(code, fields, "info", self.clock.now()))

    def _outcome_event(
        self,
        code: str,
        msg: QueuedMessage,
        r: Recipient,
        *,
        dcid: int,
        line: dict[str, object],
        result_type: str | None,
    ) -> None:
        """One ``Delayed:`` / ``Bounced:`` line; ``line`` has enhanced, reason, code, reply_lines.

        ``result_type`` is the RFC 8460 §4.3 result type of the failure (None for a
        remote reply): the same field the engine's own outcome events carry, for the
        JSON log.
        """
        self._emit(
            code,
            dcid=dcid,
            mid=msg.mid,
            mail_from=msg.mail_from,
            rcpt=r.rcpt,
            rid=r.rid,
            result_type=result_type,
            **line,
        )

    def settle_result(
        self,
        msg: QueuedMessage,
        r: Recipient,
        res: RecipientResult,
        profile: BounceProfile,
        now: float,
    ) -> str:
        """Mark one attempt's outcome for one recipient; returns the tally key."""
        rtype = _result_type(res.result_type)
        reason = res.reason or res.reply or "unknown failure"
        if res.status == "delivered":
            self.queue.mark_delivered(msg.mid, r.rid, now, reply=res.reply)
            return "delivered"
        if res.status == "bounced":
            line = outcome_fields("bounced", res.reply, reason)
            self._outcome_event(
                "delivery.bounced", msg, r, dcid=res.dcid, line=line, result_type=res.result_type
            )
            self._owe_bounce(msg, r, now, reason, rtype, str(line["enhanced"]), res)
            return "bounced"
        first = now if r.first_attempt_at is None else r.first_attempt_at
        when = next_attempt(first, r.attempts + 1, now, profile)
        if when is None:
            # CISCO 9.1 UG p.24-39: the retries or the time in queue are used up.
            line = _expired_line(res.reply, reason)
            self._outcome_event(
                "delivery.bounced", msg, r, dcid=res.dcid, line=line, result_type=res.result_type
            )
            self._owe_bounce(msg, r, now, reason, rtype, EXPIRED_STATUS, res)
            return "bounced"
        self.queue.mark_deferred(msg.mid, r.rid, now, reason, when, result_type=rtype)
        line = outcome_fields("deferred", res.reply, reason)
        status = str(line["enhanced"])
        self._outcome_event(
            "delivery.delayed", msg, r, dcid=res.dcid, line=line, result_type=res.result_type
        )
        code = int(res.reply[:3]) if res.reply and res.reply[:3].isdigit() else None
        # CISCO 212837: only on the second attempt, only after a 4xx, when enabled.
        if not r.delay_warned and delay_warning_due(
            profile, attempt_number=r.attempts + 1, reply_code=code
        ):
            delayed = DsnRecipient(
                r.rcpt, DsnAction.DELAYED, status, reason, res.mx, now, _remote(res)
            )
            self._owe(msg, r.rid, delayed, lambda: self.queue.mark_delay_warned(msg.mid, r.rid))
        return "deferred"

    def _owe_bounce(
        self,
        msg: QueuedMessage,
        r: Recipient,
        now: float,
        reason: str,
        rtype: ResultType | None,
        status: str,
        res: RecipientResult,
    ) -> None:
        """A bounce after an attempt made ``now``: its DSN block, then its mark."""
        failed = DsnRecipient(r.rcpt, DsnAction.FAILED, status, reason, res.mx, now, _remote(res))

        def mark() -> None:
            self.queue.mark_bounced(msg.mid, r.rid, now, reason, result_type=rtype)

        self._owe(msg, r.rid, failed, mark)

    def _owe(
        self, msg: QueuedMessage, rid: int, dsn: DsnRecipient, mark: Callable[[], None]
    ) -> None:
        self.owed.setdefault((msg.mid, dsn.action), []).append(_Owed(msg, rid, dsn, mark))

    def settle_expired(self, msg: QueuedMessage, r: Recipient, now: float) -> str:
        """Bounce a recipient found past its maximum time in queue, without an attempt."""
        reason = r.last_error or "timeout"
        self._outcome_event(
            "delivery.bounced",
            msg,
            r,
            dcid=0,
            line=_expired_line(None, "timeout"),
            result_type=None if r.last_result_type is None else r.last_result_type.value,
        )
        # RFC 3464 §2.3.7: no attempt now, so the last one is the only one known exactly
        # (a single attempt's time is its first); otherwise the field is left out.
        last = r.first_attempt_at if r.attempts == 1 else None
        failed = DsnRecipient(
            r.rcpt, DsnAction.FAILED, EXPIRED_STATUS, f"{EXPIRED_REASON}: {reason}", None, last
        )

        def mark() -> None:
            self.queue.mark_bounced(
                msg.mid,
                r.rid,
                now,
                f"{EXPIRED_REASON}: {reason}",
                result_type=r.last_result_type,
                attempted=False,
            )

        self._owe(msg, r.rid, failed, mark)
        return "bounced"

    def is_owed(self, mid: int, rid: int) -> bool:
        """Whether this round already settled the recipient (its DSN and mark are owed)."""
        return any(
            e.rid == rid for (m, _), entries in self.owed.items() if m == mid for e in entries
        )

    def flush(self, on_fault: Callable[[int, Exception], None] | None = None) -> list[int]:
        """Send the DSNs owed this round, one per message and action, then their marks.

        A message deleted meanwhile gets neither; a recipient an operator already
        settled keeps that state (its mark is skipped). A message whose DSN or marks
        fail (the queue cannot write) is handed to ``on_fault`` and the others go on;
        its recipients stay leased, so they come back when the lease ends and the DSN
        is owed again (never lost).

        Args:
            on_fault: called with the MID and the exception of a message that failed.

        Returns:
            The MIDs whose recipients were marked (a message may be done now).
        """
        owed = list(self.owed.items())
        self.owed.clear()
        touched: list[int] = []
        for (mid, _action), entries in owed:
            try:
                if self.queue.message(mid) is None:
                    continue  # deleted by an operator: nothing left to report on
                # Durable DSN first, then the marks (module docstring: never lose a DSN).
                self.send_dsn(entries[0].msg, [e.dsn for e in entries])
                for entry in entries:
                    try:
                        entry.mark()
                    except (QueueError, StateError) as exc:
                        self._emit("dsn.mark.skipped", mid=mid, detail=str(exc))
            except Exception as exc:
                if on_fault is None:
                    raise
                on_fault(mid, exc)
                continue
            if mid not in touched:
                touched.append(mid)
        return touched

    def send_dsn(self, msg: QueuedMessage, rcpts: list[DsnRecipient]) -> int | None:
        """Enqueue a DSN about ``rcpts`` to ``msg``'s sender; returns its MID, or None.

        None when the message came from ``<>`` (RFC 3464 §4: no DSN for a DSN) or the
        sender address cannot be queued to.
        """
        if not dsn_wanted(msg.mail_from):
            return None
        now = self.clock.now()
        data = build_dsn(
            original=msg.data,
            mail_from=msg.mail_from,
            recipients=rcpts,
            reporting_mta=self.hostname,
            arrival=msg.received_at,
            now=now,
            mid=msg.mid,
        )
        try:
            mid, _ = self.queue.enqueue("", [msg.mail_from], data, now)
        except QueueError as exc:
            self._emit("dsn.failed", mid=msg.mid, detail=str(exc))
            return None
        action = rcpts[0].action.value
        self._emit("dsn.sent", mid=msg.mid, dsn_mid=mid, action=action, to=msg.mail_from)
        self._emit("message.queued", mid=mid)
        if self.on_enqueued is not None:
            self.on_enqueued(mid)
        return mid
