"""The queue file refused, checked, repaired and failing cleanly (engine/gateway/queue_file.py).

Issue 13 item 5 (queue half): a read-only, truncated or corrupt queue file stopped
start-up with a raw traceback; a zero-length one silently started a new queue with
MIDs from 1; corruption while running crashed ``queue list``; a full disk surfaced as
``sqlite3`` exceptions. Now each is a typed error with one line saying what is wrong
and how to recover, and nothing is changed on disk by a refused open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.gateway.queue import (
    Queue,
    QueueCorrupt,
    QueueUnavailable,
    RcptState,
    Unavailable,
)

T0 = 1_767_225_600.0
MSG = b"From: a@sender.example\r\nSubject: hi\r\n\r\n" + b"body line\r\n" * 200
ROOT = os.geteuid() == 0


def _filled(path: Path, messages: int = 200) -> None:
    with Queue(path) as q:
        for i in range(messages):
            q.enqueue("a@s.example", [f"b{i}@x.example"], MSG, T0)
    # Closing the last connection checkpoints the WAL into the file and removes it.
    assert not Path(f"{path}-wal").exists()


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` (root only), unmounted afterwards."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# --- refused at open, one line, nothing written ---------------------------------------------


def test_zero_length_file_is_refused_not_restarted_from_mid_1(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    path.touch()
    with pytest.raises(QueueCorrupt) as err:
        Queue(path)
    text = str(err.value)
    assert "\n" not in text
    assert "is empty (0 bytes)" in text and "MID" in text and "docs/hardening.md" in text
    assert err.value.reason is Unavailable.CORRUPT
    assert path.stat().st_size == 0  # untouched: no new schema, no counters from 0


def test_a_missing_file_is_a_new_queue(tmp_path: Path) -> None:
    with Queue(tmp_path / "queue.sqlite") as q:
        assert q.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] == 1


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    path.write_bytes(b"this is a mail spool, not a database\n" * 10)
    with pytest.raises(QueueCorrupt, match=r"is not a SQLite database \(it begins b'this is"):
        Queue(path)


def test_a_truncated_file_is_refused_with_its_sizes(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    _filled(path)
    size = path.stat().st_size
    os.truncate(path, size // 2 // 4096 * 4096)
    with pytest.raises(QueueCorrupt, match=rf"is truncated \([\d,]+ bytes of the {size:,} its"):
        Queue(path)


def test_a_file_cut_inside_a_page_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    _filled(path, 3)
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(QueueCorrupt, match="is truncated"):
        Queue(path)


def test_a_database_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(QueueCorrupt, match="is not a queue of this gateway"):
        Queue(path)


def test_read_only_queue_is_refused_in_one_line(tmp_path: Path) -> None:
    if ROOT:
        # Root writes through file modes: only a read-only filesystem stops it.
        with _tmpfs(tmp_path / "mnt", "4m") as mnt:
            path = mnt / "queue.sqlite"
            _filled(path, 2)
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            with pytest.raises(QueueUnavailable) as err:
                Queue(path)
    else:
        path = tmp_path / "queue.sqlite"
        _filled(path, 2)
        path.chmod(0o444)
        with pytest.raises(QueueUnavailable) as err:
            Queue(path)
    assert err.value.reason is Unavailable.READ_ONLY
    assert "\n" not in str(err.value) and "writable" in str(err.value)


# --- corruption found by the check, and while running ---------------------------------------


def _corrupt_pages(path: Path) -> None:
    """Overwrite the middle of the file (B-tree pages) with garbage, keeping its size."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xa5" * 4096 * 4)


def test_check_finds_damaged_pages(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    _filled(path)
    _corrupt_pages(path)
    with Queue(path) as q:  # the header is fine: the damage shows when pages are read
        problems = q.check()
    assert problems and all(isinstance(p, str) and "\n" not in p for p in problems)


def test_corruption_while_running_is_one_typed_line_for_queue_list(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    _filled(path)
    with Queue(path) as running:  # the gateway's connection stays open
        running.claim_due(T0, limit=1, lease_seconds=60)
        _corrupt_pages(path)
        with pytest.raises(QueueCorrupt) as err, Queue(path) as cli:  # was sqlite3's error
            cli.list(include_done=True)
    text = str(err.value)
    assert "is damaged (database disk image is malformed)" in text
    assert "\n" not in text and "docs/hardening.md" in text


def test_check_is_clean_on_a_healthy_queue(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    _filled(path, 5)
    with Queue(path) as q:
        q.claim_due(T0, limit=2, lease_seconds=60)
        q.mark_delivered(1, 0, T0)
        assert q.check() == []
        assert q.check(full=True) == []


def test_invariants_and_repair(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    _filled(path, 3)
    with Queue(path) as q:
        q.claim_due(T0, limit=1, lease_seconds=60)
    db = sqlite3.connect(path)
    db.execute("UPDATE counter SET value = 1 WHERE name = 'mid'")  # behind MID 3
    db.execute("UPDATE message SET done_at = 5 WHERE mid = 2")  # done, recipient open
    db.execute(
        "INSERT INTO recipient (mid, rid, rcpt, domain, state, next_attempt_at) "
        "VALUES (99, 0, 'x@y.example', 'y.example', 'queued', 0)"
    )  # orphan
    db.commit()
    db.close()
    with pytest.raises(QueueCorrupt, match=r"MID counter 1 is behind MID 3.*queue check --repair"):
        Queue(path)
    with Queue(path, strict=False) as q:
        assert q.check() == [
            "recipient rows without their message: 1",
            "messages marked done with a recipient still open: 1",
            "MID counter behind the MIDs in use (a new message would reuse one): 1",
        ]
        assert q.repair(T0) == [
            "MID counter raised above the MIDs in use: 1",
            "messages reopened: 1",
            "leases returned to the queue: 1",
        ]
        assert q.check() == ["recipient rows without their message: 1"]  # not guessed at
    with Queue(path) as q:
        assert q.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] == 4


# --- storage failures while running: typed, rolled back, nothing lost -----------------------


def test_full_database_refuses_the_message_and_uses_up_no_mid(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    with Queue(path) as q:
        mid, _ = q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
        pages = q._db.execute("PRAGMA page_count").fetchone()[0]
        q._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full"
        with pytest.raises(QueueUnavailable) as err:
            for _ in range(50):
                q.enqueue("a@s.example", ["b@x.example"], MSG * 4, T0)
        assert err.value.reason is Unavailable.DISK_FULL and err.value.transient
        stored = q.counts()[RcptState.QUEUED]
        q._db.execute("PRAGMA max_page_count = 1073741823")
        after, _ = q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
        assert after == mid + stored  # the refused message used up no MID
        assert q.check() == []


@pytest.mark.skipif(not ROOT, reason="mounting a tiny tmpfs needs root")
def test_full_filesystem_is_disk_full_and_recovers_when_space_returns(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "mnt", "2m") as mnt:
        path = mnt / "queue.sqlite"
        with Queue(path) as q:
            q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
            filler = mnt / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            with pytest.raises(QueueUnavailable) as err:
                for _ in range(100):
                    q.enqueue("a@s.example", ["b@x.example"], MSG * 8, T0)
            assert err.value.reason is Unavailable.DISK_FULL, str(err.value)
            assert "the disk is full" in str(err.value)
            filler.unlink()
            mid, _ = q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
            assert q.message(mid) is not None and q.check() == []


def test_a_held_write_lock_is_locked_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    with Queue(path, busy_timeout=0.02) as q:  # a short configured wait
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(QueueUnavailable) as err:
                q.enqueue("a@s.example", ["b@x.example"], MSG, T0)
            assert err.value.reason is Unavailable.LOCKED and err.value.transient
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert q.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] == 1


# --- pages and indexes ----------------------------------------------------------------------


def test_list_pages_by_mid_and_rid(tmp_path: Path) -> None:
    with Queue(tmp_path / "queue.sqlite") as q:
        for n in (2, 1, 3):
            q.enqueue("a@s.example", [f"r{i}@x.example" for i in range(n)], MSG, T0)
        first = q.list(limit=2)
        second = q.list(after=(first[-1].mid, first[-1].rid), limit=2)
        third = q.list(after=(second[-1].mid, second[-1].rid), limit=2)
        assert [(r.mid, r.rid) for r in first + second + third] == [
            (1, 0),
            (1, 1),
            (2, 0),
            (3, 0),
            (3, 1),
            (3, 2),
        ]
        assert q.list(after=(3, 2), limit=2) == ()


def _cost(q: Queue, call: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions ``call()`` runs (a progress handler at every one)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    q._db.set_progress_handler(count, 1)
    try:
        call()
    finally:
        q._db.set_progress_handler(None, 1)
    return steps


def _waiting(q: Queue, n: int, start: int) -> None:
    """``n`` messages waiting for a retry an hour from now, over seven domains (one commit)."""
    mids = range(start + 1_000_000, start + 1_000_000 + n)
    with q._tx() as db:
        db.executemany(
            "INSERT INTO message (mid, mail_from, data, received_at) VALUES (?, '', x'00', ?)",
            [(m, T0) for m in mids],
        )
        db.executemany(
            "INSERT INTO recipient (mid, rid, rcpt, domain, state, attempts, next_attempt_at)"
            " VALUES (?, 0, ?, ?, 'queued', 1, ?)",
            [(m, f"r@d{m % 7}.example", f"d{m % 7}.example", T0 + 3600) for m in mids],
        )


def test_the_scheduler_s_queue_work_does_not_grow_with_the_queue(tmp_path: Path) -> None:
    """Issue 17: due work, the next due time, marks and purges cost the same at any length."""
    with Queue(tmp_path / "queue.sqlite") as q:

        def operations() -> dict[str, int]:
            mid, _ = q.enqueue("a@s.example", ["due@d3.example"], b"x", T0)
            done, _ = q.enqueue("a@s.example", ["done@d3.example"], b"x", T0 - 90000)
            q.claim_due(T0, limit=1, lease_seconds=60)
            q.mark_delivered(done, 0, T0 - 90000)
            ops: dict[str, Callable[[], object]] = {
                "next_due": q.next_due,
                "recover": lambda: q.recover(T0, expired_only=True),
                "claim_due": lambda: q.claim_due(T0, limit=10, lease_seconds=60),
                "mark_delivered": lambda: q.mark_delivered(mid, 0, T0),
                "is_done": lambda: q.is_done(mid),
                "purge": lambda: q.purge(T0 - 86400, limit=100),
                "list page": lambda: q.list(limit=20),
                "list page of a domain": lambda: q.list(domain="d3.example", limit=20),
            }
            return {name: _cost(q, op) for name, op in ops.items()}

        _waiting(q, 200, 0)
        small = operations()
        _waiting(q, 2000, 200)
        large = operations()
    grown = {k: (small[k], large[k]) for k in small if large[k] > small[k] * 1.3 + 50}
    assert not grown, f"cost grew with 10x the queue (instructions before, after): {grown}"
