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

A :class:`Settler` holds exactly what settling touches (the queue, the clock,
the sink, our host name for DSNs and who to wake when one is queued); the
scheduler makes one and hands it each outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.core.clock import Clock
from engine.core.events import EventSink, LogEvent, ResultType
from engine.core.retry import BounceProfile, delay_warning_due
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


def _result_type(text: str | None) -> ResultType | None:
    try:
        return None if text is None else ResultType(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Settler:
    """Settles one recipient's outcome: queue marks, log lines, DSNs.

    Attributes:
        queue: the durable queue (the marks; DSNs are enqueued into it).
        clock: the engine clock (event times, the DSN's date).
        sink: where the ``Delayed:``/``Bounced:`` and DSN events go.
        hostname: our name, the DSN's ``Reporting-MTA``.
        on_enqueued: called with the MID of every DSN enqueued (wakes the gateway).
    """

    queue: Queue
    clock: Clock
    sink: EventSink
    hostname: str
    on_enqueued: Callable[[int], None] | None = None

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
            self.queue.mark_bounced(msg.mid, r.rid, now, reason, result_type=rtype)
            line = outcome_fields("bounced", res.reply, reason)
            status = str(line["enhanced"])
            self._outcome_event(
                "delivery.bounced", msg, r, dcid=res.dcid, line=line, result_type=res.result_type
            )
            failed = DsnRecipient(r.rcpt, DsnAction.FAILED, status, reason, res.mx, now)
            self.send_dsn(msg, [failed])
            return "bounced"
        when = self.queue.defer_or_bounce(msg.mid, r.rid, now, reason, profile, result_type=rtype)
        if when is None:
            # CISCO 9.1 UG p.24-39: the retries or the time in queue are used up.
            line = _expired_line(res.reply, reason)
            self._outcome_event(
                "delivery.bounced", msg, r, dcid=res.dcid, line=line, result_type=res.result_type
            )
            failed = DsnRecipient(r.rcpt, DsnAction.FAILED, EXPIRED_STATUS, reason, res.mx, now)
            self.send_dsn(msg, [failed])
            return "bounced"
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
            self.queue.mark_delay_warned(msg.mid, r.rid)
            delayed = DsnRecipient(r.rcpt, DsnAction.DELAYED, status, reason, res.mx, now)
            self.send_dsn(msg, [delayed])
        return "deferred"

    def settle_expired(self, msg: QueuedMessage, r: Recipient, now: float) -> str:
        """Bounce a recipient found past its maximum time in queue, without an attempt."""
        reason = r.last_error or "timeout"
        self.queue.mark_bounced(
            msg.mid,
            r.rid,
            now,
            f"{EXPIRED_REASON}: {reason}",
            result_type=r.last_result_type,
            attempted=False,
        )
        self._outcome_event(
            "delivery.bounced",
            msg,
            r,
            dcid=0,
            line=_expired_line(None, "timeout"),
            result_type=None if r.last_result_type is None else r.last_result_type.value,
        )
        failed = DsnRecipient(r.rcpt, DsnAction.FAILED, EXPIRED_STATUS, reason, None, now)
        self.send_dsn(msg, [failed])
        return "bounced"

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
