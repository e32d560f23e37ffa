"""The delivery scheduler: due recipients out of the queue, outcomes back into it.

Theory of operation
-------------------
One *round* (:meth:`Scheduler.run_once`) claims every due recipient (a lease,
so a crash leaves them for :meth:`~engine.gateway.queue.Queue.recover`), grouped by
destination domain (docs/gateway-behaviour.md §4: recipients are queued per domain),
and delivers each domain's messages under its Destination Controls limits:

* ``max_concurrency``: at most that many *connection groups* of one domain
  are in flight at once (one semaphore per domain and round);
* ``max_messages_per_connection`` (default 50, CISCO 118548): a connection
  group carries at most that many messages, one after the other. This is an
  approximation of connection reuse: :meth:`engine.delivery.agent.Engine.deliver`
  opens one SMTP session per message, so a group is a logical connection,
  not one TCP connection.

Each attempt's per-recipient outcome is marked in the queue: delivered,
bounced (5xx, a DSN to the sender), or deferred by the bounce profile
(:func:`engine.core.retry.next_attempt`), which may turn into a bounce at
expiry (``5.4.7 - Delivery expired (message too old)``, docs/gateway-behaviour.md §5.5).
APPLY-6: the attempt after which a recipient would bounce is made with
``final=True`` so the engine re-checks the MTA-STS TXT record first.

Report mail (a TLS report, RFC 8460 §3) travels in batches of its own, delivered
with ``report_mail=True``: the engine then marks its ``tls.session`` events, which
is how the TLS reporter leaves them out (RPT-9) without knowing the scheduler.

Supervision (issue 13): nothing that goes wrong with one message stops the others,
the round, or the serve loop. Each step that touches one message (reading it,
delivering its connection group, settling each outcome, its DSN) runs under a guard
that turns any exception into one ``MID n delivery error`` line (its traceback only
at debug level, in the JSON log) and retries that message's recipients under the
bounce profile, as a deferral with that reason. An operator may delete, bounce or
retry a message at any moment of its delivery: an outcome the queue no longer takes
(the message is gone, or the recipient is already final) is dropped with one line,
never raised. What the queue itself cannot do (disk full, locked) fails the claim
at the round's start, which the gateway logs once and retries.

Outcomes are committed as they happen (issue 13, at most the in-flight message
repeated after a crash): :meth:`Scheduler.accepted` marks a message's recipients
delivered the moment its end-of-data reply arrives, while its connection goes on
with the next message; the gateway calls it from the engine's ``delivery.response``
event, which the session emits right after that reply. A ``kill -9`` can then only
repeat, per connection in flight, the one message whose reply was on its way.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.core.clock import Clock
from engine.core.errors import StateError
from engine.core.events import EventSink, LogEvent
from engine.core.retry import expires_at, next_attempt
from engine.delivery.agent import Engine, Outgoing
from engine.delivery.attempt import RecipientResult, describe_fault
from engine.gateway.queue import Queue, QueueError, RcptState
from engine.gateway.queue_model import QueuedMessage, Recipient
from engine.gateway.scheduler_outcome import Settler

__all__ = ["RoundStats", "Scheduler", "is_report_mail"]


@dataclass(frozen=True, slots=True)
class RoundStats:
    """What one round did: recipients claimed, and how each attempt ended."""

    claimed: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0


def is_report_mail(data: bytes) -> bool:
    """Whether a message is a TLS report (RFC 8460 §5.3 ``TLS-Report-Domain`` header)."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    return head.startswith(b"tls-report-domain:") or b"\ntls-report-domain:" in head


class Scheduler:
    """Runs delivery rounds over the queue.

    Args:
        queue: the durable queue.
        engine: the sending engine (replaceable between rounds: config reload).
        clock: the engine clock.
        sink: where the gateway's Delayed/Bounced/finished events go.
        hostname: our name, for DSNs.
        lease_seconds: how long a claim lasts before another round may recover it.
        claim_limit: the most recipients claimed per round.
        on_enqueued: called with the MID of every DSN the scheduler enqueues.
    """

    def __init__(
        self,
        queue: Queue,
        engine: Engine,
        *,
        clock: Clock,
        sink: EventSink,
        hostname: str = "sts-engine.localdomain",
        lease_seconds: float = 600.0,
        claim_limit: int = 1000,
        on_enqueued: Callable[[int], None] | None = None,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.clock = clock
        self.sink = sink
        self.lease_seconds = lease_seconds
        self.claim_limit = claim_limit
        self.settler = Settler(queue, clock, sink, hostname, on_enqueued)
        self.in_flight = 0
        #: Recipients marked delivered at their end-of-data reply, not yet settled.
        self._committed: set[tuple[int, int]] = set()

    @property
    def config(self) -> EngineConfig:
        """The configuration in force (the engine's)."""
        return self.engine.config

    def next_due(self) -> float | None:
        """When the earliest queued recipient is due, or None when nothing waits."""
        return self.queue.next_due()  # an index lookup, whatever the queue's length

    def accepted(self, mid: int, rids: Iterable[int], reply: str | None) -> None:
        """Commit a delivery the moment its end-of-data reply arrives; never raises.

        Called (through the gateway) while the connection goes on with its next message,
        so a crash repeats at most the message whose reply was on its way.
        """
        now = self.clock.now()
        for rid in rids:
            try:
                self.queue.mark_delivered(mid, rid, now, reply=reply)
            except (QueueError, StateError) as exc:
                self._dropped(mid, rid, exc)  # deleted or bounced meanwhile
            except Exception as exc:  # the queue cannot write now: settling tries again
                self._emit("delivery.commit.failed", "debug", mid=mid, rid=rid, detail=str(exc))
            else:
                self._committed.add((mid, rid))

    async def run_once(self, now: float | None = None) -> RoundStats:
        """Claim what is due at ``now`` and make one attempt for each.

        Args:
            now: the time to claim at (default: the clock's).

        Returns:
            Counts for the round.

        Raises:
            QueueUnavailable: the claim itself failed (disk full, locked, damaged); no
                recipient was claimed. Nothing raised while delivering escapes.
        """
        now = self.clock.now() if now is None else now
        self.queue.recover(now, expired_only=True)
        batches = self.queue.claim_due(
            now, limit=self.claim_limit, lease_seconds=self.lease_seconds
        )
        tally: dict[str, int] = {"delivered": 0, "deferred": 0, "bounced": 0}
        claimed = sum(len(b.recipients) for b in batches)
        self.in_flight += 1
        try:
            async with asyncio.TaskGroup() as tg:
                for batch in batches:
                    groups = self._groups(batch.domain, batch.by_message())
                    gate = asyncio.Semaphore(self.config.profile_for(batch.domain).max_concurrency)
                    for group in groups:
                        tg.create_task(self._connection(batch.domain, group, gate, tally))
        finally:
            self.in_flight -= 1
            # One DSN per message for the whole round, whatever its recipients' domains.
            for mid in self.settler.flush(self._fault_after_settling):
                self._finished(mid)
        return RoundStats(claimed, tally["delivered"], tally["deferred"], tally["bounced"])

    def _groups(
        self, domain: str, by_message: dict[int, tuple[int, ...]]
    ) -> list[list[tuple[int, tuple[int, ...]]]]:
        # CISCO 118548: up to max_messages_per_connection messages per connection.
        size = self.config.profile_for(domain).max_messages_per_connection
        items = list(by_message.items())
        return [items[i : i + size] for i in range(0, len(items), size)]

    async def _connection(
        self,
        domain: str,
        group: list[tuple[int, tuple[int, ...]]],
        gate: asyncio.Semaphore,
        tally: dict[str, int],
    ) -> None:
        async with gate:  # max_concurrency per domain
            # CISCO 118548: the group's messages share one connection (report mail, which
            # is delivered under other rules, RPT-9, travels on its own).
            work = []
            for mid, rids in group:
                try:
                    prepared = self._prepare(domain, mid, rids, tally)
                except Exception as exc:
                    self._fault(domain, mid, rids, "reading the queue", exc, tally)
                    continue
                if prepared is not None:
                    work.append(prepared)
            for report_mail in (False, True):
                batch = [w for w in work if is_report_mail(w[0].data) is report_mail]
                if batch:
                    await self._deliver_batch(domain, batch, report_mail, tally)

    def _prepare(
        self, domain: str, mid: int, rids: tuple[int, ...], tally: dict[str, int]
    ) -> tuple[QueuedMessage, list[Recipient], bool] | None:
        """The message's live recipients and whether this is its final attempt."""
        msg = self.queue.message(mid)
        if msg is None:
            return None  # deleted by an operator while claimed
        rows = [r for r in msg.recipients if r.rid in rids and r.state is RcptState.INFLIGHT]
        profile = self.config.bounce_profile_for(domain)
        now = self.clock.now()
        live: list[Recipient] = []
        for r in rows:
            if r.first_attempt_at is not None and now >= expires_at(r.first_attempt_at, profile):
                # CISCO 9.1 UG p.24-39: past the maximum time in queue (e.g. after downtime).
                self._count(tally, self.settler.settle_expired(msg, r, now))
            else:
                live.append(r)
        if not live:
            self._finished(msg.mid)
            return None
        # APPLY-6: the attempt after which a recipient would bounce is the final one.
        final = any(
            next_attempt(r.first_attempt_at or now, r.attempts + 1, now, profile) is None
            for r in live
        )
        return msg, live, final

    async def _deliver_batch(
        self,
        domain: str,
        batch: list[tuple[QueuedMessage, list[Recipient], bool]],
        report_mail: bool,
        tally: dict[str, int],
    ) -> None:
        outgoing = [
            Outgoing(
                msg.mid,
                msg.mail_from,
                tuple(r.rcpt for r in live),
                msg.data,
                tuple(r.rid for r in live),
                final,
            )
            for msg, live, final in batch
        ]
        try:
            reports = await self.engine.deliver_many(outgoing, report_mail=report_mail)
        except Exception as exc:  # a bug or an adapter failure must not lose the lease
            for msg, live, _ in batch:
                rids = tuple(r.rid for r in live)
                self._fault(domain, msg.mid, rids, "delivery", exc, tally)
            return
        profile = self.config.bounce_profile_for(domain)
        now = self.clock.now()
        for (msg, live, _), report in zip(batch, reports, strict=True):
            by_rid = {res.rid: res for res in report.recipients}
            failed: list[int] = []
            fault: Exception | None = None
            for r in live:
                key = (msg.mid, r.rid)
                if key in self._committed:  # committed at its end-of-data reply
                    self._committed.discard(key)
                    self._count(tally, "delivered")
                    continue
                try:
                    res = by_rid[r.rid]
                    outcome = self.settler.settle_result(msg, r, res, profile, now)
                except (QueueError, StateError) as exc:
                    self._dropped(msg.mid, r.rid, exc)  # deleted or bounced meanwhile
                    continue
                except Exception as exc:
                    failed.append(r.rid)
                    fault = exc
                    continue
                self._count(tally, outcome)
            if fault is not None:
                self._fault(domain, msg.mid, tuple(failed), "settling", fault, tally)
            self._finished(msg.mid)

    def _fault(
        self,
        domain: str,
        mid: int,
        rids: tuple[int, ...],
        stage: str,
        exc: Exception,
        tally: dict[str, int],
    ) -> None:
        """One line for a fault in one message's delivery, then its retry; never raises.

        The recipients still leased and not yet settled this round are deferred under
        the bounce profile with the fault as the reason (a bounce, with its DSN, when
        the profile says their time is up). Whatever cannot be written now stays
        leased, and :meth:`~engine.gateway.queue.Queue.recover` returns it when the
        lease ends: nothing is lost.
        """
        detail = f"{stage}: {describe_fault(exc)}"
        self._emit("delivery.error", "warning", mid=mid, detail=detail)
        self._committed -= {(mid, rid) for rid in rids}  # settled at their reply already
        trace = "".join(traceback.format_exception(exc))
        self._emit("delivery.error.trace", "debug", mid=mid, traceback=trace)
        try:
            msg = self.queue.message(mid)
            if msg is None:
                return
            profile = self.config.bounce_profile_for(domain)
            now = self.clock.now()
            for r in msg.recipients:
                if (
                    r.rid not in rids
                    or r.state is not RcptState.INFLIGHT
                    or (mid, r.rid) in self._committed
                    or self.settler.is_owed(mid, r.rid)
                ):
                    continue
                retry = RecipientResult(r.rid, r.rcpt, "deferred", reason=f"internal {detail}")
                self._count(tally, self.settler.settle_result(msg, r, retry, profile, now))
        except Exception as again:  # the queue itself is failing: the lease will return it
            self._emit("delivery.retry.failed", "debug", mid=mid, detail=describe_fault(again))

    def _fault_after_settling(self, mid: int, exc: Exception) -> None:
        """A DSN or mark of :meth:`Settler.flush` failed: one line; the lease returns it."""
        self._emit("delivery.error", "warning", mid=mid, detail=f"DSN: {describe_fault(exc)}")
        trace = "".join(traceback.format_exception(exc))
        self._emit("delivery.error.trace", "debug", mid=mid, traceback=trace)

    def _dropped(self, mid: int, rid: int, exc: Exception) -> None:
        """An outcome the queue no longer takes: the operator deleted or settled it."""
        self._emit("queue.outcome.dropped", mid=mid, rid=rid, detail=str(exc))

    def _finished(self, mid: int) -> None:
        try:
            done = self.queue.is_done(mid)
        except Exception:  # only a log line depends on it
            return
        if done:
            self._emit("message.finished", mid=mid)

    @staticmethod
    def _count(tally: dict[str, int], outcome: str) -> None:
        tally[outcome] = tally.get(outcome, 0) + 1

    def _emit(self, event_code: str, level: str = "info", /, **fields: object) -> None:
        self.sink.emit(LogEvent(event_code, fields, level, self.clock.now()))
