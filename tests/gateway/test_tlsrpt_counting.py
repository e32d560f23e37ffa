"""TLS reports count each session once, and each report has its own report-id (RFC 8460)."""

from __future__ import annotations

import email
import gzip
import json
import random
from pathlib import Path

from engine.core.cache import CachedPolicy, FetchFailure, MemoryPolicyStore
from engine.core.clock import ManualClock
from engine.core.events import ListSink, LogEvent, ResultType
from engine.core.policy import parse_policy
from engine.io.dialer import Dialer
from engine.tlsrpt.reporter import ReportNetwork, ReportSettings, TlsReporter

START = 1_767_225_600.0 + 3600.0  # 2026-01-01T01:00:00Z
AFTER_THE_DAY = START + 86_400.0 + 1.0  # past the day's end plus the one-hour delay
POLICY = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 604800\n"


class _Answer:
    def txt_strings(self) -> list[list[bytes]]:
        return [[b"v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example"]]


class _Resolver:
    """Answers every ``_smtp._tls`` lookup with a mailto rua (no network)."""

    async def query(self, name: str, rtype: str) -> _Answer:
        assert rtype == "TXT" and name.startswith("_smtp._tls.")
        return _Answer()


def _reporter(path: Path, store: MemoryPolicyStore, queued: list[bytes]) -> TlsReporter:
    return TlsReporter(
        path,
        settings=ReportSettings(jitter_seconds=0.0),
        hostname="gw.example",
        store=store,
        clock=ManualClock(START),
        sink=ListSink(),
        rng=random.Random(0),  # as the harness seeds it
        enqueue=lambda _f, _to, data: queued.append(data) or len(queued),
        network=ReportNetwork(_Resolver(), Dialer(), []),  # type: ignore[arg-type]
    )


def _session(domain: str, sts_mode: str | None, at: float = START) -> LogEvent:
    fields = {"domain": domain, "mx": "mx.example.com", "receiving_ip": "127.0.0.2"}
    fields |= {"sending_ip": "127.0.0.1", "sts_mode": sts_mode, "dane": False}
    fields |= {"success": True, "outcome": "deliver-unverified", "failures": []}
    return LogEvent("tls.session", fields | {"report_mail": False}, "debug", at)


def _report(mail: bytes) -> dict:
    attachment = email.message_from_bytes(mail).get_payload()[1]
    return json.loads(gzip.decompress(attachment.get_payload(decode=True)))


def _failed_fetch(domain: str) -> FetchFailure:
    return FetchFailure(domain, "S1", START - 10, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 500")


async def test_a_failed_fetch_without_a_policy_counts_once_not_also_as_no_policy_found(
    tmp_path,
):
    # RFC 8460 §4.4 / AMB-22: one result per session and policy. The session had no
    # policy because the fetch failed: it is one sts failure, and no no-policy-found
    # success besides (it used to be both). Every such session counts, each once.
    store, queued = MemoryPolicyStore(), []
    store.record_failure(_failed_fetch("status.example"))
    reporter = _reporter(tmp_path / "state.json", store, queued)
    reporter.emit(_session("status.example", None))
    reporter.emit(_session("status.example", None, START + 60))
    await reporter.run(START + 120)
    await reporter.run(AFTER_THE_DAY)
    [mail] = queued
    [policy] = _report(mail)["policies"]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["summary"] == {
        "total-successful-session-count": 0,
        "total-failure-session-count": 2,
    }
    [detail] = policy["failure-details"]
    assert detail["result-type"] == "sts-policy-fetch-error"
    assert detail["failure-reason-code"] == "HTTP 500"


async def test_a_failed_refresh_of_a_cached_policy_is_added_once_beside_the_sessions(tmp_path):
    # FETCH-18 / RPT-24: the cached testing policy applied to both sessions (two
    # successes); the failed refresh is reported once, whatever the number of sessions.
    store, queued = MemoryPolicyStore(), []
    policy = parse_policy(POLICY)
    store.put(CachedPolicy("testing.example", policy, "T1", START - 100))
    store.record_failure(_failed_fetch("testing.example"))
    reporter = _reporter(tmp_path / "state.json", store, queued)
    reporter.emit(_session("testing.example", "testing"))
    reporter.emit(_session("testing.example", "testing", START + 60))
    await reporter.run(START + 120)
    await reporter.run(AFTER_THE_DAY)
    [entry] = _report(queued[0])["policies"]
    assert entry["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 1,
    }


async def test_report_ids_differ_between_reports_sent_at_the_same_moment(tmp_path):
    # RFC 8460 §4.4: report-id is unique to its report. Two gateways (or one that lost
    # its state) reporting the same domain and day at the same moment used to send the
    # same id, a hash of domain, day and time.
    queued: list[bytes] = []
    for name in ("a", "b"):
        reporter = _reporter(tmp_path / f"{name}.json", MemoryPolicyStore(), queued)
        reporter.emit(_session("example.com", None))
        await reporter.run(START)
        await reporter.run(AFTER_THE_DAY)
    first, second = (_report(m)["report-id"] for m in queued)
    assert first != second
    assert first.startswith("2026-01-01.") and first.endswith("@example.com")
    ids = [email.message_from_bytes(m)["Message-ID"] for m in queued]
    assert ids[0] != ids[1]
