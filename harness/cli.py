"""``sts-harness``: the harness's command line, an argparse dispatcher.

Each subcommand lives in a module of :mod:`harness.commands` exposing
``register(subparsers)``, which adds its parser and sets ``handler`` (a function
``(argparse.Namespace) -> int``). Modules are discovered, so adding ``run``, ``list``,
``show``, ``coverage`` or ``capture`` is adding a module; this file does not change.
As ``sts-engine`` does (:func:`engine.cli.run_quietly`), a closed stdout ends a command
with status 141 and Ctrl-C with 130, with no traceback, and a usage error is one line.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Sequence

import harness.commands
from engine.cli import OneLineErrorParser, run_quietly

__all__ = ["build_parser", "main"]

_EPILOG = """example:
  sts-harness serve fixtures/worlds/w-sts.toml
  sts-harness serve --help
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``sts-harness`` parser with every command of :mod:`harness.commands`."""
    parser = OneLineErrorParser(
        prog="sts-harness",
        description="Conformance harness for MTA-STS / DANE / TLS-RPT senders.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in sorted(pkgutil.iter_modules(harness.commands.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"harness.commands.{module.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sts-harness`` with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 2 usage or spec error, 1 other failure, 130
        interrupted, 141 stdout closed by its reader.
    """
    return run_quietly(lambda: _dispatch(argv))


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    status: int = args.handler(args)
    return status
