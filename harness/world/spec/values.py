"""Reading a spec dict with errors that say where: file, TOML key path, value.

A :class:`Node` is a value of a loaded TOML (or plain dict) document together with
the file it came from and its key path. Every accessor either returns a checked
Python value or raises :class:`~harness.errors.SpecError` naming
``file: key.path``, the value and, for closed sets, the allowed values. The world
spec loader uses it; the scenario loader can reuse it for its own tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from harness.errors import SpecError
from harness.world.addresses import is_loopback_v4
from harness.world.dns.records import ZoneError, canonical_name

__all__ = ["Node", "address_of", "key_path", "name_of"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_E = TypeVar("_E", bound=StrEnum)


def key_path(prefix: str, key: str | int) -> str:
    """Append ``key`` to a TOML key path, quoting it when it is not a bare key.

    Example: ``key_path('domains', 'example.com') == 'domains."example.com"'``;
    an ``int`` is a list index: ``key_path('mx', 0) == 'mx[0]'``.
    """
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    part = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{prefix}.{part}" if prefix else part


@dataclass(frozen=True, slots=True)
class Node:
    """One value of a spec, with its origin.

    Attributes:
        value: the raw value (from ``tomllib`` or a dict).
        file: the source name used in errors (a path, ``"<world>"`` ...).
        path: the TOML key path of the value (``""`` for the document root).
    """

    value: Any
    file: str
    path: str = ""

    def error(self, reason: str, allowed: Iterable[str] = ()) -> SpecError:
        """A :class:`SpecError` about this value (to raise)."""
        return SpecError(self.file, self.path, self.value, reason, allowed)

    def child(self, key: str | int, value: Any) -> Node:
        """The node for ``value`` found at ``key`` under this one."""
        return Node(value, self.file, key_path(self.path, key))

    def mapping(self) -> dict[str, Node]:
        """The table's entries as nodes, keys free.

        Raises:
            SpecError: the value is not a table.
        """
        if not isinstance(self.value, Mapping):
            raise self.error(f"expected a table, got {self.value!r}")
        return {str(k): self.child(str(k), v) for k, v in self.value.items()}

    def table(self, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Node]:
        """The table's entries as nodes, keys checked against ``allowed``.

        Raises:
            SpecError: not a table, an unknown key (named by its path), or a missing key.
        """
        allowed = tuple(allowed)
        entries = self.mapping()
        for key, node in entries.items():
            if key not in allowed:
                raise SpecError(self.file, node.path, key, f"unknown key {key!r}", allowed)
        for key in required:
            if key not in entries:
                raise SpecError(self.file, key_path(self.path, key), None, "missing key")
        return entries

    def items(self) -> list[Node]:
        """The list's elements as nodes.

        Raises:
            SpecError: the value is not a list.
        """
        if not isinstance(self.value, list | tuple):
            raise self.error(f"expected a list, got {self.value!r}")
        return [self.child(i, v) for i, v in enumerate(self.value)]

    def text(self) -> str:
        """The value as a string.

        Raises:
            SpecError: the value is not a string.
        """
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {self.value!r}")
        return self.value

    def integer(self, low: int, high: int) -> int:
        """The value as an integer in ``low..high``.

        Raises:
            SpecError: not an integer, or out of range.
        """
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error(f"expected an integer, got {self.value!r}")
        if not low <= self.value <= high:
            raise self.error(f"{self.value!r} is not in {low}..{high}")
        return self.value

    def number(self, low: float) -> float:
        """The value as a number greater than ``low``.

        Raises:
            SpecError: not a number, or not above ``low``.
        """
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.error(f"expected a number, got {self.value!r}")
        if self.value <= low:
            raise self.error(f"{self.value!r} must be greater than {low}")
        return float(self.value)

    def boolean(self) -> bool:
        """The value as a boolean.

        Raises:
            SpecError: the value is not ``true`` or ``false``.
        """
        if not isinstance(self.value, bool):
            raise self.error(f"expected true or false, got {self.value!r}")
        return self.value

    def choice(self, enum: type[_E]) -> _E:
        """The value as a member of the string enum ``enum``.

        Raises:
            SpecError: the value is none of the enum's values (they are listed).
        """
        allowed = [m.value for m in enum]
        if not isinstance(self.value, str) or self.value.lower() not in allowed:
            raise self.error(f"{self.value!r} is not one of the allowed values", allowed)
        return enum(self.value.lower())

    def strings(self) -> tuple[str, ...]:
        """A string, or a list of strings, as a tuple.

        Raises:
            SpecError: anything else (the offending element is named).
        """
        if isinstance(self.value, str):
            return (self.value,)
        return tuple(node.text() for node in self.items())


def name_of(node: Node) -> str:
    """A canonical DNS name from ``node`` (a SpecError when it is not one)."""
    try:
        return canonical_name(node.text())
    except ZoneError as exc:
        raise node.error(str(exc)) from None


def address_of(node: Node) -> str:
    """A 127.0.0.0/8 address from ``node``; anything else is refused."""
    text = node.text()
    if not is_loopback_v4(text):
        raise node.error(f"{text!r} is not an IPv4 loopback address; the world uses 127.0.0.0/8")
    return text
