"""Reading a TOML document with errors that say where: file, key path, value, what is allowed.

Theory of operation
-------------------
A :class:`TomlNode` is one value of a parsed document together with the file it
came from and its key path (``destination_controls."example.com".tls``,
``routes."r.example"[0]``). Every accessor either returns a checked Python value or
raises :class:`~engine.core.errors.ConfigError` naming the file, the key path, the
offending value and what would have been accepted, so a user's mistake is one line,
never a traceback::

    root = TomlNode.parse(text, "engine.toml")
    dns = root.get("dns", {}).table(allowed=("resolvers", "timeout"))
    timeout = dns.get("timeout", 5.0).number(above=0)
    # engine.toml: dns.timeout: invalid value; expected a finite number greater than 0 (value -1)

The rules, whatever the accessor:

* TOML keeps booleans and integers apart, and so does the reader: ``true`` is no
  integer and ``1`` is no boolean;
* ``expected`` (where an accessor takes it) replaces the default wording of what is
  allowed, for a rule the caller states better (``"a port number 0..65535"``);
* an unknown key is named by its own path, and the error lists the allowed keys;
* :meth:`TomlNode.get` with a default hands back a node whose value is the default,
  at the path the key would have had, so a default goes through the same checks.

The engine's configuration (:mod:`engine.config`) reads its file with it; it sits in
the core so that anything above the core, the harness included, can read its own
TOML the same way (parsing text is no I/O; reading the file is the caller's).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from engine.core.errors import ConfigError

__all__ = ["TomlNode", "key_path"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_E = TypeVar("_E", bound=StrEnum)
_ABSENT = object()


def key_path(prefix: str, key: str | int) -> str:
    """Append ``key`` to a TOML key path, quoting it when it is not a bare key.

    Example: ``key_path("routes", "r.example") == 'routes."r.example"'``; an ``int``
    is a list index: ``key_path("dns.resolvers", 0) == "dns.resolvers[0]"``.
    """
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    part = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{prefix}.{part}" if prefix else part


@dataclass(frozen=True, slots=True)
class TomlNode:
    """One value of a TOML document, with where it came from.

    Attributes:
        value: the value as :mod:`tomllib` gives it (or a default, or a plain dict).
        file: the source name used in errors (a path, ``"<string>"`` ...).
        path: the TOML key path of the value (``""`` for the document itself).
    """

    value: Any
    file: str
    path: str = ""

    @classmethod
    def parse(cls, text: str, file: str) -> TomlNode:
        """The document ``text`` as a node.

        Raises:
            ConfigError: a TOML syntax error (the message has tomllib's line and column).
        """
        try:
            return cls(tomllib.loads(text), file)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"TOML syntax error: {exc}", file=file) from exc

    def bad(self, expected: str, allowed: Iterable[str] = ()) -> ConfigError:
        """The error for this value (to raise): ``invalid value; expected ...``.

        Args:
            expected: what would have been accepted, in words (``"a table"``).
            allowed: the accepted values when they are a closed set (carried on the
                error as data for tools; the words already name them).
        """
        return self.error(f"invalid value; expected {expected}", allowed)

    def error(self, reason: str, allowed: Iterable[str] = ()) -> ConfigError:
        """The error for this value (to raise), in the caller's words.

        For a rule :meth:`bad`'s ``expected ...`` does not put well: a value that
        contradicts another key, or a document that lacks what it needs.

        Args:
            reason: what is wrong, without the value (the error appends it).
            allowed: the accepted values when they are a closed set, as data.
        """
        return ConfigError(
            reason, file=self.file, key=self.path, value=self.value, allowed=tuple(allowed)
        )

    def child(self, key: str | int, value: Any) -> TomlNode:
        """The node for ``value`` found at ``key`` under this one."""
        return TomlNode(value, self.file, key_path(self.path, key))

    def __contains__(self, key: object) -> bool:
        return isinstance(self.value, Mapping) and key in self.value

    def get(self, key: str, default: Any = _ABSENT) -> TomlNode:
        """The entry ``key`` of this table, or ``default`` at that key's path.

        Raises:
            ConfigError: this is not a table, or the key is absent and no default given.
        """
        if not isinstance(self.value, Mapping):
            raise self.bad("a table")
        if key in self.value:
            return self.child(key, self.value[key])
        if default is _ABSENT:
            raise ConfigError("missing key", file=self.file, key=key_path(self.path, key))
        return self.child(key, default)

    def table(
        self, allowed: Sequence[str] | None = None, *, required: Iterable[str] = ()
    ) -> dict[str, TomlNode]:
        """The table's entries as nodes, their keys checked against ``allowed``.

        Args:
            allowed: the keys this table may have; None for any key (a map of names).
            required: keys the table must have (a missing one is named by its path).

        Raises:
            ConfigError: not a table, an unknown key (named by its own path), or a
                missing required key.
        """
        if not isinstance(self.value, Mapping):
            raise self.bad("a table")
        entries = {str(k): self.child(str(k), v) for k, v in self.value.items()}
        if allowed is not None:
            for key, node in entries.items():
                if key not in allowed:
                    raise ConfigError(
                        f"unknown key; allowed keys are {', '.join(allowed)}",
                        file=self.file,
                        key=node.path,
                        allowed=tuple(allowed),
                    )
        for key in required:
            if key not in entries:
                raise ConfigError("missing key", file=self.file, key=key_path(self.path, key))
        return entries

    def items(self, *, non_empty: bool = False, expected: str | None = None) -> list[TomlNode]:
        """The list's elements as nodes (a tuple counts, for a document built in Python).

        Raises:
            ConfigError: not a list (or an empty one when ``non_empty``).
        """
        if not isinstance(self.value, list | tuple) or (non_empty and not self.value):
            raise self.bad(expected or ("a non-empty list" if non_empty else "a list"))
        return [self.child(i, v) for i, v in enumerate(self.value)]

    def text(self, *, non_empty: bool = False, expected: str | None = None) -> str:
        """The value as a string.

        Raises:
            ConfigError: not a string (or an empty one when ``non_empty``).
        """
        if not isinstance(self.value, str) or (non_empty and not self.value):
            raise self.bad(expected or ("a non-empty string" if non_empty else "a string"))
        return self.value

    def boolean(self) -> bool:
        """The value as a boolean (``true`` or ``false``, nothing else).

        Raises:
            ConfigError: anything else.
        """
        if not isinstance(self.value, bool):
            raise self.bad("a boolean")
        return self.value

    def integer(self, low: int, high: int | None = None, *, expected: str | None = None) -> int:
        """The value as an integer, ``low`` or more (and ``high`` or less when given).

        Raises:
            ConfigError: not an integer, or out of range.
        """
        value = self.value
        in_range = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= low
            and (high is None or value <= high)
        )
        if not in_range:
            default = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"
            raise self.bad(expected or default)
        return int(value)

    def number(
        self,
        *,
        above: float | None = None,
        at_least: float | None = None,
        expected: str | None = None,
    ) -> float:
        """The value as a finite number (integer or float): above ``above``, at least ``at_least``.

        TOML has ``nan`` and ``inf``; no setting means anything by them (a timeout of
        ``inf`` never fires, ``nan`` compares false with everything), so they are refused.

        Raises:
            ConfigError: not a number, not finite, or out of range.
        """
        value = self.value
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        if ok and above is not None:
            ok = value > above
        if ok and at_least is not None:
            ok = value >= at_least
        if not ok:
            if above is not None:
                default = f"a finite number greater than {above:g}"
            elif at_least is not None:
                default = f"a finite number, {at_least:g} or more"
            else:
                default = "a finite number"
            raise self.bad(expected or default)
        return float(value)

    def choice(self, allowed: Sequence[str]) -> str:
        """The value as one of the strings ``allowed``.

        Raises:
            ConfigError: anything else (the allowed values are listed).
        """
        if not isinstance(self.value, str) or self.value not in allowed:
            raise self.bad(f"one of {', '.join(allowed)}", allowed)
        return self.value

    def member(self, kind: type[_E], *, spelling: Callable[[str], str] | None = None) -> _E:
        """The value as a member of the string enum ``kind``.

        Args:
            kind: the enum; its values are what is allowed.
            spelling: applied to the text before the lookup (say, ``_`` to ``-``).

        Raises:
            ConfigError: none of the enum's values (they are listed).
        """
        allowed = [m.value for m in kind]
        text = self.value
        if isinstance(text, str) and spelling is not None:
            text = spelling(text)
        try:
            return kind(text)
        except ValueError:
            raise self.bad(f"one of {', '.join(allowed)}", allowed) from None
