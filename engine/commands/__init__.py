"""``sts-engine`` subcommands, one module per concern.

Strategy: :func:`engine.cli.main` builds the top-level parser and hands its
subparsers to ``register(subparsers)`` of every module in this package, found
with :mod:`pkgutil`, so adding ``engine/commands/send.py`` needs no edit
elsewhere. Commands live in groups (``policy lint``, ``txt lint``); several
modules may add commands to one group through :func:`command_group`. Each leaf
parser sets a ``handler`` default: a function ``(args) -> int`` that returns
the exit status (0 ok, 1 the input is invalid, 2 a usage or I/O problem).

A module without ``register`` is a command's helper, not a command:
``domain_check`` (what ``sts-engine check`` verifies) and ``destconfig_flow`` (the
``destconfig`` dialogue and the TOML it writes). The commands sit on top of the
engine: they may import every other package of it, and nothing of the engine
imports them (``pyproject.toml``, ``[tool.importlinter]``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["Handler", "UsageError", "command_group", "config_command", "register_all"]

Handler = Callable[[argparse.Namespace], int]

_GROUP_KEY = "_command_group"


class UsageError(Exception):
    """A user mistake outside the parsed grammar (missing file, bad quoting): exit status 2."""


def command_group(
    subparsers: Subparsers, name: str, *, help: str, epilog: str | None = None
) -> Subparsers:
    """The subparsers of group ``name``, created on first use.

    Args:
        subparsers: the top-level subparsers (as handed to ``register``).
        name: the group word, e.g. ``"policy"``.
        help: one line for the top-level ``--help``; used only when the group is new.
        epilog: examples for the group's ``--help``; used only when the group is new.

    Returns:
        The group's own subparsers, to add leaf commands to.
    """
    existing = subparsers.choices.get(name)
    if existing is not None:
        group: Subparsers = existing.get_default(_GROUP_KEY)
        return group
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_subparsers(title="commands", metavar="COMMAND")
    parser.set_defaults(**{_GROUP_KEY: group, "handler": None, "group_parser": parser})
    return group


def config_command(
    group: Subparsers, name: str, *, help: str, epilog: str
) -> argparse.ArgumentParser:
    """A leaf command that works on a configuration file (``--config FILE``, required).

    Args:
        group: the group's subparsers (from :func:`command_group`).
        name: the command word.
        help: one line, also used as the description.
        epilog: examples for ``--help``.
    """
    parser = group.add_parser(
        name,
        help=help,
        description=help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="FILE")
    return parser


def register_all(subparsers: Subparsers) -> None:
    """Import every module of this package and call its ``register(subparsers)``."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
