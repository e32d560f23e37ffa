"""DSN content (RFC 3464 / RFC 6522): the original under 10 KB, else its headers.

See docs/gateway-behaviour.md §4.
"""

from __future__ import annotations

import email
import email.utils
import re

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
        # Owed until the round ends: still leased, so a crash now retries it (never lost).
        assert queue.message(mid).recipients[0].state is RcptState.INFLIGHT and woken == []
        assert settler.flush() == [mid]
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


def _status_blocks(data: bytes) -> list[email.message.Message]:
    """The message/delivery-status header blocks, as the stdlib parser reads them."""
    part = email.message_from_bytes(data).get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    return part.get_payload()


def test_date_fields_are_utc_with_a_numeric_zone_never_gmt():
    # RFC 5322 §3.3: "GMT" is obsolete syntax a generator must not produce; -0000
    # means "zone unknown". The DSN's Date and its *-Date fields say +0000.
    msg = dsn(b"Subject: hi\r\n\r\nbody\r\n")
    assert msg["Date"] == "Thu, 01 Jan 1970 00:03:20 +0000"
    per_message, per_rcpt = msg.get_payload()[1].get_payload()
    assert per_message["Arrival-Date"] == "Thu, 01 Jan 1970 00:01:40 +0000"
    assert per_rcpt["Last-Attempt-Date"] == "Thu, 01 Jan 1970 00:03:20 +0000"
    for value in (msg["Date"], per_message["Arrival-Date"], per_rcpt["Last-Attempt-Date"]):
        assert email.utils.parsedate_to_datetime(value).utcoffset().total_seconds() == 0


def test_dsn_has_a_message_id_unique_per_dsn():
    # RFC 5322 §3.6.4: every message SHOULD have one; two DSNs never share it.
    first = dsn(b"Subject: hi\r\n\r\nbody\r\n")
    other = email.message_from_bytes(
        build_dsn(
            original=b"Subject: hi\r\n\r\nbody\r\n",
            mail_from="alice@sender.example",
            recipients=[RCPT, DsnRecipient("c@example.com", DsnAction.FAILED, "5.1.1", "x")],
            reporting_mta="gw.example",
            arrival=100.0,
            now=200.0,
            mid=7,
        )
    )
    for msg in (first, other):
        assert re.fullmatch(r"<[^<>@\s]+@gw\.example>", msg["Message-ID"])
    assert first["Message-ID"] != other["Message-ID"]


def test_diagnostic_code_smtp_only_for_a_remote_reply_the_engine_own_is_x_typed():
    # RFC 3464 §2.3.6: "smtp" is a diagnostic an SMTP server sent; the engine's own
    # reason (here a TLS failure, no reply at all) gets a private X- type.
    remote = DsnRecipient(
        "bob@example.com",
        DsnAction.FAILED,
        "5.1.1",
        "550 5.1.1 no such user",
        "mx1.example.com",
        200.0,
        "550 5.1.1 no such user",
    )
    ours = DsnRecipient(
        "carol@example.net",
        DsnAction.FAILED,
        "5.0.0",
        "TLS was required but the certificate of mx.example.net names another host " * 2,
    )
    data = build_dsn(
        original=b"Subject: hi\r\n\r\n",
        mail_from="alice@sender.example",
        recipients=[remote, ours],
        reporting_mta="gw.example",
        arrival=100.0,
        now=200.0,
        mid=7,
    )
    _per_message, first, second = _status_blocks(data)
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    diag = " ".join(second["Diagnostic-Code"].split())
    assert diag.startswith("X-Engine; TLS was required but the certificate")
    assert "Last-Attempt-Date" not in second  # no attempt time given: no field
    status_part = data.split(b"message/delivery-status\r\n\r\n")[1].split(b"\r\n--dsn-")[0]
    assert max(len(line) for line in status_part.split(b"\r\n")) <= 78  # folded


def test_a_dsn_reports_one_action_and_non_ascii_addresses_stay_ascii():
    import pytest

    from engine.gateway.dsn import dsn_address

    with pytest.raises(ValueError, match="one action"):
        build_dsn(
            original=b"x",
            mail_from="a@b.example",
            recipients=[RCPT, DsnRecipient("c@d.example", DsnAction.DELAYED, "4.0.0", "later")],
            reporting_mta="gw.example",
            arrival=1.0,
            now=2.0,
            mid=1,
        )
    # RFC 6533 §3: a UTF-8 address as utf-8-addr-xtext, so the status part stays ASCII.
    assert dsn_address("bob@example.com") == "rfc822; bob@example.com"
    assert dsn_address("jörg+x@example.com") == "utf-8; j\\x{F6}rg\\x{2B}x@example.com"


def test_expiry_without_a_new_attempt_has_no_last_attempt_date_at_the_expiry_time(tmp_path):
    # RFC 3464 §2.3.7: Last-Attempt-Date is the last attempt actually made. A recipient
    # found expired (two attempts, then downtime) bounces without one: the field is
    # absent, never the expiry's own time. With a single attempt its time is known.
    from engine.core.clock import ManualClock
    from engine.core.events import ListSink
    from engine.core.retry import BounceProfile
    from engine.delivery.attempt import RecipientResult
    from engine.gateway.queue import Queue
    from engine.gateway.scheduler_outcome import Settler

    profile = BounceProfile()
    with Queue(tmp_path / "q.sqlite") as queue:
        settler = Settler(queue, ManualClock(10_000.0), ListSink(), "gw.example")
        mids = []
        for attempts in (1, 2):
            mid, _ = queue.enqueue("alice@sender.example", ["bob@example.com"], b"S: x\r\n", 1.0)
            mids.append(mid)
            for n in range(attempts):
                queue.claim_due(1e9, limit=10, lease_seconds=60.0)
                msg = queue.message(mid)
                res = RecipientResult(0, "bob@example.com", "deferred", "mx1", reply="451 later")
                settler.settle_result(msg, msg.recipients[0], res, profile, 100.0 + n)
        queue.claim_due(1e9, limit=10, lease_seconds=60.0)
        for mid in mids:
            msg = queue.message(mid)
            settler.settle_expired(msg, msg.recipients[0], 9_000_000.0)
        settler.flush()
        dsns = [queue.message(m) for m in range(mids[-1] + 1, mids[-1] + 3)]
    one, two = (_status_blocks(d.data)[1] for d in dsns)
    assert one["Last-Attempt-Date"] == "Thu, 01 Jan 1970 00:01:40 +0000"  # its one attempt
    assert "Last-Attempt-Date" not in two
    assert " ".join(two["Diagnostic-Code"].split()).startswith(
        "X-Engine; Delivery expired (message too old): 451 later"
    )
