"""The harness package's one exception root.

Tree::

    HarnessError         anything a harness user can get wrong
    ├── SpecError        a world (or scenario) spec value is wrong: names the file,
    │                    the key path (``world.toml: domains."example.com".polcy``)
    │                    and the offending value, and lists the allowed values
    └── WorldError       a running world was asked for something it cannot do
                         (an unknown host, no loopback address left)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HarnessError", "SpecError", "WorldError"]


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class SpecError(HarnessError):
    """A spec (TOML or dict) holds a key or value the harness refuses.

    Args:
        file: where the spec came from (a path, or a name such as ``"<world>"``).
        key: the dotted key path, e.g. ``domains."example.com".dnssec``.
        value: the offending value (quoted with ``!r`` in the message).
        reason: what is wrong with it.
        allowed: the values or keys that would have been accepted, if a closed set.

    Attributes:
        file: as given.
        key: as given.
        value: as given.
        reason: as given.
        allowed: as given, sorted.
    """

    def __init__(
        self,
        file: str,
        key: str,
        value: object,
        reason: str,
        allowed: Iterable[str] = (),
    ) -> None:
        self.file = file
        self.key = key
        self.value = value
        self.reason = reason
        self.allowed = tuple(sorted(allowed))
        where = f"{file}: {key}" if key else file
        message = f"{where}: {reason}"
        if self.allowed:
            message += f" (allowed: {', '.join(self.allowed)})"
        super().__init__(message)


class WorldError(HarnessError):
    """A running world cannot do what it was asked (unknown name, addresses exhausted)."""
