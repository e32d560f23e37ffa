"""The ``sts-harness`` subcommands: one module each, exposing ``register(subparsers)``.

``register`` adds the command's parser (with a help text that shows an example) and
sets ``handler=`` to a function taking the parsed ``argparse.Namespace`` and returning
the exit status. :func:`harness.cli.build_parser` discovers the modules.
"""

from __future__ import annotations

__all__: list[str] = []
