"""The pieces a gateway shares with others through Redis, made from ``[cluster]``.

docs/cluster.md says what is shared and how it fails: the MTA-STS policy cache
(:class:`~engine.io.redis_policy.RedisPolicyShare`, used by the delivery's policy
discovery and refresh) and the TLS-RPT counts with the claim on each report
(:class:`~engine.tlsrpt.shared.SharedReports`, used by the reporter). Both go through
one :class:`~engine.io.redis_link.RedisLink`, so one breaker and one warning cover
them. The gateway owns it for its whole life: a configuration reload keeps it (a
changed ``[cluster]`` table takes a restart, like the listener's address).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.core.clock import Clock
from engine.core.events import EventSink
from engine.io.redis_counts import RedisReportCounts
from engine.io.redis_link import RedisLink
from engine.io.redis_policy import RedisPolicyShare
from engine.tlsrpt.shared import SharedReports

__all__ = ["Cluster", "open_cluster"]


@dataclass(frozen=True, slots=True)
class Cluster:
    """What this gateway shares: the link, the policy cache, the report counts."""

    link: RedisLink
    policies: RedisPolicyShare
    reports: SharedReports

    async def aclose(self) -> None:
        """Close the connection to Redis."""
        await self.link.aclose()


def open_cluster(
    config: EngineConfig, *, clock: Clock, sink: EventSink, hostname: str
) -> Cluster | None:
    """The cluster pieces for ``config``, or None without ``[cluster] redis``.

    Nothing connects yet: the first Redis call does, within ``[cluster] timeout``.

    Args:
        config: the configuration.
        clock: the engine clock (stamps the cluster's events).
        sink: where the ``cluster.*`` events go.
        hostname: this gateway's name; with its pid it names the reports it claims.
    """
    c = config.cluster
    if c.redis is None:
        return None
    link = RedisLink(
        c.redis, timeout=c.timeout, retry_after=c.retry_after, prefix=c.prefix,
        sink=sink, clock=clock,
    )  # fmt: skip
    # A lease outlives the longest fetch (its timeout, and Redis calls on either side);
    # the others wait as long, which is no longer than fetching themselves would take.
    lease = config.policy_fetch.timeout + 2 * c.timeout + 1.0
    policies = RedisPolicyShare(link, lease=lease, wait=lease)
    reports = SharedReports(RedisReportCounts(link, node=f"{hostname}:{os.getpid()}"))
    return Cluster(link, policies, reports)
