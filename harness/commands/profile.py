"""``sts-harness profile check FILE...``: validate engine profiles (fixtures/engines/*.toml).

Each problem is one line naming the file, the key and what is allowed
(:func:`harness.adapters.blackbox.check.check_profile`); a good profile gets one line
saying what it is. Exit status: 0 every file is usable, 1 a problem was found.
"""

from __future__ import annotations

import argparse
from typing import Any

from harness.adapters.blackbox.check import check_profile
from harness.commands import console

__all__ = ["register"]

_EXAMPLE = """example:
  sts-harness profile check fixtures/engines/exim-dane.toml
  sts-harness profile check my-mta.toml --no-binaries     (written for another machine)

docs/engines.md explains every key and walks through writing one.
"""


def register(subparsers: Any) -> None:
    """Add ``profile`` (with its one action, ``check``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "profile",
        help="check black-box engine profiles (fixtures/engines/*.toml)",
        description="Work with black-box engine profiles.",
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate profile files",
        description="Validate engine profile files: keys, values, regular expressions, "
        "placeholders, the log map's outcome rules, and that the binaries are installed.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="a profile file, or a name")
    check.add_argument(
        "--no-binaries", action="store_true", help="do not check that the binaries are installed"
    )
    check.set_defaults(handler=_check, command_name="profile check")


def _check(args: argparse.Namespace) -> int:
    out, err = console(), console(stderr=True)
    status = 0
    for name in args.files:
        report = check_profile(name, binaries=not args.no_binaries)
        if report.ok and report.profile is not None:
            p = report.profile
            rootless = "rootless" if p.rootless else "needs root"
            out.print(
                f"{p.path}: ok ({p.driver} driver, features {', '.join(sorted(p.features))}"
                f", {len(p.log)} log rules, {rootless})",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
            continue
        status = 1
        for line in report.problems:
            err.print(line, highlight=False, soft_wrap=True, markup=False)
    return status
