"""What one step observed: engine events and log lines, and the world's side of it.

Theory of operation
-------------------
The world's logs only grow during a run. A :class:`WorldWatcher` remembers what it
has already handed out (DNS queries by sequence number, SMTP sessions by host and
session id, other records by identity) and each :meth:`WorldWatcher.take` returns
only what is new, as plain frozen records: a step's slice of the world. Together with
the engine's new events and log lines they make a :class:`StepObservation`.

Everything here is plain data (strings, numbers, tuples, dicts), so a result can be
pickled to a parent process and written as JSON without special cases. Times: ``at``
is seconds on the world's monotonic clock (the world and the engine's events share
it, so a sequence diagram can interleave them); ``clock`` is the engine's (manual)
clock, the time log lines show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.world.dns_answer import LoggedQuery
from harness.world.mta_records import MtaSession
from harness.world.policy_host import PolicyRequest
from harness.world.timeline import Exchange
from harness.world.world import World

__all__ = [
    "DeliveryRecord",
    "DnsRecord",
    "EventRecord",
    "FetchRecord",
    "SessionRecord",
    "StepObservation",
    "TimelineEntry",
    "WorldSlice",
    "WorldWatcher",
]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One engine event, with its rendered mail_logs line (debug level)."""

    code: str
    fields: Mapping[str, Any]
    level: str
    clock: float
    at: float
    line: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One recipient's outcome, as the engine reported it."""

    mid: int
    rcpt: str
    status: str
    mx: str | None = None
    tls: str | None = None
    verified: str = "clear"
    reason: str = ""
    result_type: str | None = None


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One DNS query the fake DNS answered."""

    at: float
    name: str
    type: str
    rcode: str | None
    ad: bool
    answers: tuple[str, ...]
    behaviour: str | None


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """One request that reached a policy host."""

    at: float
    host: str
    sni: str | None
    method: str
    path: str
    answer: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One SMTP session at a receiving MTA."""

    at: float
    end: float | None
    mx: str
    starttls_offered: bool
    starttls_attempted: bool
    tls_version: str | None
    cipher: str | None
    sni: str | None
    tls_error: str | None
    transactions: int
    delivered: int
    in_clear: bool
    commands: tuple[str, ...]
    ended: str


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One exchange with the world, for a timeline."""

    at: float
    end: float | None
    kind: str
    name: str
    summary: str


@dataclass(frozen=True, slots=True)
class WorldSlice:
    """What the world saw between two :meth:`WorldWatcher.take` calls."""

    dns: tuple[DnsRecord, ...] = ()
    fetches: tuple[FetchRecord, ...] = ()
    sessions: tuple[SessionRecord, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class StepObservation:
    """Everything one step (or the set-up, index -1) observed.

    Attributes:
        index: the step's index; -1 for what happened before the first step.
        label: the step's label.
        events: new engine events (each with its log line).
        lines: new mail_logs lines (debug level), in order.
        deliveries: per-recipient outcomes of a ``send`` step.
        world: the world's slice.
        clock: the engine clock when the step started.
        seconds: wall time the step took.
        error: an exception raised by the step itself, as text.
    """

    index: int
    label: str
    events: tuple[EventRecord, ...] = ()
    lines: tuple[str, ...] = ()
    deliveries: tuple[DeliveryRecord, ...] = ()
    world: WorldSlice = field(default_factory=WorldSlice)
    clock: float = 0.0
    seconds: float = 0.0
    error: str | None = None


def _dns(at: float, q: LoggedQuery) -> DnsRecord:
    behaviour = str(q.behaviour) if q.behaviour else None
    return DnsRecord(at, q.qname, q.qtype, q.rcode, q.ad, tuple(q.answers), behaviour)


def _fetch(at: float, r: PolicyRequest) -> FetchRecord:
    answer = "404" if r.served is None else f"{r.served.behaviour} {r.served.status}"
    return FetchRecord(at, r.host or r.sni or "", r.sni, r.method, r.path, answer)


def _session(at: float, end: float | None, s: MtaSession) -> SessionRecord:
    return SessionRecord(
        at=at,
        end=end,
        mx=s.mx_host,
        starttls_offered=s.starttls_offered,
        starttls_attempted=s.starttls_attempted,
        tls_version=s.tls_version,
        cipher=s.cipher,
        sni=s.sni,
        tls_error=s.tls_error,
        transactions=len(s.transactions),
        delivered=sum(t.delivered for t in s.transactions),
        in_clear=s.in_clear,
        commands=tuple(s.commands),
        ended=str(s.ended),
    )


class WorldWatcher:
    """Hands out, at each :meth:`take`, what a world observed since the last one."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, object]] = set()

    def _new(self, key: tuple[str, object]) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def take(self, world: World) -> WorldSlice:
        """The DNS queries, fetches, SMTP sessions and exchanges not handed out yet."""
        timeline: list[Exchange] = world.timeline()
        dns, fetches, sessions, entries = [], [], [], []
        for x in timeline:
            rec = x.record
            if isinstance(rec, LoggedQuery):
                key: tuple[str, object] = ("dns", rec.seq)
            elif isinstance(rec, MtaSession):
                key = ("smtp", (rec.mx_host, rec.session_id))
            else:
                key = (str(x.kind), id(rec))
            if not self._new(key):
                continue
            entries.append(TimelineEntry(x.at, x.end, str(x.kind), x.name, x.summary))
            if isinstance(rec, LoggedQuery):
                dns.append(_dns(x.at, rec))
            elif isinstance(rec, PolicyRequest):
                fetches.append(_fetch(x.at, rec))
            elif isinstance(rec, MtaSession):
                sessions.append(_session(x.at, x.end, rec))
        return WorldSlice(tuple(dns), tuple(fetches), tuple(sessions), tuple(entries))
