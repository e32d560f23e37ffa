"""TLS reporting from the gateway: sessions counted, a daily report POSTed and mailed."""

from __future__ import annotations

import email
import gzip
import json
import random

from engine.core.cache import MemoryPolicyStore
from engine.core.clock import ManualClock
from engine.core.events import ListSink, LogEvent
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver, ResolverAddress
from engine.tlsrpt.reporter import ReportNetwork, ReportSettings, TlsReporter
from harness.world.dns.records import TXT
from harness.world.mta.server import ServerCert
from tests.gateway.conftest import inject, make_gateway, texts, write_config
from tests.gateway.sim import POLICY, START, factory

DAY = 86_400.0


async def test_daily_report_counts_sessions_and_excludes_report_mail(sim, tmp_path):
    gw, sink = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        assert (await gw.run_once()).delivered == 1
        # The MX now serves a certificate for another name: an enforce failure.
        wrong = factory().issue("other.example")
        sim.mx1.rotate_cert(ServerCert(wrong.chain_pem, wrong.private_key_pem))
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        assert (await gw.run_once()).deferred == 1
        assert sim.sink.count() == 0  # the day is not over
        # Past the end of the UTC day plus the one-hour delay (jitter 0 in tests).
        sim.clock.set(START - 3600 + DAY + 3600 + 1)
        await gw.run_once()  # report built: POSTed, and queued for mailto
        await gw.run_once()  # the report mail goes out
        await sim.sender_mx.settle()
        later = [d for d, _ in gw.reporter.aggregator.days()]
    [post] = sim.sink.reports("/tlsrpt")
    assert post.content_type == "application/tlsrpt+gzip"
    report = post.report
    assert report["date-range"]["start-datetime"] == "2026-01-01T00:00:00Z"
    [policy] = report["policies"]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["policy"]["policy-domain"] == "example.com"
    assert policy["policy"]["policy-string"] == POLICY.strip().split("\n")
    assert policy["policy"]["mx-host"] == ["mx1.example.com"]
    assert policy["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 1,
    }
    [detail] = policy["failure-details"]
    assert detail["result-type"] == "certificate-host-mismatch"
    assert detail["receiving-mx-hostname"] == "mx1.example.com"
    # The mailto copy arrived at sender.example's MX as RFC 8460 §5.3 mail.
    mails = [m for m in sim.sender_mx.messages if b"TLS-Report-Domain" in m.data]
    assert len(mails) == 1
    parsed = email.message_from_bytes(mails[0].data)
    assert parsed["TLS-Report-Domain"] == "example.com"
    attachment = parsed.get_payload()[1]
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert json.loads(gzip.decompress(attachment.get_payload(decode=True)))["policies"]
    # RFC 8460 §3 / RPT-9: the session that carried the report is not counted; the
    # delivery marks its tls.session event, and only that one.
    assert "sender.example" not in later
    marks = {
        (e.fields["domain"], e.fields["report_mail"])
        for e in sink.events
        if e.code == "tls.session"
    }
    assert marks == {("example.com", False), ("sender.example", True)}
    assert any("sent via https to https://rpt.example/tlsrpt" in t for t in texts(sink))


async def test_report_post_is_retried_with_backoff_after_a_failure(sim, tmp_path):
    sim.sink.script("/tlsrpt", 503, 201)
    gw, _sink = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        await gw.run_once()
        sim.clock.set(START - 3600 + DAY + 3600 + 1)
        await gw.run_once()
        assert [r.status for r in sim.sink.reports()] == [503]
        [entry] = gw.reporter.outbox
        assert entry["next"] == sim.clock.now() + 300
        sim.clock.advance(300)
        await gw.run_once()
        assert [r.status for r in sim.sink.reports()] == [503, 201]
        assert gw.reporter.outbox == []


async def test_malformed_rua_is_logged_and_skipped(sim, tmp_path):
    rua = b"v=TLSRPTv1; rua=mailto:no-at-sign,http://rpt.example/x,https://rpt.example/tlsrpt"
    sim.dns.set_rrset("_smtp._tls.example.com", "TXT", TXT((rua,)))
    gw, sink = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        await gw.run_once()
        sim.clock.set(START - 3600 + DAY + 3600 + 1)
        await gw.run_once()
    assert sim.sink.count("/tlsrpt") == 1
    skipped = [t for t in texts(sink) if t.startswith("TLS report rua")]
    assert len(skipped) == 2
    assert "'mailto:no-at-sign'" in skipped[0] and "'http://rpt.example/x'" in skipped[1]


def _session(domain: str, *, report_mail: bool) -> LogEvent:
    fields = {"domain": domain, "mx": f"mx.{domain}", "receiving_ip": "127.0.0.2"}
    fields |= {"sending_ip": "127.0.0.1", "sts_mode": None, "dane": False, "success": True}
    fields |= {"outcome": "deliver-unverified", "failures": [], "report_mail": report_mail}
    return LogEvent("tls.session", fields, "debug", START)


async def test_reporter_needs_no_gateway_and_leaves_out_report_mail_sessions(tmp_path):
    # The reporter is built from what it uses: a store, a clock, a sink, a random
    # source, an enqueue function and a network (none is touched before a report).
    queued: list[tuple[str, list[str], bytes]] = []
    resolver = DnsResolver([ResolverAddress("127.0.0.1", 9, True)], timeout=1.0)
    reporter = TlsReporter(
        tmp_path / "tlsrpt-state.json",
        settings=ReportSettings(),
        hostname="gw.example",
        store=MemoryPolicyStore(),
        clock=ManualClock(START),
        sink=ListSink(),
        rng=random.Random(1),
        enqueue=lambda *mail: queued.append(mail) or 1,
        network=ReportNetwork(resolver, Dialer(), []),
    )
    reporter.emit(_session("a.example", report_mail=False))
    reporter.emit(_session("b.example", report_mail=True))  # RPT-9: never counted
    await reporter.run(START)
    assert [domain for domain, _ in reporter.aggregator.days()] == ["a.example"]
    assert reporter.contact == "tlsrpt-noreply@gw.example" and queued == []
    await reporter.aclose()
