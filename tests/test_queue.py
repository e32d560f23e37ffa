"""The durable queue: numbering, leases, marks, crash recovery (engine/gateway/queue.py)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.core.errors import StateError
from engine.core.events import ResultType
from engine.core.retry import BounceProfile
from engine.gateway.queue import Queue, QueueError, RcptState

T0 = 1_767_225_600.0
MSG = b"From: a@sender.example\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.sqlite"


@pytest.fixture
def queue(db_path: Path):
    q = Queue(db_path)
    yield q
    q.close()


# --- enqueue and numbering -------------------------------------------------------------------


def test_mids_increase_and_rids_index_recipients_from_zero(queue: Queue) -> None:
    mid1, rids1 = queue.enqueue("a@s.example", ["b@x.example", "c@y.example"], MSG, T0)
    mid2, rids2 = queue.enqueue("a@s.example", ["d@x.example"], MSG, T0)
    assert (rids1, rids2) == ([0, 1], [0])
    assert mid2 > mid1 >= 1


def test_enqueue_stores_bytes_and_lower_case_alabel_domains(queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@Bücher.Example.", "c@[127.0.0.9]"], MSG, T0, icid=7)
    msg = queue.message(mid)
    assert msg is not None
    assert (msg.mail_from, msg.data, msg.received_at, msg.icid) == ("a@s.example", MSG, T0, 7)
    assert [r.domain for r in msg.recipients] == ["xn--bcher-kva.example", "[127.0.0.9]"]
    assert [r.rcpt for r in msg.recipients] == ["b@Bücher.Example.", "c@[127.0.0.9]"]
    first = msg.recipients[0]
    assert (first.state, first.attempts, first.next_attempt_at) == (RcptState.QUEUED, 0, T0)
    assert first.first_attempt_at is None and first.delay_warned is False


@pytest.mark.parametrize("rcpts", [[], ["postmaster"], ["b@"], ["b@bad..example"]])
def test_enqueue_rejects_unroutable_recipients_and_stores_nothing(
    queue: Queue, rcpts: list[str]
) -> None:
    with pytest.raises(QueueError):
        queue.enqueue("a@s.example", rcpts, MSG, T0)
    assert queue.list(include_done=True) == ()
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    assert mid == 1  # no MID was used up


def test_mid_dcid_icid_persist_across_reopen(db_path: Path) -> None:
    with Queue(db_path) as q:
        mid, _ = q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
        dcids = [q.next_dcid(), q.next_dcid()]
        icid = q.next_icid()
    with Queue(db_path) as q:
        assert q.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] == mid + 1
        assert q.next_dcid() == dcids[-1] + 1
        assert q.next_icid() == icid + 1
        assert q.message(mid) is not None
    assert dcids == [1, 2]


def test_database_is_in_wal_mode(db_path: Path, queue: Queue) -> None:
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_enqueue_commits_with_synchronous_full(queue: Queue) -> None:
    # Durability before acknowledgement: the accepting commit is fsynced.
    statements: list[str] = []
    queue._db.set_trace_callback(statements.append)
    queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    queue._db.set_trace_callback(None)
    pragmas = [s for s in statements if s.startswith(("PRAGMA", "BEGIN", "COMMIT"))]
    assert pragmas == [
        "PRAGMA synchronous=FULL",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "PRAGMA synchronous=NORMAL",
    ]


def test_a_reader_sees_an_enqueued_message_at_once(db_path: Path, queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    with Queue(db_path) as reader:  # the CLI's connection while the engine runs
        assert reader.message(mid).data == MSG


# --- claiming --------------------------------------------------------------------------------


def test_claim_groups_due_recipients_by_domain(queue: Queue) -> None:
    m1, _ = queue.enqueue("a@s.example", ["b@x.example", "c@y.example", "d@X.example"], MSG, T0)
    m2, _ = queue.enqueue("a@s.example", ["e@y.example"], MSG, T0)
    batches = queue.claim_due(T0, limit=10, lease_seconds=60)
    assert [(b.domain, [(r.mid, r.rid) for r in b.recipients]) for b in batches] == [
        ("x.example", [(m1, 0), (m1, 2)]),
        ("y.example", [(m1, 1), (m2, 0)]),
    ]
    assert batches[0].by_message() == {m1: (0, 2)}
    assert batches[1].by_message() == {m1: (1,), m2: (0,)}
    assert all(r.state is RcptState.INFLIGHT for b in batches for r in b.recipients)
    assert all(b.lease_until == T0 + 60 for b in batches)


def test_claim_takes_only_due_recipients_up_to_the_limit(queue: Queue) -> None:
    queue.enqueue("a@s.example", ["b@x.example", "c@x.example", "d@x.example"], MSG, T0)
    assert queue.claim_due(T0 - 1, limit=10, lease_seconds=60) == []
    [batch] = queue.claim_due(T0, limit=2, lease_seconds=60)
    assert [r.rid for r in batch.recipients] == [0, 1]
    [batch] = queue.claim_due(T0, limit=2, lease_seconds=60)
    assert [r.rid for r in batch.recipients] == [2]
    assert queue.claim_due(T0, limit=2, lease_seconds=60) == []  # never claimed twice


@pytest.mark.parametrize(("limit", "lease"), [(0, 60), (1, 0)])
def test_claim_rejects_a_bad_limit_or_lease(queue: Queue, limit: int, lease: float) -> None:
    with pytest.raises(ValueError):
        queue.claim_due(T0, limit=limit, lease_seconds=lease)


# --- marks -----------------------------------------------------------------------------------


def test_delivered_recipients_finish_the_message(queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@x.example", "c@y.example"], MSG, T0)
    queue.claim_due(T0, limit=10, lease_seconds=60)
    queue.mark_delivered(mid, 0, T0 + 1, reply="250 2.0.0 ok")
    assert queue.message(mid).done_at is None
    queue.mark_bounced(mid, 1, T0 + 2, "550 5.1.1 unknown user")
    msg = queue.message(mid)
    assert msg.done_at == T0 + 2
    delivered, bounced = msg.recipients
    assert (delivered.state, delivered.attempts, delivered.last_reply) == (
        RcptState.DELIVERED,
        1,
        "250 2.0.0 ok",
    )
    assert (bounced.state, bounced.final_at, bounced.last_error) == (
        RcptState.BOUNCED,
        T0 + 2,
        "550 5.1.1 unknown user",
    )
    assert queue.list() == ()
    assert len(queue.list(include_done=True)) == 2


def test_deferral_requeues_at_the_given_time(queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    queue.claim_due(T0, limit=1, lease_seconds=60)
    queue.mark_deferred(
        mid, 0, T0 + 5, "4.0.0 TLS required", T0 + 65, result_type=ResultType.CERTIFICATE_EXPIRED
    )
    r = queue.recipient(mid, 0)
    assert (r.state, r.attempts, r.first_attempt_at, r.next_attempt_at, r.lease_until) == (
        RcptState.QUEUED,
        1,
        T0 + 5,
        T0 + 65,
        None,
    )
    assert r.last_result_type is ResultType.CERTIFICATE_EXPIRED
    assert queue.claim_due(T0 + 64, limit=1, lease_seconds=60) == []
    queue.claim_due(T0 + 65, limit=1, lease_seconds=60)
    queue.mark_deferred(mid, 0, T0 + 70, "again", T0 + 200)
    r = queue.recipient(mid, 0)
    assert (r.attempts, r.first_attempt_at) == (2, T0 + 5)  # the first attempt stays


def test_marks_on_final_or_unknown_recipients_raise(queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    queue.mark_delivered(mid, 0, T0)
    with pytest.raises(StateError, match="delivered"):
        queue.mark_bounced(mid, 0, T0, "late")
    with pytest.raises(StateError):
        queue.mark_deferred(mid, 0, T0, "late", T0 + 60)
    with pytest.raises(QueueError, match="RID 5"):
        queue.mark_delivered(mid, 5, T0)


def test_defer_or_bounce_follows_the_bounce_profile(queue: Queue) -> None:
    profile = BounceProfile(max_retries=2, initial_retry=60, max_retry=3600)
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    assert queue.defer_or_bounce(mid, 0, T0, "421", profile) == T0 + 60
    assert queue.defer_or_bounce(mid, 0, T0 + 60, "421", profile) == T0 + 60 + 120
    assert queue.defer_or_bounce(mid, 0, T0 + 180, "421", profile) is None  # retries used up
    r = queue.recipient(mid, 0)
    assert (r.state, r.attempts) == (RcptState.BOUNCED, 3)


def test_defer_or_bounce_bounces_past_the_time_in_queue(queue: Queue) -> None:
    profile = BounceProfile(max_queue_seconds=100, initial_retry=60)
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    assert queue.defer_or_bounce(mid, 0, T0, "421", profile) == T0 + 60
    assert queue.defer_or_bounce(mid, 0, T0 + 60, "421", profile) is None  # T0+180 > T0+100


def test_bounce_without_an_attempt_counts_none(queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    queue.mark_bounced(mid, 0, T0, "5.4.7 expired", attempted=False)
    assert queue.recipient(mid, 0).attempts == 0


def test_delay_warning_is_remembered(queue: Queue) -> None:
    mid, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    queue.mark_delay_warned(mid, 0)
    assert queue.recipient(mid, 0).delay_warned is True


# --- recovery --------------------------------------------------------------------------------


def test_dropped_claims_come_back_after_recover(db_path: Path) -> None:
    q = Queue(db_path)
    mid, _ = q.enqueue("a@s.example", ["b@x.example", "c@x.example"], MSG, T0)
    q.claim_due(T0, limit=10, lease_seconds=600)
    q.close()  # the process "dies" holding the lease, without marking anything
    with Queue(db_path) as q:
        assert {r.state for r in q.list()} == {RcptState.INFLIGHT}
        assert q.recover(T0 + 1) == 2
        [batch] = q.claim_due(T0 + 1, limit=10, lease_seconds=600)
        assert [(r.mid, r.rid) for r in batch.recipients] == [(mid, 0), (mid, 1)]


def test_recover_expired_only_spares_live_leases(queue: Queue) -> None:
    queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    queue.claim_due(T0, limit=1, lease_seconds=60)
    queue.enqueue("a@s.example", ["c@x.example"], MSG, T0 + 30)
    queue.claim_due(T0 + 30, limit=1, lease_seconds=60)
    assert queue.recover(T0 + 60, expired_only=True) == 1
    assert queue.counts()[RcptState.INFLIGHT] == 1


# --- operator commands -----------------------------------------------------------------------


def test_retry_makes_queued_recipients_due_now(queue: Queue) -> None:
    m1, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    m2, _ = queue.enqueue("a@s.example", ["c@x.example"], MSG, T0)
    for mid in (m1, m2):
        queue.mark_deferred(mid, 0, T0, "421", T0 + 3600)
    assert queue.retry(T0 + 1, m1) == 1
    [batch] = queue.claim_due(T0 + 1, limit=10, lease_seconds=60)
    assert [r.mid for r in batch.recipients] == [m1]
    assert queue.retry(T0 + 2) == 1


def test_delete_and_purge(queue: Queue) -> None:
    m1, _ = queue.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    m2, _ = queue.enqueue("a@s.example", ["c@x.example"], MSG, T0)
    assert queue.delete(m1) is True
    assert queue.delete(m1) is False
    assert queue.message(m1) is None
    queue.mark_delivered(m2, 0, T0 + 10)
    assert queue.purge(T0 + 10) == 0
    assert queue.purge(T0 + 11) == 1
    assert queue.message(m2) is None


def test_list_filters_and_counts(queue: Queue) -> None:
    queue.enqueue("a@s.example", ["b@x.example", "c@y.example"], MSG, T0)
    queue.claim_due(T0, limit=1, lease_seconds=60)
    assert [r.rcpt for r in queue.list(domain="Y.example.")] == ["c@y.example"]
    assert [r.rcpt for r in queue.list(state=RcptState.INFLIGHT)] == ["b@x.example"]
    assert queue.counts() == {
        RcptState.QUEUED: 1,
        RcptState.INFLIGHT: 1,
        RcptState.DELIVERED: 0,
        RcptState.BOUNCED: 0,
    }


# --- real process crashes (SIGKILL, no sleeps: readiness over a pipe) ------------------------


def _claim_then_hang(path: str, conn: Connection) -> None:
    q = Queue(path)
    batches = q.claim_due(T0, limit=10, lease_seconds=3600)
    conn.send([(r.mid, r.rid) for b in batches for r in b.recipients])
    conn.recv()  # wait to be killed


def _enqueue_then_hang(path: str, conn: Connection) -> None:
    q = Queue(path)
    mid, _ = q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    conn.send(mid)  # the "250" to the client
    conn.recv()


def _half_transaction_then_hang(path: str, conn: Connection) -> None:
    q = Queue(path)
    q._db.execute("BEGIN IMMEDIATE")
    q._db.execute("UPDATE recipient SET state = 'delivered'")
    conn.send("inside")
    conn.recv()


def _run_and_kill(target, path: Path):
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=target, args=(str(path), there))
    child.start()
    try:
        assert here.poll(60), "child did not report readiness"
        said = here.recv()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        here.close()
        there.close()
    assert child.exitcode == -signal.SIGKILL
    return said


@pytest.mark.slow
def test_sigkill_while_holding_leases_loses_nothing(db_path: Path) -> None:
    with Queue(db_path) as q:
        mid, _ = q.enqueue("a@s.example", ["b@x.example", "c@y.example"], MSG, T0)
    claimed = _run_and_kill(_claim_then_hang, db_path)
    assert claimed == [(mid, 0), (mid, 1)]
    with Queue(db_path) as q:
        assert q.recover(T0) == 2  # start-up recovery
        again = [
            (r.mid, r.rid)
            for b in q.claim_due(T0, limit=10, lease_seconds=60)
            for r in b.recipients
        ]
        assert again == claimed
        assert q.message(mid).data == MSG


@pytest.mark.slow
def test_sigkill_after_enqueue_keeps_the_acknowledged_message(db_path: Path) -> None:
    Queue(db_path).close()
    mid = _run_and_kill(_enqueue_then_hang, db_path)
    with Queue(db_path) as q:
        assert q.message(mid).data == MSG
        assert q.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] == mid + 1


@pytest.mark.slow
def test_sigkill_inside_a_transaction_rolls_it_back(db_path: Path) -> None:
    with Queue(db_path) as q:
        mid, _ = q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
    assert _run_and_kill(_half_transaction_then_hang, db_path) == "inside"
    with Queue(db_path) as q:
        assert q.recipient(mid, 0).state is RcptState.QUEUED


# --- the model test --------------------------------------------------------------------------

_DOMAINS = ["x.example", "y.example", "z.example"]


class QueueMachine(RuleBasedStateMachine):
    """The queue against a dict: no recipient is ever lost, duplicated or finished silently."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="queue-model-")
        self.path = Path(self.dir) / "q.sqlite"
        self.q = Queue(self.path)
        self.now = T0
        self.state: dict[tuple[int, int], RcptState] = {}
        self.due: dict[tuple[int, int], float] = {}
        self.last_mid = 0

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _in(self, state: RcptState) -> list[tuple[int, int]]:
        return sorted(k for k, s in self.state.items() if s is state)

    @initialize()
    def start(self) -> None:
        assert self.q.recover(self.now) == 0

    @rule(domains=st.lists(st.sampled_from(_DOMAINS), min_size=1, max_size=3))
    def enqueue(self, domains: list[str]) -> None:
        rcpts = [f"u{i}@{d}" for i, d in enumerate(domains)]
        mid, rids = self.q.enqueue("a@s.example", rcpts, MSG, self.now)
        assert mid > self.last_mid
        self.last_mid = mid
        for rid in rids:
            self.state[(mid, rid)] = RcptState.QUEUED
            self.due[(mid, rid)] = self.now

    @rule(limit=st.integers(1, 4))
    def claim(self, limit: int) -> None:
        due = sorted(
            (k for k in self._in(RcptState.QUEUED) if self.due[k] <= self.now),
            key=lambda k: (self.due[k], k),
        )[:limit]
        batches = self.q.claim_due(self.now, limit=limit, lease_seconds=60)
        got = [(r.mid, r.rid) for b in batches for r in b.recipients]
        assert sorted(got) == sorted(due)
        assert len({b.domain for b in batches}) == len(batches)
        for b in batches:
            assert all(r.domain == b.domain for r in b.recipients)
        for k in got:
            self.state[k] = RcptState.INFLIGHT

    @precondition(lambda self: self._in(RcptState.INFLIGHT))
    @rule(data=st.data(), outcome=st.sampled_from(["deliver", "defer", "bounce"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        mid, rid = data.draw(st.sampled_from(self._in(RcptState.INFLIGHT)))
        if outcome == "deliver":
            self.q.mark_delivered(mid, rid, self.now)
            self.state[(mid, rid)] = RcptState.DELIVERED
        elif outcome == "bounce":
            self.q.mark_bounced(mid, rid, self.now, "550")
            self.state[(mid, rid)] = RcptState.BOUNCED
        else:
            self.q.mark_deferred(mid, rid, self.now, "421", self.now + 30)
            self.state[(mid, rid)] = RcptState.QUEUED
            self.due[(mid, rid)] = self.now + 30

    @precondition(lambda self: self._in(RcptState.DELIVERED) + self._in(RcptState.BOUNCED))
    @rule(data=st.data())
    def late_mark_is_refused(self, data: st.DataObject) -> None:
        key = data.draw(
            st.sampled_from(self._in(RcptState.DELIVERED) + self._in(RcptState.BOUNCED))
        )
        with pytest.raises(StateError):
            self.q.mark_delivered(*key, self.now)

    @rule(seconds=st.sampled_from([1, 30, 61]))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule()
    def crash_and_restart(self) -> None:
        self.q.close()  # no marks: whatever was inflight is orphaned
        self.q = Queue(self.path)
        returned = self.q.recover(self.now)
        assert returned == len(self._in(RcptState.INFLIGHT))
        for k in self._in(RcptState.INFLIGHT):
            self.state[k] = RcptState.QUEUED

    @rule()
    def retry_all(self) -> None:
        assert self.q.retry(self.now) == len(self._in(RcptState.QUEUED))
        for k in self._in(RcptState.QUEUED):
            self.due[k] = self.now

    @invariant()
    def every_recipient_is_in_exactly_its_model_state(self) -> None:
        rows = self.q.list(include_done=True)
        assert len(rows) == len(self.state)
        assert {(r.mid, r.rid): r.state for r in rows} == self.state
        assert sum(self.q.counts().values()) == len(self.state)

    @invariant()
    def messages_are_done_exactly_when_all_recipients_are_final(self) -> None:
        for mid in {m for m, _ in self.state}:
            final = all(
                s in (RcptState.DELIVERED, RcptState.BOUNCED)
                for (m, _), s in self.state.items()
                if m == mid
            )
            assert (self.q.message(mid).done_at is not None) == final


TestQueueModel = QueueMachine.TestCase
