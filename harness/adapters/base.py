"""The port every engine under test plugs into: :class:`EngineUnderTest`.

Theory of operation
-------------------
The runner knows nothing about engines. It builds the world, then talks to an
adapter through this protocol: start it against the running world with the
scenario's ``[sender]`` configuration, hand it messages, move its clock, restart it,
and read back what it did (structured events and mail_logs lines). What an adapter
can do is declared, not assumed (STYLE habit 20): :attr:`EngineUnderTest.capabilities`
is compared with a scenario's ``requires`` and the scenario is skipped, with the
missing capabilities named, when they do not fit.

Adapters are found by name in :mod:`harness.adapters.registry` (``--engine NAME``),
as factories, so the runner makes one fresh adapter per scenario.

Two optional members, looked up with ``getattr`` so the real-MTA adapters need not
have them: ``plan(needs)``, called with everything the scenario needs before its world
starts (the ``sts-engine`` process takes a manual clock only for a scenario that moves
time, and ``now`` must say which before certificates are issued); and
``missing_why``, capability -> why the adapter lacks it, appended to skip reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.scenario.model import Capability
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.world import World

__all__ = [
    "AdapterError",
    "AdapterFactory",
    "DeliveryRecord",
    "EngineUnderTest",
    "EventRecord",
]


class AdapterError(HarnessError):
    """An adapter could not start, or was asked for something it cannot do."""


class EngineUnderTest(Protocol):
    """An engine the runner can drive (see the module docstring).

    Every coroutine is awaited in the runner's event loop; :meth:`stop` is always
    awaited, also after a failed :meth:`start`.
    """

    capabilities: frozenset[Capability]

    def now(self) -> float:
        """The engine's clock (POSIX seconds); the world issues certificates at it."""

    async def start(self, world: World, sender: Mapping[str, Any], workdir: Path) -> None:
        """Start against ``world`` with the ``[sender]`` configuration.

        Raises:
            AdapterError: the engine cannot start.
        """

    async def send(
        self, mail_from: str, rcpts: Sequence[str], data: bytes, *, final: bool = False
    ) -> Sequence[DeliveryRecord]:
        """Make one delivery attempt of one message; the outcome per recipient.

        Adapters with capability ``final`` also take ``final=True``: the attempt is the
        last before the message would bounce (RFC 8461 §5.1, APPLY-6).
        """

    async def advance(self, seconds: float) -> None:
        """Move the engine's clock forward (capability ``clock``)."""

    async def restart(self) -> None:
        """Stop and start the engine, keeping its policy cache (capability ``restart``)."""

    def events(self) -> Sequence[EventRecord]:
        """Every event since :meth:`start`, oldest first (grows; never reordered)."""

    async def stop(self) -> None:
        """Stop the engine and release what it holds."""


AdapterFactory = Callable[[], EngineUnderTest]
