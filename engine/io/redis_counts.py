"""TLS-RPT session counts several gateways add up in Redis, and the claim on each report.

Theory of operation
-------------------
A gateway's TLS reporter counts sessions per (Policy Domain, UTC day, policy) in a
:class:`~engine.core.tlsrpt.TlsRptAggregator` (RFC 8460 §4.4). With a cluster it
moves those counts into Redis after every round, and one gateway sends each day's
report for a domain, with the sum (docs/cluster.md). The counts are the
aggregator's own rows (:meth:`~engine.core.tlsrpt.TlsRptAggregator.to_dict`), kept
as one hash per (domain, day)::

    {prefix}:tlsrpt:counts:{domain}:{day}   field: JSON [type, strings, mx, failure]
                                            value: a count (HINCRBY)
    {prefix}:tlsrpt:days                    set of "{domain} {day}" with counts
    {prefix}:tlsrpt:claim:{domain}:{day}    the gateway that sends that report

``failure`` is None for the successes, else the failure row without its count, so
equal sessions on different gateways land on one field and the sum is exact.

:meth:`RedisReportCounts.add` adds a batch in one Lua script (atomic: all of it or
none); a (domain, day) whose report is claimed already is refused whole and handed
back, so the caller keeps those counts and reports them itself rather than lose them.
:meth:`RedisReportCounts.claim` sets the claim (``SET NX``) and, in the same script,
takes the counts away: exactly one gateway gets them. A batch whose reply is lost
(Redis died during the script) stays with the caller and may be counted twice,
never lost, as a crash of one gateway can send a report twice (engine/tlsrpt/reporter.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.io.redis_link import RedisLink

__all__ = ["CLAIM_SECONDS", "RedisReportCounts", "Row"]

#: An aggregator row (``TlsRptAggregator.to_dict()["buckets"]`` item).
Row = Mapping[str, Any]
#: A claim outlives any late batch for its day (the reporter forgets after 3 days).
CLAIM_SECONDS = 4 * 86_400

# KEYS: the days set, then per group its counts hash and its claim key.
# ARGV: the number of groups, then per group: member, n, then n (field, count) pairs.
_ADD = """
local groups = tonumber(ARGV[1])
local i = 2
local late = {}
for g = 1, groups do
  local hash, claim = KEYS[2 * g], KEYS[2 * g + 1]
  local member, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  if redis.call('EXISTS', claim) == 1 then
    table.insert(late, member)
  else
    for f = 0, n - 1 do
      redis.call('HINCRBY', hash, ARGV[i + 2 * f], ARGV[i + 2 * f + 1])
    end
    redis.call('SADD', KEYS[1], member)
  end
  i = i + 2 * n
end
return late
"""
# KEYS: claim, counts hash, days set. ARGV: node, seconds, member.
_CLAIM = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
local rows = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[3])
return rows
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(row: Row) -> list[tuple[str, int]]:
    """One row as (field, count) pairs."""
    identity = [row["policy_type"], list(row["policy_strings"]), list(row["mx_host"])]
    out = []
    if int(row["successes"]):
        out.append((json.dumps([*identity, None], sort_keys=True), int(row["successes"])))
    for failure in row["failures"]:
        detail = {k: v for k, v in failure.items() if k != "count"}
        out.append((json.dumps([*identity, detail], sort_keys=True), int(failure["count"])))
    return out


def _rows(domain: str, day: str, flat: Sequence[Any]) -> list[dict[str, Any]]:
    """The hash's fields and counts (HGETALL, flat) as aggregator rows."""
    rows: dict[str, dict[str, Any]] = {}
    for field, count in zip(flat[::2], flat[1::2], strict=True):
        ptype, strings, mx, failure = json.loads(_text(field))
        key = json.dumps([ptype, strings, mx])
        row = rows.setdefault(
            key,
            {
                "policy_domain": domain,
                "day": day,
                "policy_type": ptype,
                "policy_strings": strings,
                "mx_host": mx,
                "successes": 0,
                "failures": [],
            },
        )
        if failure is None:
            row["successes"] += int(_text(count))
        else:
            row["failures"].append({**failure, "count": int(_text(count))})
    return list(rows.values())


class RedisReportCounts:
    """TLS-RPT counts in Redis (see the module comment).

    Args:
        link: the gateway's :class:`~engine.io.redis_link.RedisLink`.
        node: names this gateway in the claims it sets.
    """

    def __init__(self, link: RedisLink, *, node: str) -> None:
        self.link, self.node = link, node
        self._add, self._claim = link.script(_ADD), link.script(_CLAIM)

    def _counts_key(self, domain: str, day: str) -> str:
        return self.link.key("tlsrpt", "counts", domain, day)

    def _claim_key(self, domain: str, day: str) -> str:
        return self.link.key("tlsrpt", "claim", domain, day)

    async def add(self, rows: Iterable[Row]) -> set[tuple[str, str]]:
        """Add aggregator rows to the shared counts, all at once.

        Returns:
            The (domain, ISO day) groups refused because their report is claimed
            already; the caller keeps those.

        Raises:
            RedisUnavailable: nothing was added (or, if the reply was lost, maybe all).
        """
        groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for row in rows:
            groups.setdefault((row["policy_domain"], row["day"]), []).extend(_fields(row))
        if not groups:
            return set()
        keys = [self.link.key("tlsrpt", "days")]
        args: list[Any] = [len(groups)]
        for (domain, day), pairs in groups.items():
            keys += [self._counts_key(domain, day), self._claim_key(domain, day)]
            args += [f"{domain} {day}", len(pairs)]
            for field, count in pairs:
                args += [field, count]
        late = await self.link.call(
            "add TLS report counts", lambda r: self._add(keys=keys, args=args, client=r)
        )
        return {tuple(_text(m).split(" ", 1)) for m in late}  # type: ignore[misc]

    async def days(self) -> list[tuple[str, str]]:
        """Every (domain, ISO day) with shared counts not yet claimed, sorted.

        Raises:
            RedisUnavailable: Redis cannot be asked now.
        """
        members = await self.link.call(
            "list TLS report days", lambda r: r.smembers(self.link.key("tlsrpt", "days"))
        )
        return sorted(tuple(_text(m).split(" ", 1)) for m in members)  # type: ignore[misc]

    async def claim(self, domain: str, day: str) -> list[dict[str, Any]] | None:
        """Claim the right to send (domain, day)'s report and take its counts.

        Returns:
            The shared counts as aggregator rows (perhaps none) when this gateway
            won the claim; None when another gateway has it.

        Raises:
            RedisUnavailable: Redis cannot be asked now (nothing was claimed, or, if
                the reply was lost, the counts are gone with an unanswered claim).
        """
        keys = [
            self._claim_key(domain, day),
            self._counts_key(domain, day),
            self.link.key("tlsrpt", "days"),
        ]
        args = [self.node, CLAIM_SECONDS, f"{domain} {day}"]
        flat = await self.link.call(
            "claim TLS report", lambda r: self._claim(keys=keys, args=args, client=r)
        )
        return None if flat is None else _rows(domain, day, flat)
