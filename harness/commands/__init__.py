"""The ``sts-harness`` subcommands: one module each, exposing ``register(subparsers)``.

``register`` adds the command's parser (with a help text that shows an example) and
sets ``handler=`` to a function taking the parsed ``argparse.Namespace`` and returning
the exit status. :func:`harness.cli.build_parser` discovers the modules.

Commands print through :func:`console`, a rich console that lets a closed pipe reach
:func:`engine.cli.run_quietly` as the ``BrokenPipeError`` it is (rich's own handling
exits with status 1 instead).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

__all__ = ["console"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write: the reader has gone
        raise BrokenPipeError


def console(**kwargs: Any) -> Console:
    """A :class:`rich.console.Console` (same arguments) for a command's output."""
    return _Console(**kwargs)
