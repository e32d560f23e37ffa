"""The gateway: listener, queue, scheduler, policy refresh and TLS reporting in one loop.

Theory of operation
-------------------
:class:`Gateway` is an async context manager that owns, in one event loop:

* the durable :class:`~engine.gateway.queue.Queue` (``[queue] path``), whose leases
  are all recovered at start-up: nothing from before a crash is alive;
* the persistent policy cache (:func:`policy_cache_path`, beside the queue);
* the :class:`~engine.delivery.agent.Engine`, created with ``log_outcomes=False``: only
  the gateway knows the queue's verdict (a deferral may be the bounce at
  expiry), so the scheduler writes the ``Delayed:``/``Bounced:``/``Message
  finished`` lines; ``tls.session`` events also go to the TLS reporter;
* the :class:`~engine.gateway.scheduler.Scheduler`, the :class:`~engine.gateway.listener.Listener`
  (optional) and the :class:`~engine.tlsrpt.reporter.TlsReporter`.

Time: ``serve`` runs :meth:`Gateway.serve`, which sleeps until the next due time
or until :attr:`Gateway.wakeup` is set by a new message, a reload request or a
stop. Rounds never overlap: :meth:`Gateway.run_once`, :meth:`Gateway.run_due`
(rounds until nothing is due now: what a message's arrival sets off, DSNs and
report mail included) and :meth:`Gateway.advance` (a manual clock walked through
every due time, one round at each) hold one round lock. The serve loop, the
harness's in-process gateway and the control channel (:mod:`engine.gateway.control`) all
go through them, so there is one loop. A configuration reload (SIGHUP,
``sts-engine commit``) is applied between rounds: a new Engine is built and the
old one closed after the round in progress ends, so no delivery is cut and the
queue stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.config import EngineConfig, ListenerConfig, load_config
from engine.core.clock import Clock
from engine.core.errors import ConfigError
from engine.core.events import EventSink, LogEvent
from engine.delivery.agent import DeliveryReport, Engine, SystemClock
from engine.delivery.attempt import RecipientResult, describe_fault
from engine.gateway.cluster import Cluster, open_cluster
from engine.gateway.listener import Listener, ListenerError
from engine.gateway.queue import Queue, QueueCorrupt
from engine.gateway.scheduler import RoundStats, Scheduler
from engine.io.dialer import Dialer
from engine.io.smtp import SmtpTimeouts
from engine.io.store import SqlitePolicyStore
from engine.tlsrpt.reporter import ReportNetwork, ReportSettings, TlsReporter

__all__ = ["Gateway", "GatewaySettings", "SettableClock", "policy_cache_path"]

_MAX_SLEEP = 60.0
_MAX_ROUNDS = 10_000  # per walk: a guard against a gateway that stays due forever
_SAME_TIME_ROUNDS = 4  # rounds at one time before a walk stops (something due stays leased)
_ATTEMPTS_KEPT = 10_000  # messages whose last attempt per recipient is remembered
_PURGE_BATCH = 1000  # finished messages deleted per round at most
_RECOVER = "stop here and recover it: see 'sts-engine queue --help' and docs/hardening.md"


@runtime_checkable
class SettableClock(Protocol):
    """A clock :meth:`Gateway.advance` can move (the harness's manual clock)."""

    def now(self) -> float:
        """POSIX seconds (UTC)."""

    def set(self, when: float) -> None:
        """Jump to ``when`` (never back)."""


def policy_cache_path(config: EngineConfig) -> Path:
    """The policy cache file: ``policy-cache.sqlite`` beside the queue database."""
    return Path(config.queue.path).with_name("policy-cache.sqlite")


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Gateway settings that ``[listener]``/``[queue]`` do not carry, and overrides.

    Attributes:
        hostname: our name (banner, EHLO, DSN ``Reporting-MTA``).
        relay_networks: client networks that may relay (None: ``[listener]``'s).
        max_message_size: bytes; larger messages get ``552 5.3.4`` (None: ``[listener]``'s).
        tls_cert: PEM certificate chain to offer STARTTLS with, with ``tls_key``
            (None: ``[listener]``'s).
        tls_key: its PEM private key.
        listen: run the injection listener.
        lease_seconds: claim lease; a crashed round's recipients return after it.
        claim_limit: the most recipients per round.
        keep_done: seconds a finished message stays in the queue (``queue show``,
            ``status --mid``) before a round purges it.
        report: TLS reporting settings, or None to switch reporting off.
    """

    hostname: str = "sts-engine.localdomain"
    relay_networks: tuple[str, ...] | None = None
    max_message_size: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    listen: bool = True
    lease_seconds: float = 600.0
    claim_limit: int = 1000
    keep_done: float = 7 * 86400.0
    report: ReportSettings | None = field(default_factory=ReportSettings)


class _EngineSink:
    """The engine's sink: every event goes on; two are also data for the gateway.

    ``tls.session`` goes to the TLS reporter too. ``delivery.response``, which the
    session emits the moment a message's end-of-data reply accepted it, commits that
    delivery in the queue at once (:meth:`Scheduler.accepted`), before the connection
    carries its next message: a crash then repeats at most the message in flight.
    """

    def __init__(self, outer: EventSink) -> None:
        self.outer = outer
        self.reporter: TlsReporter | None = None
        self.on_accepted: Callable[[int, list[int], str | None], None] | None = None

    def emit(self, event: LogEvent) -> None:
        if event.code == "tls.session" and self.reporter is not None:
            self.reporter.emit(event)
        if event.code == "delivery.response" and self.on_accepted is not None:
            f = event.fields
            rids = f.get("rids")
            if isinstance(rids, list | tuple):
                response = f.get("response")
                self.on_accepted(
                    int(str(f["mid"])),
                    [int(r) for r in rids],
                    None if response is None else str(response),
                )
        self.outer.emit(event)


def _network(engine: Engine) -> ReportNetwork:
    """The network the TLS reporter looks up and posts through: the engine's."""
    return ReportNetwork(engine.resolver, engine.services.dialer, engine.services.roots)


class Gateway:
    """The sending gateway (async context manager).

    Args:
        config: the engine configuration (``config.source`` is re-read on reload).
        clock: the engine clock (default: the wall clock).
        sink: where every event goes.
        settings: see :class:`GatewaySettings`.
        dialer: where connections go (the harness passes its endpoint map).
        roots: trusted roots (DER); default from ``[tls] ca_file``.
        smtp_timeouts: per-stage SMTP timeouts.
        rng: randomness (MX shuffling, report jitter).
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Clock | None = None,
        sink: EventSink,
        settings: GatewaySettings | None = None,
        dialer: Dialer | None = None,
        roots: list[bytes] | None = None,
        smtp_timeouts: SmtpTimeouts | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.sink = sink
        self.settings = settings or GatewaySettings()
        self._dialer, self._roots, self._timeouts = dialer, roots, smtp_timeouts
        self.rng = rng or random.Random()
        self.wakeup = asyncio.Event()
        self._reload_requested = False
        self._round_lock = asyncio.Lock()
        #: MID -> RID -> that recipient's last attempt (MX, TLS, verification), for the
        #: most recent messages attempted; the queue keeps only the verdict.
        self.attempts: dict[int, dict[int, RecipientResult]] = {}
        self.queue = Queue(config.queue.path)
        self.store = SqlitePolicyStore(policy_cache_path(config))
        #: What this gateway shares with others through Redis ([cluster], docs/cluster.md).
        self.cluster: Cluster | None = open_cluster(
            config, clock=self.clock, sink=sink, hostname=self.settings.hostname
        )
        self._engine_sink = _EngineSink(sink)
        self.engine = self._new_engine(config)
        self.reporter: TlsReporter | None = None
        if self.settings.report is not None:
            self.reporter = TlsReporter(
                Path(config.queue.path).with_name("tlsrpt-state.json"),
                settings=self.settings.report,
                hostname=self.settings.hostname,
                store=self.store,
                clock=self.clock,
                sink=sink,
                rng=self.rng,
                enqueue=self.enqueue,
                network=_network(self.engine),
                shared=self.cluster.reports if self.cluster is not None else None,
            )
            self._engine_sink.reporter = self.reporter
        self.scheduler = Scheduler(
            self.queue,
            self.engine,
            clock=self.clock,
            sink=sink,
            hostname=self.settings.hostname,
            lease_seconds=self.settings.lease_seconds,
            claim_limit=self.settings.claim_limit,
            on_enqueued=self.notify,
        )
        self._engine_sink.on_accepted = self.scheduler.accepted
        self.listener: Listener | None = None
        #: Round steps failing now: step -> the one line logged for it (logged once).
        self._failing: dict[str, str] = {}

    def _new_engine(self, config: EngineConfig) -> Engine:
        engine = Engine(
            config,
            clock=self.clock,
            sink=self._engine_sink,
            store=self.store,
            dialer=self._dialer,
            roots=self._roots,
            smtp_timeouts=self._timeouts,
            rng=self.rng,
            local_hostname=self.settings.hostname,
            # The scheduler writes the queue's Delayed:/Bounced:/finished lines itself.
            log_outcomes=False,
            # docs/gateway-behaviour.md §5: DCIDs are persistent counters (the queue's).
            dcid_source=self.queue.next_dcid,
            on_report=self._remember_attempt,
            share=self.cluster.policies if self.cluster is not None else None,
        )
        return engine

    def _remember_attempt(self, report: DeliveryReport) -> None:
        # A message is attempted per destination domain: merge its reports by RID.
        tried = self.attempts.pop(report.mid, {})
        tried.update((r.rid, r) for r in report.recipients)
        self.attempts[report.mid] = tried  # re-inserted: the dict is oldest first
        if len(self.attempts) > _ATTEMPTS_KEPT:
            del self.attempts[next(iter(self.attempts))]

    async def __aenter__(self) -> Gateway:
        # A damaged queue is refused before the listener can promise anything (250).
        try:
            damage = self.queue.check(invariants=False)  # SQLite's quick_check
            if damage:
                raise QueueCorrupt(
                    self.queue.path, f"is damaged (quick_check: {damage[0]})", _RECOVER
                )
        except BaseException:
            self.store.close()
            self.queue.close()
            raise
        # Start-up: no claimer from before a restart is alive (at-least-once delivery).
        recovered = self.queue.recover(self.clock.now())
        if recovered:
            self._emit("queue.recovered", count=recovered)
        if self.settings.listen:
            self.listener = Listener(
                self.queue,
                clock=self.clock,
                sink=self.sink,
                config=self.listener_config(self.config),
                hostname=self.settings.hostname,
                on_queued=self.notify,
            )
            await self.listener.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.listener is not None:
            await self.listener.aclose()
        await self.engine.aclose()
        if self.reporter is not None:
            await self.reporter.aclose()
        if self.cluster is not None:
            await self.cluster.aclose()
        self.store.close()
        self.queue.close()

    def listener_config(self, config: EngineConfig) -> ListenerConfig:
        """``config``'s ``[listener]`` with the settings' overrides (``serve``'s flags)."""
        s, lc = self.settings, config.listener
        return replace(
            lc,
            relay_networks=lc.relay_networks if s.relay_networks is None else s.relay_networks,
            max_message_size=lc.max_message_size
            if s.max_message_size is None
            else s.max_message_size,
            tls_cert=lc.tls_cert if s.tls_cert is None else s.tls_cert,
            tls_key=lc.tls_key if s.tls_cert is None else s.tls_key,
        )

    def _emit(self, code: str, level: str = "info", **fields: object) -> None:
        self.sink.emit(LogEvent(code, fields, level, self.clock.now()))

    def notify(self, mid: int | None = None) -> None:
        """Wake the serve loop (a new message, a reload request, a stop)."""
        self.wakeup.set()

    def request_reload(self) -> None:
        """Ask for the configuration to be re-read before the next round (SIGHUP)."""
        self._reload_requested = True
        self.notify()

    def enqueue(self, mail_from: str, rcpts: list[str], data: bytes) -> int:
        """Put a locally generated message (a DSN, a report) into the queue; returns its MID."""
        mid, _ = self.queue.enqueue(mail_from, rcpts, data, self.clock.now())
        self._emit("message.queued", mid=mid)
        self.notify(mid)
        return mid

    async def reload(self) -> tuple[bool, str]:
        """Re-read the configuration now, between rounds (``sts-engine commit``).

        Returns:
            (whether every change took effect, one sentence saying what happened).
        """
        async with self._round_lock:
            return await self._reload()

    async def _reload(self) -> tuple[bool, str]:
        self._reload_requested = False
        try:
            config = load_config(self.config.source)
            kept = []
            if self.listener is not None:
                kept = self.listener.reconfigure(self.listener_config(config))
                bound = self.listener.config  # host and port stay those of the socket
                config = replace(
                    config, listener=replace(config.listener, host=bound.host, port=bound.port)
                )
        except (ConfigError, ListenerError) as exc:  # a bad file keeps the running one
            self._emit("config.reload.failed", "warning", detail=str(exc))
            return False, f"reload failed, the running configuration is kept: {exc}"
        old, self.config = self.engine, config
        self.engine = self.scheduler.engine = self._new_engine(config)
        if self.reporter is not None:
            self.reporter.network = _network(self.engine)
        await old.aclose()
        self._emit("config.reloaded", source=config.source)
        if kept and self.listener is not None:
            host, port = self.listener.address
            detail = (
                f"[listener] {' and '.join(kept)} changed in {config.source} but a running "
                f"listener cannot move: still on {host} port {port}; restart "
                "`sts-engine serve` to apply it (everything else was reloaded)"
            )
            self._emit("config.reload.partial", "warning", detail=detail)
            return False, detail
        return True, f"configuration reloaded from {config.source}"

    async def run_once(self, now: float | None = None) -> RoundStats:
        """One round: reload if asked, refresh policies, deliver what is due, report.

        Args:
            now: the time the round runs at (default: the clock's).
        """
        async with self._round_lock:
            return await self._round(now)

    async def run_due(self) -> int:
        """Run rounds until nothing is due now; returns how many ran.

        What one message's arrival sets off is done when this returns: its first
        attempt, and the DSNs and report mail that attempt queued (each due at once).
        """
        async with self._round_lock:
            rounds = await self._walk(None)
            self.wakeup.clear()  # everything due was just run
            return rounds

    async def advance(self, seconds: float) -> int:
        """Move a manual clock forward, with a round at every time something falls due.

        Retries run at their scheduled times, reports after their UTC day, policy
        refreshes at each round; then one round at the target time (which refreshes
        policies even when nothing else is due), and whatever that round queued.

        Raises:
            TypeError: the clock cannot be set (the wall clock).
        """
        clock = self.clock
        if not isinstance(clock, SettableClock):
            raise TypeError(f"advance needs a settable clock, not {type(clock).__name__}")
        async with self._round_lock:
            target = clock.now() + seconds
            rounds = await self._walk(target)
            clock.set(max(target, clock.now()))
            await self._round()
            rounds += 1 + await self._walk(target)
            self.wakeup.clear()
            return rounds

    async def _walk(self, until: float | None) -> int:
        """Rounds at each due time up to ``until`` (None: now, as the clock reads it).

        The clock moves forward to each due time only when ``until`` is given; a walk
        stops after a few rounds at one time that leave something due (a live lease).
        """
        same = 0
        for rounds in range(_MAX_ROUNDS):
            wake, now = self.next_wake(), self.clock.now()
            if wake is None or wake > (now if until is None else until):
                return rounds
            if wake > now and isinstance(self.clock, SettableClock):
                self.clock.set(wake)
                same = 0
            else:
                same += 1
                if same >= _SAME_TIME_ROUNDS:
                    return rounds
            await self._round()
        raise RuntimeError(f"the gateway stayed due after {_MAX_ROUNDS} rounds")

    async def _round(self, now: float | None = None) -> RoundStats:
        # Supervised (issue 13): each step's failure is one line, logged once while it
        # lasts; the other steps and the next round go on.
        if self._reload_requested:
            await self._step("reload", self._reload())
        now = self.clock.now() if now is None else now
        await self._step("policy refresh", self._refresh_policies(now))
        stats = await self._step("delivery", self.scheduler.run_once(now))
        if self.reporter is not None:
            await self._step("TLS reports", self.reporter.run(now))
        await self._step("purge", self._purge(now))
        return stats if isinstance(stats, RoundStats) else RoundStats()

    async def _step(self, step: str, work: Awaitable[object]) -> object:
        """Run one step of a round; a failure is one line (once), never raised."""
        try:
            result = await work
        except Exception as exc:
            detail = describe_fault(exc)
            if self._failing.get(step) != detail:
                self._failing[step] = detail
                self._emit("gateway.step.failed", "warning", step=step, detail=detail)
                trace = "".join(traceback.format_exception(exc))
                self._emit("gateway.step.trace", "debug", step=step, traceback=trace)
            return None
        if self._failing.pop(step, None) is not None:
            self._emit("gateway.step.recovered", step=step)
        return result

    @property
    def failing(self) -> bool:
        """Whether a step of the last round failed (the serve loop then backs off)."""
        return bool(self._failing)

    async def _purge(self, now: float) -> None:
        # Finished messages stay for `keep_done` (queue show, status --mid), then go, a
        # bounded batch each round (an index lookup when there is nothing to purge), so a
        # round never stalls on a large backlog and purging keeps pace with delivery.
        self.queue.purge(now - self.settings.keep_done, limit=_PURGE_BATCH)

    async def _refresh_policies(self, now: float) -> None:
        # RFC 8461 §10.2 / CACHE-7: refresh cached policies in use before they expire.
        await self.engine.refresh_policies(now)

    def next_wake(self) -> float | None:
        """The next time something is due: a recipient or a report."""
        times = [self.scheduler.next_due()]
        if self.reporter is not None:
            times.append(self.reporter.next_due())
        known = [t for t in times if t is not None]
        return min(known) if known else None

    async def serve(self, stop: asyncio.Event, *, timed: bool = True) -> None:
        """Run rounds until ``stop`` is set; sleep until due or woken (no busy loop).

        On stop the listener stops accepting first; the round in progress finishes
        (its deliveries complete and are marked), then the loop returns.

        Args:
            stop: set to stop.
            timed: wake at the next due time; False (a manual clock, whose due times
                are not wall-clock times) wakes only on :attr:`wakeup`.
        """
        backoff = 0.0
        while not stop.is_set():
            self.wakeup.clear()
            await self.run_once()
            if stop.is_set():
                break
            # A failing step (a full disk, a locked queue) is retried, more slowly each
            # time (1 s doubling to a minute), never in a busy loop.
            backoff = min(_MAX_SLEEP, max(1.0, backoff * 2)) if self.failing else 0.0
            if not timed:
                await self.wakeup.wait()
                continue
            try:
                wake = self.next_wake()
            except Exception:  # the queue cannot say: try again after the backoff
                wake = None
            delay = _MAX_SLEEP if wake is None else min(_MAX_SLEEP, wake - self.clock.now())
            delay = max(delay, backoff)
            if delay > 0 and not self.wakeup.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=delay)
        if self.listener is not None:
            self.listener.stop_accepting()
