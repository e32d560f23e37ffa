"""Time as a value passed in.

The core never reads the clock: functions take ``now`` (POSIX seconds, UTC,
as ``float``). Adapters and the gateway hold a :class:`Clock`; the harness
hands the engine a :class:`ManualClock` it can advance.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Clock", "ManualClock"]


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> float:
        """POSIX seconds (UTC)."""


class ManualClock:
    """A clock that moves only when told to (tests and scenarios)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)

    def now(self) -> float:
        """The current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards by {seconds!r} s")
        self._now += seconds

    def set(self, when: float) -> None:
        """Jump to ``when`` (must not be in the past)."""
        if when < self._now:
            raise ValueError(f"cannot move the clock back to {when!r} from {self._now!r}")
        self._now = float(when)
