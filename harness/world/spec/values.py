"""Reading the world spec's single values: names, addresses, string lists, enums.

The spec is read with :class:`~engine.core.tomlnode.TomlNode`, the reader of the
engine's configuration: every value comes with its file and key path, and a wrong one
raises :class:`~engine.core.errors.ConfigError` naming them, the value and what is
allowed (the harness's readers hand it on as :class:`~harness.errors.SpecError`).
The readers here add what the world's values need on top of it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from engine.core.tomlnode import TomlNode
from harness.world.addresses import is_loopback_v4
from harness.world.dns.records import ZoneError, canonical_name

__all__ = ["address_of", "member_of", "name_of", "strings_of"]

_E = TypeVar("_E", bound=StrEnum)


def name_of(node: TomlNode) -> str:
    """A canonical DNS name from ``node``.

    Raises:
        ConfigError: not a string, or not a DNS name (the reason says why).
    """
    try:
        return canonical_name(node.text())
    except ZoneError as exc:
        raise node.error(str(exc)) from None


def address_of(node: TomlNode) -> str:
    """A 127.0.0.0/8 address from ``node``; anything else is refused.

    Raises:
        ConfigError: not a string, or not an IPv4 loopback address.
    """
    text = node.text()
    if not is_loopback_v4(text):
        raise node.bad("an IPv4 loopback address (the world uses 127.0.0.0/8)")
    return text


def strings_of(node: TomlNode) -> tuple[str, ...]:
    """A string, or a list of strings, as a tuple.

    Raises:
        ConfigError: anything else (the offending element is named).
    """
    if isinstance(node.value, str):
        return (node.value,)
    return tuple(n.text() for n in node.items(expected="a string or a list of strings"))


def member_of(node: TomlNode, kind: type[_E]) -> _E:
    """A member of the string enum ``kind``, in any letter case (``Insecure`` too).

    Raises:
        ConfigError: none of its values (they are listed).
    """
    return node.member(kind, spelling=str.lower)
