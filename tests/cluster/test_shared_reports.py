"""engine/io/redis_counts.py and engine/tlsrpt/shared.py with a real redis-server.

Three gateways count sessions for one domain and day; the report's counts are the sum,
and one gateway gets them. Counts that cannot reach Redis stay with their gateway and
are reported, never lost.
"""

from __future__ import annotations

from datetime import date

from engine.core.events import ResultType
from engine.core.tlsrpt import PolicySummary, PolicyType, SessionResult, TlsRptAggregator
from engine.io.redis_counts import RedisReportCounts
from engine.tlsrpt.shared import SharedReports
from harness.redis_server import RedisServer
from tests.cluster.conftest import FakeTime, WatchSink, make_link

D = "example.com"
AT = 1_767_225_600.0 + 3600  # 2026-01-01 01:00 UTC
DAY = date(2026, 1, 1)
LINES = ("version: STSv1", "mode: enforce", "mx: mx1.example.com", "max_age: 86400")


def ok() -> SessionResult:
    return SessionResult(
        policy_domain=D, policy_type=PolicyType.STS, policy_strings=LINES,
        mx_host=("mx1.example.com",), success=True, at=AT,
    )  # fmt: skip


def bad(ip: str = "127.10.0.2") -> SessionResult:
    return SessionResult(
        policy_domain=D, policy_type=PolicyType.STS, policy_strings=LINES,
        mx_host=("mx1.example.com",), success=False, at=AT,
        result_type=ResultType.CERTIFICATE_EXPIRED, receiving_ip=ip,
        receiving_mx_hostname="mx1.example.com",
    )  # fmt: skip


def aggregator(*results: SessionResult) -> TlsRptAggregator:
    agg = TlsRptAggregator()
    agg.add_all(results)
    return agg


def node(
    url: str, name: str, sink: WatchSink | None = None, time: FakeTime | None = None
) -> SharedReports:
    link = make_link(url, sink or WatchSink(), monotonic=time)
    return SharedReports(RedisReportCounts(link, node=name))


def totals(summaries: list[PolicySummary] | None) -> list[tuple[int, int, list[int]]]:
    assert summaries is not None
    return [(s.successes, s.failures, [d.count for d in s.details]) for s in summaries]


async def test_three_gateways_counts_are_summed_and_one_gateway_gets_them(
    redis_server: RedisServer,
):
    nodes = [node(redis_server.url, f"gw{i}") for i in range(3)]
    aggs = [
        aggregator(ok(), ok(), bad()),
        aggregator(ok(), bad(), bad("127.10.0.3")),
        aggregator(ok()),
    ]
    for n, a in zip(nodes, aggs, strict=True):
        assert await n.push(a, AT) is True
        assert a.days() == []  # moved to Redis
    await nodes[0].push(TlsRptAggregator(), AT)
    assert nodes[0].days == {(D, DAY)}
    won = await nodes[1].take(D, DAY, TlsRptAggregator())
    # 4 successes; 3 failures in two failure-details entries (by receiving-ip).
    assert totals(won) == [(4, 3, [2, 1])]
    assert await nodes[0].take(D, DAY, TlsRptAggregator()) is None
    assert await nodes[2].take(D, DAY, TlsRptAggregator()) is None
    for n in nodes:
        await n.counts.link.aclose()


async def test_counts_pushed_after_the_claim_stay_and_go_in_a_report_of_their_own(
    redis_server: RedisServer,
):
    first, late = node(redis_server.url, "gw1"), node(redis_server.url, "gw2")
    await first.push(aggregator(ok()), AT)
    assert totals(await first.take(D, DAY, TlsRptAggregator())) == [(1, 0, [])]
    cut_off = aggregator(ok(), bad())  # a gateway that could not push in time
    assert await late.push(cut_off, AT) is False
    assert cut_off.days() == [(D, DAY)]  # refused: the report is claimed, the counts stay
    assert totals(await late.take(D, DAY, cut_off)) == [(1, 1, [1])]
    assert cut_off.days() == []
    for n in (first, late):
        await n.counts.link.aclose()


async def test_without_redis_counts_stay_and_the_gateway_reports_them_itself(
    redis_server: RedisServer,
):
    sink = WatchSink()
    alone = node(redis_server.url, "gw1", sink)
    await redis_server.stop()
    counts = aggregator(ok(), ok(), bad())
    assert await alone.push(counts, AT) is False
    assert counts.days() == [(D, DAY)]
    assert totals(await alone.take(D, DAY, counts)) == [(2, 1, [1])]
    assert counts.days() == []
    assert [e.code for e in sink.events] == ["cluster.redis.down"]
    await alone.counts.link.aclose()


async def test_counts_kept_in_an_outage_go_to_redis_when_it_is_back(redis_server: RedisServer):
    time = FakeTime()
    gw = node(redis_server.url, "gw1", time=time)
    await redis_server.stop()
    counts = aggregator(ok())
    await gw.push(counts, AT)
    await redis_server.start()
    time.now += gw.counts.link.retry_after  # the breaker's pause is over
    assert await gw.push(counts, AT) is True
    assert counts.days() == [] and gw.days == {(D, DAY)}
    other = node(redis_server.url, "gw2")
    assert totals(await other.take(D, DAY, TlsRptAggregator())) == [(1, 0, [])]
    for n in (gw, other):
        await n.counts.link.aclose()


async def test_a_day_that_cannot_be_claimed_now_is_not_woken_for_until_redis_is_back(
    redis_server: RedisServer,
):
    """Before: the day stayed in ``days`` while Redis was down, so the reporter's next due
    time stayed in the past and the gateway ran round after round without a pause."""
    time = FakeTime()
    link = make_link(redis_server.url, WatchSink(), timeout=0.2, monotonic=time)
    gw = SharedReports(RedisReportCounts(link, node="gw1"))
    await gw.push(aggregator(ok(), bad()), AT)
    assert gw.days == {(D, DAY)}
    redis_server.pause()  # away, with the counts (a restart would lose them: no disk)
    try:
        assert await gw.take(D, DAY, TlsRptAggregator()) == []  # nothing here to report
    finally:
        redis_server.resume()
    assert gw.days == set()
    time.now += gw.counts.link.retry_after
    await gw.push(TlsRptAggregator(), AT + 86_400)  # the next look at Redis
    assert gw.days == {(D, DAY)}
    assert totals(await gw.take(D, DAY, TlsRptAggregator())) == [(1, 1, [1])]
    await gw.counts.link.aclose()
