"""``sts-engine queue list|show|retry|delete|bounce|check``: the durable queue, offline.

The commands open the queue database directly (SQLite WAL allows it while a
gateway runs). ``retry`` and ``bounce`` also wake a running gateway (``SIGUSR1`` to
the pid in ``sts-engine.pid``) so the recipients, or the DSN, go out at once. A
queue that cannot be read (damaged, read-only, disk full, locked) is one line on
standard error and exit status 2, never a traceback; ``check`` says what is wrong
with it and ``check --repair`` fixes what needs no guess (docs/hardening.md,
"Queue recovery", is the whole procedure; the group's ``--help`` shows it too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.commands import UsageError, command_group, config_command
from engine.commands.serve import load_config_or_usage, pid_file_path

if TYPE_CHECKING:
    from engine.commands import Subparsers
    from engine.config import EngineConfig
    from engine.gateway.queue import Queue

__all__ = ["register"]

_EPILOG = """\
examples:
  sts-engine queue list --config gateway.toml               (the first 1000 rows)
  sts-engine queue list --config gateway.toml --after 4711:0 --limit 100
  sts-engine queue show 17 --config gateway.toml
  sts-engine queue retry --config gateway.toml              (every queued recipient, now)
  sts-engine queue retry 17 --config gateway.toml
  sts-engine queue delete 17 --config gateway.toml
  sts-engine queue bounce 17 --config gateway.toml          (with a DSN to the sender)
  sts-engine queue check --config gateway.toml

recovering a queue the gateway refuses to start on (docs/hardening.md, Queue recovery):
  1. stop the gateway; copy queue.sqlite and its -wal and -shm files aside
  2. sts-engine queue check --config gateway.toml            (what is wrong)
  3. damaged or truncated: move it aside and copy what is readable into a new queue,
       mv queue.sqlite queue.sqlite.broken     (and its -wal, -shm files likewise)
       sts-engine queue salvage --from queue.sqlite.broken --config gateway.toml
     empty (0 bytes): restore a backup, or move it aside to start a new queue
     read-only: make the file, its -wal/-shm files and directory writable
  4. sts-engine queue check --repair --config gateway.toml   (counters, done marks, leases)
  5. start the gateway: leases left by the crash are retried (at least once, never lost)
"""
#: Rows a ``list`` page shows unless ``--limit`` says otherwise.
PAGE = 1000


def _mid_rid(text: str) -> tuple[int, int]:
    """``--after``: ``MID`` (after every row of it) or ``MID:RID``."""
    mid, colon, rid = text.partition(":")
    try:
        value = (int(mid), int(rid) if colon else 2**31)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MID or MID:RID, not {text!r}") from None
    if min(value) < 0:
        raise argparse.ArgumentTypeError(f"expected MID or MID:RID, not {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows >= 1, not {text!r}")
    return value


def register(subparsers: Subparsers) -> None:
    """Add the ``queue`` group."""
    group = command_group(subparsers, "queue", help="inspect and steer the queue", epilog=_EPILOG)
    specs = (
        ("list", "list recipients still in the queue, a page at a time", None),
        ("show", "show one message and its recipients", "mid"),
        ("retry", "make queued recipients due now (all, or one message)", "mid?"),
        ("delete", "remove a message and its recipients", "mid"),
        ("bounce", "bounce a message's open recipients, with a DSN to its sender", "mid"),
        ("check", "check the queue file (SQLite integrity and the queue's invariants)", None),
        ("salvage", "copy what is readable of a damaged queue file into a new queue", None),
    )
    for name, text, arg in specs:
        p = config_command(group, name, help=text, epilog=_EPILOG)
        if arg == "mid":
            p.add_argument("mid", type=int, metavar="MID")
        elif arg == "mid?":
            p.add_argument("mid", type=int, nargs="?", metavar="MID")
        if name == "list":
            p.add_argument("--all", action="store_true", help="include finished messages")
            p.add_argument("--domain", metavar="DOMAIN", help="only this destination domain")
            p.add_argument(
                "--after",
                type=_mid_rid,
                metavar="MID[:RID]",
                help="start after this row (the 'next page' line of the previous page)",
            )
            p.add_argument(
                "--limit", type=_positive, default=PAGE, metavar="N", help=f"rows (default {PAGE})"
            )
        if name == "check":
            p.add_argument(
                "--full", action="store_true", help="also compare every index with its table"
            )
            p.add_argument(
                "--repair",
                action="store_true",
                help="fix counters, done marks and leases (stop the gateway first)",
            )
        if name == "salvage":
            p.add_argument(
                "--from",
                dest="broken",
                required=True,
                metavar="FILE",
                help="the damaged queue file (moved aside; read, never written)",
            )
        if name == "bounce":
            p.add_argument(
                "--hostname", default="sts-engine.localdomain", help="Reporting-MTA of the DSN"
            )
        p.set_defaults(handler=_guard(_HANDLERS[name]))


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A queue that cannot be used is one line and exit status 2 (module docstring)."""

    def run(args: argparse.Namespace) -> int:
        from engine.gateway.queue import QueueError, QueueUnavailable

        try:
            return handler(args)
        except (QueueUnavailable, QueueError) as exc:
            raise UsageError(str(exc)) from exc

    return run


def _open(config: EngineConfig, *, strict: bool = True) -> Queue:
    from engine.gateway.queue import Queue

    return Queue(config.queue.path, strict=strict)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    from engine.logs import format_ctime

    return format_ctime(at)


def _wake(config: EngineConfig) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file_path(config).read_text(encoding="utf-8").strip())
        os.kill(pid, signal.SIGUSR1)  # wake a running gateway


def _list(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    with _open(config) as q:
        rows = q.list(
            include_done=args.all, domain=args.domain, after=args.after, limit=args.limit + 1
        )
    more, rows = len(rows) > args.limit, rows[: args.limit]
    sys.stdout.write("MID   RID  STATE      TRIES  NEXT ATTEMPT              RECIPIENT\n")
    for r in rows:
        sys.stdout.write(
            f"{r.mid:<5} {r.rid:<4} {r.state.value:<10} {r.attempts:<6} "
            f"{_when(r.next_attempt_at):<25} {r.rcpt}"
            + (f"  ({r.last_error})" if r.last_error else "")
            + "\n"
        )
    sys.stdout.write(f"{len(rows)} recipient(s)\n")
    if more:
        last = rows[-1]
        sys.stdout.write(f"next page: --after {last.mid}:{last.rid}\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    with _open(config) as q:
        msg = q.message(args.mid)
    if msg is None:
        sys.stderr.write(f"sts-engine: no message MID {args.mid}\n")
        return 1
    sys.stdout.write(
        f"MID {msg.mid}\n  From: <{msg.mail_from}>\n  Received: {_when(msg.received_at)}\n"
        f"  ICID: {msg.icid if msg.icid is not None else '-'}\n  Size: {len(msg.data)} bytes\n"
        f"  Done: {_when(msg.done_at)}\n"
    )
    for r in msg.recipients:
        sys.stdout.write(
            f"  RID {r.rid} To: <{r.rcpt}> {r.state.value} attempts {r.attempts} "
            f"next {_when(r.next_attempt_at)}\n"
        )
        if r.last_error:
            result = f" [{r.last_result_type.value}]" if r.last_result_type else ""
            sys.stdout.write(f"      last error: {r.last_error}{result}\n")
        if r.last_reply:
            sys.stdout.write(f"      reply: {r.last_reply}\n")
    return 0


def _retry(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    with _open(config) as q:
        count = q.retry(time.time(), args.mid)
    _wake(config)
    sys.stdout.write(f"{count} recipient(s) due now\n")
    return 0


def _delete(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    with _open(config) as q:
        found = q.delete(args.mid)
    if not found:
        sys.stderr.write(f"sts-engine: no message MID {args.mid}\n")
        return 1
    sys.stdout.write(f"MID {args.mid} deleted\n")
    return 0


_OPERATOR_BOUNCE = ("5.3.0", "bounced by the operator (sts-engine queue bounce)")


def _bounce(args: argparse.Namespace) -> int:
    from engine.gateway.dsn import DsnAction, DsnRecipient, build_dsn, dsn_wanted

    config = load_config_or_usage(args.config)
    now = time.time()
    status, reason = _OPERATOR_BOUNCE
    with _open(config) as q:
        msg = q.message(args.mid)
        if msg is None:
            sys.stderr.write(f"sts-engine: no message MID {args.mid}\n")
            return 1
        bounced = q.bounce(args.mid, now, f"{status} {reason}")
        if not bounced:
            sys.stdout.write(f"MID {args.mid}: no recipient left to bounce\n")
            return 0
        text = f"MID {args.mid}: {len(bounced)} recipient(s) bounced"
        if dsn_wanted(msg.mail_from):
            blocks = [
                DsnRecipient(r.rcpt, DsnAction.FAILED, status, reason, None, None) for r in bounced
            ]
            data = build_dsn(
                original=msg.data,
                mail_from=msg.mail_from,
                recipients=blocks,
                reporting_mta=args.hostname,
                arrival=msg.received_at,
                now=now,
                mid=msg.mid,
            )
            dsn_mid, _ = q.enqueue("", [msg.mail_from], data, now)
            text += f", DSN queued as MID {dsn_mid}"
    _wake(config)
    sys.stdout.write(text + "\n")
    return 0


def _check(args: argparse.Namespace) -> int:
    from engine.gateway.queue import QueueCorrupt

    config = load_config_or_usage(args.config)
    path = config.queue.path
    try:
        with _open(config, strict=False) as q:
            done = q.repair(time.time()) if args.repair else []
            problems = q.check(full=args.full)
    except QueueCorrupt as exc:  # what the check is for: say it, as its finding
        sys.stdout.write(f"{path}: {exc.detail}\n  recovery: {exc.recovery}\n")
        return 1
    for line in done:
        sys.stdout.write(f"{path}: repaired: {line}\n")
    for line in problems:
        sys.stdout.write(f"{path}: {line}\n")
    if problems:
        sys.stdout.write("  recovery: docs/hardening.md (Queue recovery), or 'queue --help'\n")
        return 1
    sys.stdout.write(f"{path}: ok\n")
    return 0


def _salvage(args: argparse.Namespace) -> int:
    from pathlib import Path

    config = load_config_or_usage(args.config)
    broken = Path(args.broken)
    if not broken.is_file():
        raise UsageError(f"--from {args.broken!r}: no such file")
    if broken.resolve() == Path(config.queue.path).resolve():
        raise UsageError("--from must be the damaged file moved aside, not [queue] path itself")
    with _open(config) as q:
        messages, recipients, lost = q.salvage(broken)
    for line in lost:
        sys.stdout.write(f"{broken}: left out: {line}\n")
    sys.stdout.write(
        f"{config.queue.path}: salvaged {messages} message(s), {recipients} recipient(s)"
        f" from {broken}; {len(lost)} left out\n"
    )
    return 0


_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _list,
    "show": _show,
    "retry": _retry,
    "delete": _delete,
    "bounce": _bounce,
    "check": _check,
    "salvage": _salvage,
}
