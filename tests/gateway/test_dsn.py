"""DSN content (RFC 3464 / RFC 6522): the original under 10 KB, else its headers.

See docs/gateway-behaviour.md §4.
"""

from __future__ import annotations

import email

from engine.delivery.agent import outcome_fields
from engine.gateway.dsn import DsnAction, DsnRecipient, build_dsn, dsn_wanted

RCPT = DsnRecipient(
    "bob@example.com", DsnAction.FAILED, "5.1.1", "550 5.1.1 no such user", "mx1.example.com", 200.0
)


def dsn(original: bytes) -> email.message.Message:
    data = build_dsn(
        original=original,
        mail_from="alice@sender.example",
        recipients=[RCPT],
        reporting_mta="gw.example",
        arrival=100.0,
        now=200.0,
        mid=7,
    )
    return email.message_from_bytes(data)


def test_small_original_is_returned_whole():
    msg = dsn(b"Subject: hi\r\n\r\nbody\r\n")
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    _text, status, original = msg.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    fields = status.as_string()
    assert "Reporting-MTA: dns; gw.example" in fields
    assert "Final-Recipient: rfc822; bob@example.com" in fields
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert "Remote-MTA: dns; mx1.example.com" in fields
    assert original.get_content_type() == "message/rfc822"


def test_original_of_10_kb_or_more_is_returned_as_headers_only():
    big = b"Subject: big\r\n\r\n" + b"x" * 10_240 + b"\r\n"
    third = dsn(big).get_payload()[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert b"xxxx" not in third.as_bytes()


def test_no_dsn_for_the_null_sender_and_enhanced_codes_from_replies():
    assert not dsn_wanted("") and not dsn_wanted("<>") and dsn_wanted("a@b.example")
    assert outcome_fields("deferred", "421 4.3.2 try later", "x")["enhanced"] == "4.3.2"
    assert outcome_fields("deferred", "451 later", "x")["enhanced"] == "4.0.0"
    assert outcome_fields("bounced", "550 5.1.1 no such user", "x")["reason"] == "no such user"
    assert outcome_fields("bounced", None, "x")["enhanced"] == "5.0.0"


def test_settler_bounces_an_expired_recipient_and_queues_a_dsn_without_a_scheduler(tmp_path):
    # Settling takes the queue, clock, sink, host name and wake-up it uses, nothing more.
    from engine.core.clock import ManualClock
    from engine.core.events import ListSink
    from engine.gateway.queue import Queue, RcptState
    from engine.gateway.scheduler_outcome import EXPIRED_STATUS, Settler

    queue, sink, woken = Queue(tmp_path / "q.sqlite"), ListSink(), []
    try:
        mid, _ = queue.enqueue(
            "alice@sender.example", ["bob@example.com"], b"Subject: x\r\n\r\n", 1.0
        )
        queue.claim_due(1.0, limit=10, lease_seconds=60.0)
        msg = queue.message(mid)
        assert msg is not None
        settler = Settler(queue, ManualClock(5.0), sink, "gw.example", woken.append)
        assert settler.settle_expired(msg, msg.recipients[0], 5.0) == "bounced"
        [dsn_mid] = woken
        assert queue.message(mid).recipients[0].state is RcptState.BOUNCED
        dsn_msg = queue.message(dsn_mid)
        assert dsn_msg.mail_from == "" and dsn_msg.recipients[0].rcpt == "alice@sender.example"
        assert b"Reporting-MTA: dns; gw.example" in dsn_msg.data
        bounced = next(e for e in sink.events if e.code == "delivery.bounced")
        assert bounced.fields["enhanced"] == EXPIRED_STATUS
        assert [e.code for e in sink.events] == ["delivery.bounced", "dsn.sent", "message.queued"]
    finally:
        queue.close()
