"""The harness package's one exception root.

Tree::

    HarnessError         anything a harness user can get wrong
    ├── SpecError        a world, scenario or requirements file is wrong: names the
    │                    file, the key path (``world.toml: domains."example.com".polcy``)
    │                    and the offending value, and says what is allowed; also an
    │                    :class:`~engine.core.errors.ConfigError`, the error of the one
    │                    TOML reader both programs use (:mod:`engine.core.tomlnode`)
    └── WorldError       a running world was asked for something it cannot do
                         (an unknown host, no loopback address left)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from engine.core.errors import ConfigError

__all__ = ["HarnessError", "SpecError", "WorldError", "spec_errors"]


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class SpecError(HarnessError, ConfigError):
    """A spec (TOML or dict) holds a key or value the harness refuses.

    The harness reads its files with :class:`~engine.core.tomlnode.TomlNode`, as the
    engine reads its configuration, so the error has :class:`ConfigError`'s shape:
    ``file: key.path: reason (value ...)``.

    Args:
        reason: what is wrong (without the value: the message appends it).
        file: where the spec came from (a path, or a name such as ``"<world>"``).
        key: the key path, e.g. ``domains."example.com".dnssec``.
        value: the offending value.
        allowed: the values or keys that would have been accepted, if a closed set.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        key: str | None = None,
        value: object = None,
        allowed: Iterable[str] = (),
    ) -> None:
        ConfigError.__init__(
            self, reason, file=file, key=key or None, value=value, allowed=tuple(allowed)
        )

    @classmethod
    def of(cls, exc: ConfigError) -> SpecError:
        """``exc`` (a reader's error) as the harness's."""
        if isinstance(exc, SpecError):
            return exc
        return cls(exc.reason, file=exc.file, key=exc.key, value=exc.value, allowed=exc.allowed)


@contextlib.contextmanager
def spec_errors() -> Iterator[None]:
    """Hand a reader's :class:`ConfigError` on as a :class:`SpecError` (at a reader's edge)."""
    try:
        yield
    except ConfigError as exc:
        raise SpecError.of(exc) from None


class WorldError(HarnessError):
    """A running world cannot do what it was asked (unknown name, addresses exhausted)."""
