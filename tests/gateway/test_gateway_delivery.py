"""The gateway end to end through the simulated world: inject, deliver, defer, bounce."""

from __future__ import annotations

import email
import re

from engine.gateway.queue import RcptState
from harness.world.mta.script import Script, ScriptedReply
from harness.world.mta.server import ServerCert
from tests.gateway.conftest import inject, make_gateway, texts, write_config
from tests.gateway.sim import SimWorld, factory


async def test_injected_message_is_delivered_over_verified_tls_under_enforce(sim, tmp_path):
    gw, sink = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        reply = await inject(gw, "alice@sender.example", ["bob@example.com"])
        assert re.fullmatch(r"2\.0\.0 Ok: queued as MID 1", reply)
        stats = await gw.run_once()
        await sim.mx1.settle()
    assert (stats.claimed, stats.delivered) == (1, 1)
    [msg] = sim.mx1.messages
    assert msg.tls_version in ("TLSv1.2", "TLSv1.3")
    lines = texts(sink)
    assert "MID 1 queued for delivery" in lines
    assert "Applying MTA-STS policy for the domain (example.com)" in lines
    assert "Message finished MID 1 done" in lines
    assert any(line.startswith("New SMTP ICID ") for line in lines)


async def test_message_is_durable_before_the_250(sim, tmp_path):
    gw, _ = make_gateway(sim, write_config(sim, tmp_path))
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        # Nothing delivered yet: the 250 promise rests on the queue alone.
        [row] = gw.queue.list()
        assert row.state is RcptState.QUEUED
    from engine.gateway.queue import Queue

    with Queue(tmp_path / "queue.sqlite") as q:
        assert q.message(1) is not None


async def test_relaying_is_denied_outside_the_client_networks(sim, tmp_path):
    import aiosmtplib
    import pytest

    gw, _ = make_gateway(sim, write_config(sim, tmp_path), relay_networks=("10.0.0.0/8",))
    async with gw:
        host, port = gw.listener.address
        async with aiosmtplib.SMTP(hostname=host, port=port, timeout=5.0) as client:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
                await client.sendmail("a@sender.example", ["b@example.com"], b"x\r\n")
        assert info.value.recipients[0].code == 550
        assert "5.7.1" in info.value.recipients[0].message
        assert gw.queue.list() == ()


async def test_4xx_defers_then_retries_on_the_bounce_profile_schedule(tmp_path):
    script = Script(data=ScriptedReply(451, "4.3.2 try again later"))
    async with SimWorld(tmp_path, mx1_script=script) as sim:
        gw, sink = make_gateway(sim, write_config(sim, tmp_path))
        async with gw:
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            first = await gw.run_once()
            assert first.deferred == 1
            [row] = gw.queue.list()
            assert row.next_attempt_at == sim.clock.now() + 60  # first retry after 60 s
            assert (await gw.run_once()).claimed == 0  # not due yet
            sim.clock.advance(60)
            second = await gw.run_once()
            assert second.deferred == 1
            [row] = gw.queue.list()
            assert row.next_attempt_at == sim.clock.now() + 120  # doubling
            sim.mx1.script = Script()  # the MX recovers
            sim.clock.advance(120)
            third = await gw.run_once()
            await sim.mx1.settle()
        assert third.delivered == 1
        delayed = [t for t in texts(sink) if t.startswith("Delayed:")]
        assert delayed[0].startswith(
            "Delayed: DCID 1 MID 1 From: <alice@sender.example> To: <bob@example.com> RID 0 - 4.3.2"
        )
        assert delayed[0].endswith("('451', ['4.3.2 try again later'])")
        assert len(sim.mx1.messages) == 1


async def test_bounce_at_expiry_sends_a_dsn_to_the_sender_domain(tmp_path):
    script = Script(data=ScriptedReply(451, "4.3.2 try again later"))
    async with SimWorld(tmp_path, mx1_script=script) as sim:
        extra = "[bounce_profiles.short]\nmax_queue_seconds = 300\n"
        path = write_config(sim, tmp_path, extra)
        text = path.read_text().replace(
            "mta_sts = true\n", 'mta_sts = true\nbounce_profile = "short"\n', 1
        )
        path.write_text(text)
        gw, sink = make_gateway(sim, path)
        async with gw:
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            outcomes = []
            while not outcomes or outcomes[-1][1] == 0:
                stats = await gw.run_once()
                outcomes.append((stats.deferred, stats.bounced))
                sim.clock.set(max(sim.clock.now(), gw.scheduler.next_due() or 0))
            await gw.run_once()  # the DSN goes out
            await sim.sender_mx.settle()
            original = gw.queue.message(1)
        # 60 + 120 = 180 s; the next retry (at 420 s) would fall past 300 s: bounce now.
        assert outcomes == [(1, 0), (1, 0), (0, 1)]
        assert original is not None and original.recipients[0].state is RcptState.BOUNCED
        bounced = [t for t in texts(sink) if t.startswith("Bounced:")]
        assert len(bounced) == 1
        assert "RID 0 - 5.4.7 - Delivery expired (message too old)" in bounced[0]
        [dsn] = sim.sender_mx.messages
        assert dsn.mail_from in ("", "<>")
        parsed = email.message_from_bytes(dsn.data)
        assert parsed.get_content_type() == "multipart/report"
        assert parsed.get_param("report-type") == "delivery-status"
        status = parsed.get_payload()[1].as_string()
        assert "Action: failed" in status and "Status: 5.4.7" in status
        assert "Final-Recipient: rfc822; bob@example.com" in status
        assert parsed.get_payload()[2].get_content_type() == "message/rfc822"


async def test_5xx_bounces_at_once_and_a_dsn_is_never_answered_by_a_dsn(tmp_path):
    script = Script(data=ScriptedReply(550, "5.1.1 no such user"))
    async with SimWorld(tmp_path, mx1_script=script) as sim:
        gw, sink = make_gateway(sim, write_config(sim, tmp_path))
        async with gw:
            await inject(gw, "", ["bob@example.com"])  # from the null sender
            stats = await gw.run_once()
            assert stats.bounced == 1
            assert gw.queue.list() == ()  # no DSN was queued
            await inject(gw, "alice@sender.example", ["bob@example.com"])
            await gw.run_once()  # bounce, DSN queued
            await gw.run_once()  # the DSN goes out
            await sim.sender_mx.settle()
        bounced = [t for t in texts(sink) if t.startswith("Bounced:")]
        assert "RID 0 - 5.1.1 -" in bounced[0]
        assert bounced[0].endswith("('550', ['5.1.1 no such user'])")
        assert len(sim.sender_mx.messages) == 1


async def test_oversize_message_is_refused_with_552(sim, tmp_path):
    import aiosmtplib
    import pytest

    gw, _ = make_gateway(sim, write_config(sim, tmp_path), max_message_size=1000)
    async with gw:
        host, port = gw.listener.address
        async with aiosmtplib.SMTP(hostname=host, port=port, timeout=5.0) as client:
            with pytest.raises(aiosmtplib.SMTPResponseException) as info:
                await client.sendmail("a@sender.example", ["b@example.com"], b"x" * 5000)
        assert info.value.code == 552
        assert gw.queue.list() == ()


async def test_concurrency_and_messages_per_connection_limits_hold(sim, tmp_path):
    extra = "max_concurrency = 2\nmax_messages_per_connection = 3\n"
    gw, _ = make_gateway(sim, write_config(sim, tmp_path, extra))
    async with gw:
        for _ in range(10):
            await inject(gw, "alice@sender.example", ["bob@example.com"])
        groups = gw.scheduler._groups("example.com", {m: (0,) for m in range(1, 11)})
        assert [len(g) for g in groups] == [3, 3, 3, 1]
        real, live, peak = gw.engine.deliver_many, [0], [0]

        async def counting(*args, **kwargs):
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            try:
                return await real(*args, **kwargs)
            finally:
                live[0] -= 1

        gw.engine.deliver_many = counting
        stats = await gw.run_once()
        await sim.mx1.settle()
    assert stats.delivered == 10
    assert len(sim.mx1.messages) == 10
    assert peak[0] == 2  # max_concurrency for the domain
    # CISCO 118548: each group of up to max_messages_per_connection shares one connection.
    per_session = sorted(len(s.transactions) for s in sim.mx1.sessions if s.transactions)
    assert per_session == [1, 3, 3, 3]


def _short_profile_config(sim, tmp_path):
    path = write_config(sim, tmp_path, "[bounce_profiles.short]\nmax_queue_seconds = 300\n")
    text = path.read_text().replace(
        "mta_sts = true\n", 'mta_sts = true\nbounce_profile = "short"\n', 1
    )
    path.write_text(text)
    return path


def _outcome_events(sink, code):
    return [e.fields for e in sink.events if e.code == code and e.fields["mid"] == 1]


async def test_delayed_and_expiry_bounced_events_carry_the_result_type(sim, tmp_path):
    # The JSON log of a Delayed:/Bounced: line names the RFC 8460 result type, as the
    # engine's own outcome events do (the gateway's used to leave it out).
    wrong = factory().issue("other.example")
    sim.mx1.rotate_cert(ServerCert(wrong.chain_pem, wrong.private_key_pem))
    gw, sink = make_gateway(sim, _short_profile_config(sim, tmp_path))
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        bounced = 0
        while not bounced:  # 60 s, 120 s, then the retry at 420 s falls past 300 s
            bounced = (await gw.run_once()).bounced
            sim.clock.set(max(sim.clock.now(), gw.scheduler.next_due() or 0))
    delayed = _outcome_events(sink, "delivery.delayed")
    [expired] = _outcome_events(sink, "delivery.bounced")
    assert len(delayed) == 2
    assert {d["result_type"] for d in delayed} == {"certificate-host-mismatch"}
    assert expired["enhanced"] == "5.4.7"
    assert expired["result_type"] == "certificate-host-mismatch"


async def test_bounce_found_expired_without_an_attempt_keeps_the_last_result_type(sim, tmp_path):
    wrong = factory().issue("other.example")
    sim.mx1.rotate_cert(ServerCert(wrong.chain_pem, wrong.private_key_pem))
    gw, sink = make_gateway(sim, _short_profile_config(sim, tmp_path))
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        assert (await gw.run_once()).deferred == 1
        sim.clock.advance(3600)  # downtime: past the 300 s in queue before the retry
        assert (await gw.run_once()).bounced == 1
    [expired] = _outcome_events(sink, "delivery.bounced")
    assert (expired["dcid"], expired["enhanced"]) == (0, "5.4.7")
    assert expired["result_type"] == "certificate-host-mismatch"
