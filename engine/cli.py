"""``sts-engine``: the engine's command line.

A thin dispatcher: the commands themselves live in :mod:`engine.commands`,
one module per concern, each exposing ``register(subparsers)``. Tests call
:func:`main` with ``argv``; the console script calls it with none.
"""

from __future__ import annotations

import argparse
import sys

from engine.commands import UsageError, register_all
from engine.eventloop import LoopChoiceError

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  sts-engine policy lint fixtures/policies/valid/enforce-basic.txt
  sts-engine txt lint '"v=STSv1; " "id=20240101"'
"""


def build_parser() -> argparse.ArgumentParser:
    """The full ``sts-engine`` parser, with every registered command."""
    parser = argparse.ArgumentParser(
        prog="sts-engine",
        description="MTA-STS / DANE / TLS-RPT sending engine tools.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="command groups", metavar="GROUP")
    register_all(subparsers)
    parser.set_defaults(handler=None, group_parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``sts-engine``.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 success, 1 invalid input, 2 usage or I/O error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors and --help this way
        return exc.code if isinstance(exc.code, int) else 2
    if args.handler is None:
        args.group_parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.handler(args)
    except (UsageError, LoopChoiceError) as exc:
        sys.stderr.write(f"sts-engine: error: {exc}\n")
        return 2
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
