"""The ``sts-harness`` subcommands: one module each, exposing ``register(subparsers)``.

``register`` adds the command's parser (with a help text that shows an example) and
sets ``handler=`` to a function taking the parsed ``argparse.Namespace`` and returning
the exit status. :func:`harness.cli.build_parser` discovers the modules.

Commands print through :func:`console`, a rich console that lets a closed pipe reach
:func:`engine.cli.run_quietly` as the ``BrokenPipeError`` it is (rich's own handling
exits with status 1 instead).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.console import Console

__all__ = ["console", "positive", "seed"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write: the reader has gone
        raise BrokenPipeError


def console(**kwargs: Any) -> Console:
    """A :class:`rich.console.Console` (same arguments) for a command's output."""
    return _Console(**kwargs)


def positive(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``kind(text)`` when it is a number above 0, else a one-line
    usage error naming the option ``what``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be more than 0, got {text!r}")
        return value

    return parse


def seed(text: str) -> int:
    """An argparse ``type=`` for ``--seed``: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--seed must be 0 or more, got {text!r}")
    return value
