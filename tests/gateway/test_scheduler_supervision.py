"""The supervised scheduler (issue 13 items 1 and 2; issue 17 item 1), in process.

The delivery agent is a stub here, so each test decides exactly when a delivery is
"in flight" (an event it waits on) and what it returns or raises: no sockets, no
sleeps. ``test_scheduler_process.py`` holds the same defects against a real
``sts-engine serve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.config import EngineConfig
from engine.core.clock import ManualClock
from engine.core.events import ListSink, LogEvent
from engine.delivery.agent import DeliveryReport, Outgoing
from engine.delivery.attempt import RecipientResult
from engine.gateway.queue import Queue, RcptState
from engine.gateway.scheduler import Scheduler
from engine.logs import MailLogWriter

T0 = 1_767_225_600.0
MSG = b"From: a@sender.example\r\nSubject: hi\r\n\r\nbody\r\n"


class StubEngine:
    """``deliver_many`` that waits for ``release`` and answers what ``answer`` says.

    ``during`` runs once per message while the delivery is "in flight" (between
    messages on the connection), as the real session's end-of-data does.
    """

    def __init__(self, answer: Callable[[Outgoing], str] = lambda out: "delivered") -> None:
        self.config = EngineConfig()
        self.answer = answer
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.during: Callable[[Outgoing], None] | None = None
        self.calls: list[list[int]] = []

    async def deliver_many(
        self, messages: Sequence[Outgoing], *, report_mail: bool = False
    ) -> list[DeliveryReport]:
        self.calls.append([m.mid for m in messages])
        self.started.set()
        await self.release.wait()
        reports = []
        for out in messages:
            status = self.answer(out)  # may raise: a bug in the delivery path
            if self.during is not None:
                self.during(out)
            reports.append(
                DeliveryReport(
                    out.mid,
                    tuple(
                        RecipientResult(rid, rcpt, status, reply="250 2.0.0 ok", reason="x")
                        for rid, rcpt in zip(out.rids, out.rcpts, strict=True)
                    ),
                )
            )
        return reports


def _scheduler(path: Path, engine: StubEngine) -> tuple[Scheduler, ListSink, ManualClock]:
    sink, clock = ListSink(), ManualClock(T0)
    queue = Queue(path)
    return Scheduler(queue, engine, clock=clock, sink=sink), sink, clock  # type: ignore[arg-type]


def _lines(sink: ListSink) -> list[str]:
    """What ``mail_logs`` shows, at debug level (so nothing is left out but tracebacks)."""
    writer = MailLogWriter(_Null(), level="debug")
    return [line for e in sink.events if (line := writer.line(e)) is not None]


class _Null:
    def write(self, text: str) -> int:
        return len(text)


async def test_delete_while_the_delivery_is_in_flight_is_safe(tmp_path: Path) -> None:
    """Before: ``QueueError: no recipient RID 0 in MID 1`` ended the round (and serve)."""
    engine = StubEngine(answer=lambda out: "deferred")  # the DNS lookup timed out
    engine.release.clear()
    scheduler, sink, _ = _scheduler(tmp_path / "q.sqlite", engine)
    mid, _ = scheduler.queue.enqueue("a@s.example", ["b@slow.example"], MSG, T0)
    round_ = asyncio.create_task(scheduler.run_once())
    await engine.started.wait()  # the lookup is in flight
    with Queue(tmp_path / "q.sqlite") as cli:  # `sts-engine queue delete 1`
        assert cli.delete(mid)
    engine.release.set()
    stats = await round_  # no exception out of the round
    assert stats.claimed == 1
    dropped = f"Info: MID {mid} RID 0 outcome not recorded: no recipient RID 0 in MID {mid}"
    assert [line[25:] for line in _lines(sink)] == [dropped]
    nxt, _ = scheduler.queue.enqueue("a@s.example", ["c@x.example"], MSG, T0)
    engine.answer = lambda out: "delivered"
    assert (await scheduler.run_once()).delivered == 1  # and later messages still go out
    assert scheduler.queue.recipient(nxt, 0).state is RcptState.DELIVERED


async def test_bounce_while_in_flight_keeps_the_operator_s_bounce(tmp_path: Path) -> None:
    engine = StubEngine()
    engine.release.clear()
    scheduler, sink, _ = _scheduler(tmp_path / "q.sqlite", engine)
    mid, _ = scheduler.queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    round_ = asyncio.create_task(scheduler.run_once())
    await engine.started.wait()
    with Queue(tmp_path / "q.sqlite") as cli:  # `sts-engine queue bounce 1`
        assert len(cli.bounce(mid, T0, "5.3.0 bounced by the operator")) == 1
    engine.release.set()
    await round_
    row = scheduler.queue.recipient(mid, 0)
    assert row.state is RcptState.BOUNCED and row.last_error == "5.3.0 bounced by the operator"
    assert any("outcome not recorded" in line and "'bounced'" in line for line in _lines(sink))


async def test_retry_while_in_flight_changes_nothing_in_flight(tmp_path: Path) -> None:
    engine = StubEngine()
    engine.release.clear()
    scheduler, _, _ = _scheduler(tmp_path / "q.sqlite", engine)
    mid, _ = scheduler.queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    round_ = asyncio.create_task(scheduler.run_once())
    await engine.started.wait()
    with Queue(tmp_path / "q.sqlite") as cli:  # `sts-engine queue retry`
        assert cli.retry(T0) == 0  # only queued recipients are made due
    engine.release.set()
    assert (await round_).delivered == 1
    assert scheduler.queue.recipient(mid, 0).state is RcptState.DELIVERED


async def test_an_exception_in_one_delivery_is_one_line_and_a_retry(tmp_path: Path) -> None:
    def answer(out: Outgoing) -> str:
        if out.rcpts[0].endswith("@broken.example"):
            raise RuntimeError("boom\nsecond line")
        return "delivered"

    engine = StubEngine(answer)
    scheduler, sink, _ = _scheduler(tmp_path / "q.sqlite", engine)
    bad, _ = scheduler.queue.enqueue("a@s.example", ["b@broken.example"], MSG, T0)
    good, _ = scheduler.queue.enqueue("a@s.example", ["c@x.example"], MSG, T0)
    stats = await scheduler.run_once()
    assert (stats.delivered, stats.deferred) == (1, 1)
    assert scheduler.queue.recipient(good, 0).state is RcptState.DELIVERED
    row = scheduler.queue.recipient(bad, 0)
    # Retried under the bounce profile: the default's first retry is 60 s later.
    assert (row.state, row.attempts, row.next_attempt_at) == (RcptState.QUEUED, 1, T0 + 60)
    assert row.last_error == "internal delivery: RuntimeError: boom second line"
    lines = _lines(sink)
    errors = [line for line in lines if "delivery error" in line]
    assert errors == [
        f"{errors[0][:24]} Warning: MID {bad} delivery error: "
        "delivery: RuntimeError: boom second line"
    ]
    assert not any("Traceback" in line for line in lines)  # mail_logs: never a traceback
    [trace] = [e for e in sink.events if e.code == "delivery.error.trace"]
    assert "Traceback" in str(trace.fields["traceback"])  # the JSON log has it, at debug


async def test_a_fault_while_settling_one_message_spares_the_others(tmp_path: Path) -> None:
    engine = StubEngine(answer=lambda out: "deferred")
    scheduler, sink, _ = _scheduler(tmp_path / "q.sqlite", engine)
    m1, _ = scheduler.queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    m2, _ = scheduler.queue.enqueue("a@s.example", ["c@x.example"], MSG, T0)
    real = scheduler.queue.mark_deferred
    failed = []

    def flaky(mid: int, *args: object, **kwargs: object) -> None:
        if mid == m1 and not failed:
            failed.append(mid)
            raise OSError("flaky write")
        real(mid, *args, **kwargs)  # type: ignore[arg-type]

    scheduler.queue.mark_deferred = flaky  # type: ignore[method-assign]
    await scheduler.run_once()
    assert [line.split(": ", 1)[1] for line in _lines(sink) if "delivery error" in line] == [
        f"MID {m1} delivery error: settling: OSError: flaky write"
    ]
    for mid in (m1, m2):  # both retried, once each
        row = scheduler.queue.recipient(mid, 0)
        assert (row.state, row.attempts) == (RcptState.QUEUED, 1)


async def test_outcomes_are_committed_at_each_end_of_data_reply(tmp_path: Path) -> None:
    """Before: outcomes were written when the whole connection group was done."""
    engine = StubEngine()
    scheduler, _, _ = _scheduler(tmp_path / "q.sqlite", engine)
    mids = [scheduler.queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] for _ in "abc"]
    seen: list[list[RcptState]] = []

    def end_of_data(out: Outgoing) -> None:
        # What the gateway does on the session's delivery.response event.
        scheduler.accepted(out.mid, list(out.rids), "250 2.0.0 ok")
        with Queue(tmp_path / "q.sqlite") as other:  # what a crash right now would leave
            seen.append([other.recipient(m, 0).state for m in mids])

    engine.during = end_of_data
    stats = await scheduler.run_once()
    assert engine.calls == [mids]  # one connection carried the three
    D, F = RcptState.DELIVERED, RcptState.INFLIGHT
    assert seen == [[D, F, F], [D, D, F], [D, D, D]]
    assert stats.delivered == 3  # counted once each, marked once each


async def test_commit_at_the_reply_of_a_deleted_message_is_dropped(tmp_path: Path) -> None:
    engine = StubEngine()
    scheduler, sink, _ = _scheduler(tmp_path / "q.sqlite", engine)
    scheduler.queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)

    def end_of_data(out: Outgoing) -> None:
        with Queue(tmp_path / "q.sqlite") as cli:
            cli.delete(out.mid)
        scheduler.accepted(out.mid, list(out.rids), "250 ok")  # must not raise

    engine.during = end_of_data
    await scheduler.run_once()
    assert sum("outcome not recorded" in line for line in _lines(sink)) == 2


def _vm_steps(queue: Queue, call: Callable[[], object]) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    queue._db.set_progress_handler(count, 1)
    try:
        call()
    finally:
        queue._db.set_progress_handler(None, 1)
    return steps


def _waiting(queue: Queue, n: int, first: int) -> None:
    mids = range(first, first + n)
    with queue._tx() as db:
        db.executemany(
            "INSERT INTO message (mid, mail_from, data, received_at) VALUES (?, '', x'00', ?)",
            [(m, T0) for m in mids],
        )
        db.executemany(
            "INSERT INTO recipient (mid, rid, rcpt, domain, state, attempts, next_attempt_at)"
            " VALUES (?, 0, 'r@w.example', 'w.example', 'queued', 1, ?)",
            [(m, T0 + 3600) for m in mids],
        )


async def test_a_round_costs_the_same_with_ten_times_the_queue_waiting(tmp_path: Path) -> None:
    """Issue 17: every round listed every queued recipient (56 ms at 6,000 rows)."""
    engine = StubEngine()
    scheduler, _, clock = _scheduler(tmp_path / "q.sqlite", engine)
    queue = scheduler.queue

    async def one_round() -> int:
        queue.enqueue("a@s.example", ["b@x.example"], MSG, clock.now())
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        queue._db.set_progress_handler(count, 1)
        try:
            scheduler.next_due()  # what the serve loop asks after every round
            assert (await scheduler.run_once()).delivered == 1
        finally:
            queue._db.set_progress_handler(None, 1)
        return steps

    _waiting(queue, 300, 1_000_000)
    small = await one_round()
    _waiting(queue, 3000, 2_000_000)
    large = await one_round()
    assert large < small * 1.3 + 100, (small, large)


def test_mail_logs_never_print_a_traceback_event() -> None:
    writer = MailLogWriter(_Null(), level="debug")
    event = LogEvent("delivery.error.trace", {"mid": 1, "traceback": "Traceback ..."}, "debug", T0)
    assert writer.line(event) is None
