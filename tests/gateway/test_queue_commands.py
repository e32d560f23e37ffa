"""``sts-engine queue list|check|salvage|bounce``: pages, checks, recovery (issues 13 and 17)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cli import main
from engine.gateway.queue import Queue, RcptState
from tests.gateway.test_queue_file import MSG, T0, _corrupt_pages, _filled


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[queue]\npath = "{tmp_path / "queue.sqlite"}"\n[tls]\nca_file = "system"\n')
    return path


def test_list_pages_with_limit_and_after(tmp_path, capsys):
    config = _config(tmp_path)
    with Queue(tmp_path / "queue.sqlite") as q:
        for i in range(5):
            q.enqueue("a@s.example", [f"r{i}@x.example", f"s{i}@y.example"], MSG, T0)
    assert main(["queue", "list", "--config", str(config), "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 recipient(s)\nnext page: --after 2:0\n" in out
    assert main(["queue", "list", "--config", str(config), "--after", "2:0", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.splitlines()[1:4]] == [
        ["2", "1"],
        ["3", "0"],
        ["3", "1"],
    ]
    assert main(["queue", "list", "--config", str(config), "--after", "4"]) == 0
    out = capsys.readouterr().out
    assert "2 recipient(s)\n" in out and "next page" not in out
    assert main(["queue", "list", "--config", str(config), "--domain", "Y.example"]) == 0
    assert "5 recipient(s)" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_list_refuses_a_bad_limit_in_one_line(tmp_path, capsys, bad):
    assert main(["queue", "list", "--config", str(_config(tmp_path)), "--limit", bad]) == 2
    assert f"expected a whole number of rows >= 1, not '{bad}'" in capsys.readouterr().err


def test_check_says_ok_then_names_problems_and_repairs(tmp_path, capsys):
    config = _config(tmp_path)
    _filled(tmp_path / "queue.sqlite", 3)
    assert main(["queue", "check", "--config", str(config), "--full"]) == 0
    assert capsys.readouterr().out.endswith(": ok\n")
    with Queue(tmp_path / "queue.sqlite") as q:
        q.claim_due(T0, limit=1, lease_seconds=60)  # a lease left by a "crash"
        q._db.execute("UPDATE message SET done_at = 1 WHERE mid = 2")
    assert main(["queue", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "messages marked done with a recipient still open: 1" in out
    assert "docs/hardening.md" in out
    assert main(["queue", "check", "--repair", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "repaired: messages reopened: 1" in out and "repaired: leases returned" in out
    assert out.endswith(": ok\n")


def test_check_of_an_empty_file_is_its_finding_not_a_traceback(tmp_path, capsys):
    config = _config(tmp_path)
    (tmp_path / "queue.sqlite").touch()
    assert main(["queue", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "is empty (0 bytes)" in out and "recovery: restore it from a backup" in out
    assert main(["queue", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is empty (0 bytes)" in err


def test_salvage_copies_what_is_readable_and_names_what_is_not(tmp_path, capsys):
    config = _config(tmp_path)
    live = tmp_path / "queue.sqlite"
    _filled(live, 200)
    with Queue(live) as q:
        q.claim_due(T0, limit=5, lease_seconds=60)
        counter = q.next_dcid()
    _corrupt_pages(live)
    assert main(["queue", "list", "--config", str(config), "--all", "--limit", "300"]) == 2
    assert "is damaged" in capsys.readouterr().err
    broken = tmp_path / "queue.sqlite.broken"
    os.rename(live, broken)
    assert main(["queue", "salvage", "--from", str(broken), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lost = [line for line in out.splitlines() if "left out: MID" in line]
    assert lost and f"salvaged {200 - len(lost)} message(s)" in out
    assert main(["queue", "check", "--config", str(config)]) == 0
    with Queue(live) as q:
        rows = q.list(limit=300)
        assert len(rows) == 200 - len(lost)
        assert {r.state for r in rows} == {RcptState.QUEUED}  # leases given back
        assert q.enqueue("a@s.example", ["b@x.example"], MSG, T0)[0] == 201  # no MID reused
        assert q.next_dcid() == counter + 1
    assert main(["queue", "salvage", "--from", str(broken), "--config", str(config)]) == 2
    assert "salvage needs a new, empty queue" in capsys.readouterr().err


def test_bounce_settles_open_recipients_and_queues_one_dsn(tmp_path, capsys):
    config = _config(tmp_path)
    with Queue(tmp_path / "queue.sqlite") as q:
        mid, _ = q.enqueue("alice@s.example", ["b@x.example", "c@y.example"], MSG, T0)
        q.claim_due(T0, limit=1, lease_seconds=60)  # RID 0 in flight right now
    assert main(["queue", "bounce", str(mid), "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"MID {mid}: 2 recipient(s) bounced, DSN queued as MID 2\n"
    with Queue(tmp_path / "queue.sqlite") as q:
        msg = q.message(mid)
        assert msg is not None and msg.done_at is not None
        assert {r.state for r in msg.recipients} == {RcptState.BOUNCED}
        dsn = q.message(2)
        assert dsn is not None and dsn.mail_from == "" and b"5.3.0" in dsn.data
    assert main(["queue", "bounce", str(mid), "--config", str(config)]) == 0
    assert "no recipient left to bounce" in capsys.readouterr().out
    assert main(["queue", "bounce", "99", "--config", str(config)]) == 1


def test_queue_help_shows_the_recovery_path(capsys):
    assert main(["queue", "--help"]) == 0
    out = capsys.readouterr().out
    assert "recovering a queue the gateway refuses to start on" in out
    assert "sts-engine queue salvage --from queue.sqlite.broken" in out
    assert "docs/hardening.md" in out
