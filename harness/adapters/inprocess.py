"""The in-process adapter: our engine, in the runner's event loop, on a manual clock.

Theory of operation
-------------------
The engine runs as a library: one :class:`~engine.delivery.agent.Engine` per scenario (and
a new one after ``restart_engine``), wired to the running world through its
configuration only, as an operator would wire it (the engine has no test hooks): the
world's resolver, its trusted root, and
a :class:`~engine.io.dialer.Dialer` in loopback-only mode whose endpoint map is read
live from the world (a mutation that adds an MX adds a server, and the engine must
reach it). The clock is a :class:`~engine.core.clock.ManualClock` the ``advance``
step moves; the world issues certificates at it, so "expired" means expired on the
engine's clock.

The wiring (configuration, endpoint map, trust store, event sink) is shared with the
gateway adapter: :mod:`harness.adapters.wiring`. Timeouts are short so fault
scenarios stay fast: every SMTP stage 2 s, the policy fetch 1 s and DNS 0.5 s, unless
the scenario's ``[sender]`` says otherwise. The policy cache is an SQLite file in the
scenario's work directory, so it survives ``restart_engine`` (CACHE-12). Events go to
a sink that stamps each with the world's clock and renders its mail_logs line at debug
level, so the runner can interleave them with the world's exchanges.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.core.cache import PolicyStore
from engine.core.clock import Clock, ManualClock
from engine.core.events import EventSink
from engine.delivery.agent import Engine
from engine.delivery.mtasts import PolicyShare
from engine.io.dialer import Dialer
from engine.io.smtp import SmtpTimeouts
from engine.io.store import SqlitePolicyStore
from harness.adapters.base import AdapterError
from harness.adapters.wiring import (
    SMTP_TIMEOUT,
    LiveEndpoints,
    StampingSink,
    config_for,
    world_roots,
)
from harness.scenario.model import Capability
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.world import World

__all__ = ["InProcessEngine", "engine_for"]


def engine_for(
    world: World,
    config: EngineConfig,
    *,
    clock: Clock,
    sink: EventSink,
    store: PolicyStore,
    seed: int = 0,
    share: PolicyShare | None = None,
) -> Engine:
    """Our engine aimed at a running ``world``, wired as an operator would wire it.

    The world's roots are its trust store, a loopback-only dialer reads the world's
    endpoint map at each connection (a mutation that adds an MX adds a server the
    engine must reach), SMTP stages time out after
    :data:`~harness.adapters.wiring.SMTP_TIMEOUT`; ``config`` names the world's resolver
    (:func:`~harness.adapters.wiring.config_for` does for a scenario's ``[sender]``).
    ``share`` is the policy cache other gateways share (docs/cluster.md), as
    :class:`~engine.delivery.agent.Engine` takes it. The adapters and the integration
    and cluster tests build their engines here.
    """
    return Engine(
        config,
        clock=clock,
        sink=sink,
        store=store,
        dialer=Dialer(LiveEndpoints(world), loopback_only=True),
        roots=world_roots(world),
        smtp_timeouts=SmtpTimeouts.uniform(SMTP_TIMEOUT),
        rng=random.Random(seed),
        share=share,
    )


class InProcessEngine:
    """:class:`~harness.adapters.base.EngineUnderTest` for our engine, in process.

    Args:
        start: the manual clock's start (POSIX seconds; default 2026-01-01T00:00Z).
    """

    # No queue and no TLS reporter: reports and DSNs need the ``gateway`` adapter.
    capabilities = frozenset(Capability) - {Capability.TLSRPT}

    def __init__(self, start: float | None = None) -> None:
        self.clock = ManualClock() if start is None else ManualClock(start)
        self._world: World | None = None
        self._config: EngineConfig | None = None
        self._sink: StampingSink | None = None
        self._store: SqlitePolicyStore | None = None
        self._engine: Engine | None = None
        self._store_path: Path | None = None

    def now(self) -> float:
        """The manual clock."""
        return self.clock.now()

    async def start(self, world: World, sender: Mapping[str, Any], workdir: Path) -> None:
        """Build the engine against ``world``."""
        try:
            self._config = config_for(sender, world)
        except Exception as exc:
            raise AdapterError(f"cannot configure the engine: {exc}") from exc
        self._world = world
        self._sink = StampingSink(world)
        self._store_path = workdir / "policy-cache.sqlite"
        self._open()

    def _open(self) -> None:
        assert self._world is not None and self._config is not None and self._sink is not None
        assert self._store_path is not None
        self._store = SqlitePolicyStore(self._store_path, durable=False)
        self._engine = engine_for(
            self._world, self._config, clock=self.clock, sink=self._sink, store=self._store
        )

    async def send(
        self, mail_from: str, rcpts: Sequence[str], data: bytes, *, final: bool = False
    ) -> Sequence[DeliveryRecord]:
        """One delivery attempt (``final``: the last before a bounce, APPLY-6)."""
        if self._engine is None:
            raise AdapterError("the engine is not running")
        report = await self._engine.deliver(mail_from, list(rcpts), data, final=final)
        return [
            DeliveryRecord(
                report.mid, r.rcpt, r.status, r.mx, r.tls, r.verified, r.reason, r.result_type
            )
            for r in report.recipients
        ]

    async def advance(self, seconds: float) -> None:
        """Move the manual clock, then run the engine's due background work.

        A running gateway refreshes cached policies while time passes (RFC 8461
        §10.2, CACHE-7/8); the in-process engine does it when the clock moves.
        """
        self.clock.advance(seconds)
        if self._engine is not None:
            await self._engine.refresh_policies()

    async def restart(self) -> None:
        """A new engine on the same policy cache file, clock and event list."""
        await self._close()
        self._open()

    def events(self) -> Sequence[EventRecord]:
        """Every event so far."""
        return self._sink.events if self._sink else []

    async def _close(self) -> None:
        engine, store, self._engine, self._store = self._engine, self._store, None, None
        try:
            if engine is not None:
                await engine.aclose()
        finally:
            if store is not None:
                store.close()

    async def stop(self) -> None:
        """Close the engine and its cache."""
        await self._close()
