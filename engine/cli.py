"""``sts-engine``: the engine's command line.

A thin dispatcher: the commands themselves live in :mod:`engine.commands`,
one module per concern, each exposing ``register(subparsers)``. Tests call
:func:`main` with ``argv``; the console script calls it with none.

Every command runs inside :func:`run_quietly`: a reader that closes the pipe early
(``sts-engine destconfig list | head -1``) ends the command with status 141 and no
output, Ctrl-C (SIGINT) with status 130 and no traceback, as the shell's own tools do.
``sts-harness`` uses the same guard.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, cast

from engine.commands import UsageError, register_all
from engine.eventloop import LoopChoiceError

if TYPE_CHECKING:
    from engine.commands import Subparsers

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_PIPE_CLOSED",
    "OneLineErrorParser",
    "build_parser",
    "main",
    "run_quietly",
]

#: 128 + the signal's number: what a shell reports for a tool SIGINT or SIGPIPE ended.
EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 130, 141

_EPILOG = """\
examples:
  sts-engine policy lint fixtures/policies/valid/enforce-basic.txt
  sts-engine txt lint '"v=STSv1; " "id=20240101"'
"""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (and exit status 2).

    argparse prints the whole usage block before the error; a mistake in one option
    then reads as five lines about every other one. The line names the command, the
    problem and where the usage is. Subcommand parsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (PROG --help shows the usage)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help shows the usage)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``sts-engine`` parser, with every registered command."""
    parser = OneLineErrorParser(
        prog="sts-engine",
        description="MTA-STS / DANE / TLS-RPT sending engine tools.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="command groups", metavar="GROUP")
    register_all(cast("Subparsers", subparsers))  # its parsers are OneLineErrorParsers
    parser.set_defaults(handler=None, group_parser=parser)
    return parser


def run_quietly(body: Callable[[], int]) -> int:
    """Run a command's ``body`` so that a closed stdout and SIGINT end it quietly.

    Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises
    ``BrokenPipeError``, at the write or at the final flush. Either way the command
    stops, prints nothing (there is nobody to read it) and points the standard streams
    at ``/dev/null`` so the interpreter's own flush at exit cannot complain.

    Returns:
        The body's status; :data:`EXIT_PIPE_CLOSED` (141) when stdout was closed,
        :data:`EXIT_INTERRUPTED` (130) on KeyboardInterrupt.
    """
    try:
        status = body()
        _flush(sys.stdout)  # surface a closed pipe here rather than at interpreter exit
        return status
    except BrokenPipeError:
        _to_devnull()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        _after_interrupt()
        try:
            _flush(sys.stdout)  # what was printed before Ctrl-C is still the user's
        except (BrokenPipeError, ValueError):
            _to_devnull()
        return EXIT_INTERRUPTED


def _after_interrupt() -> None:
    """Keep the interrupted work's remains from talking while the process ends.

    Ctrl-C can land anywhere, even inside the constructor of an event loop: the half-made
    loop then complains when it is collected, and a coroutine that never started warns
    it was never awaited. Neither says anything about the command; both would print a
    traceback after it stopped. Only what happens from here to exit is silenced.
    """
    sys.unraisablehook = lambda _unraisable: None
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", category=ResourceWarning)


def _flush(stream: object) -> None:
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()


def _to_devnull() -> None:
    """Point the process's stdout and stderr at /dev/null, if they are the real ones."""
    for current, real in ((sys.stdout, sys.__stdout__), (sys.stderr, sys.__stderr__)):
        if real is None or current is not real:
            continue  # a test's capture, or no stream at all: nothing to protect
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, real.fileno())
            os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run ``sts-engine``.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 success, 1 invalid input, 2 usage or I/O error, 130
        interrupted, 141 stdout closed by its reader.
    """
    return run_quietly(lambda: _dispatch(argv))


def _dispatch(argv: list[str] | None) -> int:
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
