"""What one delivery needs from the engine: adapters, settings and counters.

A plain bundle, built once by :class:`engine.delivery.agent.Engine` and handed to the
delivery code, so that code never reaches for globals.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from engine.config import EngineConfig
from engine.core.cache import PolicyStore
from engine.core.clock import Clock
from engine.core.events import EventSink, LogEvent
from engine.delivery.mtasts import PolicyShare
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.io.fetch import PolicyFetcher
from engine.io.smtp import SmtpTimeouts

__all__ = ["Message", "Services"]


@dataclass(frozen=True, slots=True)
class Message:
    """A message to deliver: envelope and bytes, with its MID."""

    mid: int
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes


@dataclass(slots=True)
class Services:
    """The engine's adapters and settings, as one delivery sees them.

    Attributes:
        report_mail: this delivery carries TLS reports (RFC 8460 §3): its
            ``tls.session`` events say so, and the reporter never counts them (RPT-9).
        share: the policy cache other gateways share (docs/cluster.md), or None.
    """

    config: EngineConfig
    clock: Clock
    sink: EventSink
    resolver: DnsResolver
    fetcher: PolicyFetcher
    store: PolicyStore
    dialer: Dialer
    roots: list[bytes]
    smtp_timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)
    local_hostname: str = "sts-engine.localdomain"
    interface: str = "127.0.0.1"
    rng: random.Random = field(default_factory=random.Random)
    dcids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    report_mail: bool = False
    share: PolicyShare | None = None

    def emit(self, code: str, fields: Mapping[str, object], level: str = "info") -> None:
        """Send one event, stamped with the engine clock, to the sink."""
        self.sink.emit(LogEvent(code, fields, level, self.clock.now()))

    def next_dcid(self) -> int:
        """The next delivery connection id."""
        return next(self.dcids)
