"""One TLS report per Policy Domain and day for several gateways (docs/cluster.md).

Theory of operation
-------------------
Each gateway's :class:`~engine.tlsrpt.reporter.TlsReporter` counts its own sessions
in its aggregator, as alone. With a cluster, after every round :meth:`SharedReports.push`
moves those counts into Redis (:class:`~engine.io.redis_counts.RedisReportCounts`:
atomic increments), and the aggregator keeps only what could not go. When a day's
report falls due, :meth:`SharedReports.take` claims it: the one gateway that wins
gets the sum of every gateway's counts and sends the report; the others send
nothing. No count is lost on the way:

* Redis away when counts are pushed: they stay in the aggregator (and its state
  file) and go with the next push;
* Redis away when the report is due: the gateway reports what it holds itself, as
  it would alone (the counts others pushed are reported by whoever claims later);
* counts refused because the day is claimed already (a gateway that was cut off):
  the gateway reports them itself, in a report of their own.

So while Redis is down a domain may get a partial report from each gateway for one
day; it never gets a count twice, but for a batch whose reply was lost in an outage
(:mod:`engine.io.redis_counts`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from engine.core.tlsrpt import PolicySummary, TlsRptAggregator
from engine.io.redis_counts import RedisReportCounts
from engine.io.redis_link import RedisUnavailable

__all__ = ["DAYS_REFRESH", "SharedReports"]

#: Seconds (engine clock) between two looks at the days others counted, when this
#: gateway has pushed nothing new (a push looks every time).
DAYS_REFRESH = 300.0


def _rows(aggregator: TlsRptAggregator) -> list[dict[str, Any]]:
    buckets = aggregator.to_dict()["buckets"]
    assert isinstance(buckets, list)
    return buckets


class SharedReports:
    """The reporter's side of the shared counts.

    Args:
        counts: the Redis counts and claims.
    """

    def __init__(self, counts: RedisReportCounts) -> None:
        self.counts = counts
        #: (domain, day) with counts in Redis, as last seen: the reporter wakes for them.
        self.days: set[tuple[str, date]] = set()
        self._looked: float | None = None

    async def push(self, aggregator: TlsRptAggregator, now: float) -> bool:
        """Move ``aggregator``'s counts into Redis; what cannot go stays in it.

        Returns:
            True when ``aggregator`` changed (the caller saves its state).
        """
        rows = _rows(aggregator)
        changed = False
        try:
            if rows:
                late = await self.counts.add(rows)
                for domain, day in aggregator.days():
                    if (domain, day.isoformat()) not in late:
                        aggregator.pop(domain, day)
                        changed = True
            if rows or self._looked is None or now - self._looked >= DAYS_REFRESH:
                self.days = {(d, date.fromisoformat(s)) for d, s in await self.counts.days()}
                self._looked = now
        except RedisUnavailable:
            pass  # the counts wait here for the next push, or this gateway's own report
        return changed

    async def take(
        self, domain: str, day: date, aggregator: TlsRptAggregator
    ) -> list[PolicySummary] | None:
        """The counts of (``domain``, ``day``)'s report if this gateway sends it, else None.

        The day's counts left in ``aggregator`` are taken out of it either way.
        """
        mine = [
            r
            for r in _rows(aggregator)
            if (r["policy_domain"], r["day"]) == (domain, day.isoformat())
        ]
        aggregator.pop(domain, day)
        # Forgotten either way, so a gateway never wakes again and again for a day it
        # cannot claim now; the next look at Redis brings back a day still unclaimed.
        self.days.discard((domain, day))
        try:
            shared = await self.counts.claim(domain, day.isoformat())
        except RedisUnavailable:
            shared = []  # Redis away at report time: report what this gateway holds
        if shared is None:  # another gateway sends it
            if not mine:
                return None
            shared = []  # counts that never reached Redis: a report of their own
        total = TlsRptAggregator.from_dict({"version": 1, "buckets": [*shared, *mine]})
        return total.pop(domain, day)
