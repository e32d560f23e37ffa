"""``sts-engine queue list|show|retry|delete``: the durable queue, read and steered offline.

The commands open the queue database directly (SQLite WAL allows it while a
gateway runs). ``retry`` also wakes a running gateway (``SIGUSR1`` to the pid
in ``sts-engine.pid``) so the recipients go out at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from engine.commands import command_group, config_command
from engine.commands.serve import load_config_or_usage, pid_file_path

if TYPE_CHECKING:
    from engine.commands import Subparsers
    from engine.config import EngineConfig
    from engine.gateway.queue import Queue

__all__ = ["register"]

_EPILOG = """\
examples:
  sts-engine queue list --config gateway.toml
  sts-engine queue show 17 --config gateway.toml
  sts-engine queue retry --config gateway.toml        (every queued recipient, now)
  sts-engine queue retry 17 --config gateway.toml
  sts-engine queue delete 17 --config gateway.toml
"""


def register(subparsers: Subparsers) -> None:
    """Add the ``queue`` group."""
    group = command_group(subparsers, "queue", help="inspect and steer the queue", epilog=_EPILOG)
    specs = (
        ("list", "list recipients still in the queue", None),
        ("show", "show one message and its recipients", "mid"),
        ("retry", "make queued recipients due now (all, or one message)", "mid?"),
        ("delete", "remove a message and its recipients", "mid"),
    )
    for name, text, arg in specs:
        p = config_command(group, name, help=text, epilog=_EPILOG)
        if arg == "mid":
            p.add_argument("mid", type=int, metavar="MID")
        elif arg == "mid?":
            p.add_argument("mid", type=int, nargs="?", metavar="MID")
        if name == "list":
            p.add_argument("--all", action="store_true", help="include finished messages")
        p.set_defaults(handler=_HANDLERS[name])


def _open(config: EngineConfig) -> Queue:
    from engine.gateway.queue import Queue

    return Queue(config.queue.path)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    from engine.logs import format_ctime

    return format_ctime(at)


def _list(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    with _open(config) as q:
        rows = q.list(include_done=args.all)
    sys.stdout.write("MID   RID  STATE      TRIES  NEXT ATTEMPT              RECIPIENT\n")
    for r in rows:
        sys.stdout.write(
            f"{r.mid:<5} {r.rid:<4} {r.state.value:<10} {r.attempts:<6} "
            f"{_when(r.next_attempt_at):<25} {r.rcpt}"
            + (f"  ({r.last_error})" if r.last_error else "")
            + "\n"
        )
    sys.stdout.write(f"{len(rows)} recipient(s)\n")
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
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file_path(config).read_text(encoding="utf-8").strip())
        os.kill(pid, signal.SIGUSR1)  # wake a running gateway
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


_HANDLERS = {"list": _list, "show": _show, "retry": _retry, "delete": _delete}
