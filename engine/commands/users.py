"""``sts-engine users hash NAME``: a line for the listener's users file (SMTP AUTH).

The password is read from standard input (one line, without echo on a terminal), never
from the command line, where other users could see it in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from engine.commands import UsageError, command_group

if TYPE_CHECKING:
    from engine.commands import Subparsers

__all__ = ["register"]

_EPILOG = """\
example:
  sts-engine users hash app1 >> users       (then [listener] users_file = "users")

exit status: 0 printed, 2 usage error (an empty password, a name with ':' or spaces)
"""


def register(subparsers: Subparsers) -> None:
    """Add ``users hash``."""
    group = command_group(
        subparsers, "users", help="SMTP AUTH users of the listener", epilog=_EPILOG
    )
    hash_cmd = group.add_parser(
        "hash",
        help="print NAME:ARGON2ID-HASH for the users file (password from stdin)",
        description="Read a password from standard input and print the users-file line "
        "for NAME: an Argon2id hash (RFC 9106, argon2-cffi's default cost).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hash_cmd.add_argument("name", help="the user name clients give to AUTH")
    hash_cmd.set_defaults(handler=_hash)


def _hash(args: argparse.Namespace) -> int:
    from engine.gateway.auth import hash_password

    name: str = args.name
    if not name or ":" in name or any(c.isspace() for c in name):
        raise UsageError(f"a user name has no ':' and no spaces, not {name!r}")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("an empty password")
    sys.stdout.write(f"{name}:{hash_password(password)}\n")
    return 0
