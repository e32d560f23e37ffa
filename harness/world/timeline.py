"""When things happened in a world: timestamped servers and a merged timeline.

Theory of operation
-------------------
The world's servers log *what* happened but not *when* (their records carry no
time). The world runs them all in one event loop, so one monotonic clock orders
everything; this module adds the timestamps at the edges, without changing the
servers:

* :class:`TimedDns` stamps each query in :meth:`FakeDns.respond`, by its ``seq``;
* :class:`TimedMta` stamps a session when it starts and when it ends (the
  ``SessionOwner`` callbacks);
* :class:`TimedPolicyHost`, :class:`TimedProxy` and :class:`TimedReportSink` swap
  their request log for a :class:`StampedLog`, a list that stamps each append.
  That reaches into a private attribute (``_log``); the world's tests pin it, and
  a public timestamp on the records would make it unnecessary.

:func:`merge` turns the stamped logs into one list of :class:`WorldExchange`, sorted by
time, which is what a report draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, SupportsIndex

from harness.world.dns.answer import LoggedQuery, Transport
from harness.world.dns.server import FakeDns
from harness.world.mta.records import MtaSession, ReceivedMessage
from harness.world.mta.server import ReceivingMta
from harness.world.mta.session import MtaProtocol
from harness.world.web.policy_host import PolicyHost, PolicyRequest
from harness.world.web.proxy import Proxy, ProxyEvent
from harness.world.web.report_sink import ReceivedReport, ReportSink

__all__ = [
    "ExchangeKind",
    "StampedLog",
    "TimedDns",
    "TimedMta",
    "TimedPolicyHost",
    "TimedProxy",
    "TimedReportSink",
    "WorldExchange",
    "WorldSnapshot",
    "merge",
    "monotonic_clock",
]

Clock = Callable[[], float]


class ExchangeKind(StrEnum):
    """Which server an :class:`WorldExchange` happened at."""

    DNS = "dns"
    POLICY = "policy"
    SMTP = "smtp"
    PROXY = "proxy"
    REPORT = "report"


@dataclass(frozen=True, slots=True)
class WorldExchange:
    """One exchange with the world, for a timeline.

    Attributes:
        at: seconds since the world started (monotonic) when it began.
        end: when it ended (SMTP sessions), else None.
        kind: the server it happened at.
        name: what it was about: the query name, policy host, MX host, proxy target
            or report path.
        summary: one line for humans, e.g. ``"TXT -> NOERROR AD=0 (1 answer)"``.
        record: the server's own record (``LoggedQuery``, ``PolicyRequest``, ...).
    """

    at: float
    end: float | None
    kind: ExchangeKind
    name: str
    summary: str
    record: object


@dataclass(frozen=True, slots=True)
class WorldSnapshot:
    """Everything a world observed up to one moment (copies; later traffic is not in it).

    Attributes:
        dns_queries: every DNS query, oldest first.
        policy_requests: every request to a policy host.
        sessions: every finished SMTP session, at every MX, by start time.
        messages: every message accepted, at every MX.
        proxy_log: every proxy request.
        reports: every request to the report sink.
        timeline: all of the above as :class:`WorldExchange` s, by time.
    """

    dns_queries: tuple[LoggedQuery, ...]
    policy_requests: tuple[PolicyRequest, ...]
    sessions: tuple[MtaSession, ...]
    messages: tuple[ReceivedMessage, ...]
    proxy_log: tuple[ProxyEvent, ...]
    reports: tuple[ReceivedReport, ...]
    timeline: tuple[WorldExchange, ...]


class StampedLog(list[Any]):
    """A list that remembers, for each appended item, the clock's time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.stamps: list[float] = []

    def append(self, item: Any) -> None:
        """Append ``item`` and stamp it."""
        super().append(item)
        self.stamps.append(self.clock())

    def clear(self) -> None:
        """Forget items and stamps."""
        super().clear()
        self.stamps.clear()

    def pop(self, index: SupportsIndex = -1) -> Any:
        """Remove an item and its stamp."""
        self.stamps.pop(index)
        return super().pop(index)

    def stamped(self) -> list[tuple[float, Any]]:
        """``(time, item)`` pairs in log order."""
        return list(zip(self.stamps, self, strict=True))


class TimedDns(FakeDns):
    """A :class:`FakeDns` that remembers when each query arrived (see the module doc)."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.stamps: dict[int, float] = {}

    def respond(self, wire: bytes, transport: Transport) -> tuple[bytes | None, int]:
        """As :meth:`FakeDns.respond`, stamping the logged query."""
        at = self.clock()
        reply = super().respond(wire, transport)
        if self._log:  # respond() appends exactly one entry
            self.stamps[self._log[-1].seq] = at
        return reply

    def clear_log(self) -> None:
        """Forget logged queries and their stamps."""
        super().clear_log()
        self.stamps.clear()


class TimedMta(ReceivingMta):
    """A :class:`ReceivingMta` that remembers when each session started and ended."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.spans: dict[int, tuple[float, float | None]] = {}

    def session_started(self, protocol: MtaProtocol) -> None:
        """Stamp the start, then as :meth:`ReceivingMta.session_started`."""
        self.spans[protocol.log.session_id] = (self.clock(), None)
        super().session_started(protocol)

    def session_finished(self, protocol: MtaProtocol, record: MtaSession) -> None:
        """Stamp the end, then as :meth:`ReceivingMta.session_finished`."""
        start = self.spans.get(record.session_id, (self.clock(), None))[0]
        self.spans[record.session_id] = (start, self.clock())
        super().session_finished(protocol, record)


class TimedPolicyHost(PolicyHost):
    """A :class:`PolicyHost` whose request log is a :class:`StampedLog`."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log = StampedLog(clock)

    def stamped(self) -> list[tuple[float, PolicyRequest]]:
        """``(time, request)`` pairs in arrival order."""
        assert isinstance(self._log, StampedLog)
        return self._log.stamped()


class TimedProxy(Proxy):
    """A :class:`Proxy` whose log is a :class:`StampedLog`."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log = StampedLog(clock)

    def stamped(self) -> list[tuple[float, ProxyEvent]]:
        """``(time, event)`` pairs in log order."""
        assert isinstance(self._log, StampedLog)
        return self._log.stamped()


class TimedReportSink(ReportSink):
    """A :class:`ReportSink` whose log is a :class:`StampedLog`."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log = StampedLog(clock)

    def stamped(self) -> list[tuple[float, ReceivedReport]]:
        """``(time, report)`` pairs in log order."""
        assert isinstance(self._log, StampedLog)
        return self._log.stamped()


def _dns(q: LoggedQuery) -> str:
    how = f" [{q.behaviour}]" if q.behaviour else ""
    flags = f" AD={int(q.ad)}" + (" TC" if q.tc else "")
    return f"{q.qtype} -> {q.rcode or 'no reply'}{flags} ({len(q.answers)} answers){how}"


def _policy(r: PolicyRequest) -> str:
    status = "404" if r.served is None else f"{r.served.behaviour} {r.served.status}"
    return f"{r.method} {r.path} SNI={r.sni} -> {status}"


def _smtp(s: MtaSession) -> str:
    tls = s.tls_version or ("TLS failed" if s.starttls_attempted else "clear")
    delivered = sum(t.delivered for t in s.transactions)
    faults = f" [{'; '.join(s.faults)}]" if s.faults else ""
    return f"{tls}, {delivered} delivered, {' '.join(s.commands)} -> {s.ended}{faults}"


def merge(
    dns: TimedDns,
    policy: TimedPolicyHost | None,
    mtas: Iterable[TimedMta],
    proxy: TimedProxy | None = None,
    sink: TimedReportSink | None = None,
) -> list[WorldExchange]:
    """All exchanges of a world's servers, oldest first.

    SMTP sessions appear once they have ended (their record is made then).
    """
    out = [
        WorldExchange(dns.stamps.get(q.seq, 0.0), None, ExchangeKind.DNS, q.qname, _dns(q), q)
        for q in dns.queries()
    ]
    for at, r in policy.stamped() if policy else ():
        out.append(
            WorldExchange(at, None, ExchangeKind.POLICY, r.host or r.sni or "", _policy(r), r)
        )
    for mta in mtas:
        for s in mta.sessions:
            start, end = mta.spans.get(s.session_id, (0.0, None))
            out.append(WorldExchange(start, end, ExchangeKind.SMTP, s.mx_host, _smtp(s), s))
    for at, e in proxy.stamped() if proxy else ():
        summary = f"CONNECT {e.target} -> {e.outcome}"
        out.append(WorldExchange(at, None, ExchangeKind.PROXY, e.target, summary, e))
    for at, rep in sink.stamped() if sink else ():
        summary = f"{rep.method} {rep.content_type} {rep.raw_size} B -> {rep.status}"
        out.append(WorldExchange(at, None, ExchangeKind.REPORT, rep.path, summary, rep))
    out.sort(key=lambda x: x.at)
    return out


def monotonic_clock() -> Clock:
    """A clock reading seconds (monotonic) since it was made."""
    start = time.monotonic()
    return lambda: time.monotonic() - start
