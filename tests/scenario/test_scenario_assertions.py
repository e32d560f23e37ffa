"""Expectation matching: subsequences, regex fields, and messages that show the closest events."""

from __future__ import annotations

from typing import Any

import pytest

from harness.scenario.assertions import check, closest_events, field_matches, lookup
from harness.scenario.model import EventPattern, Expect, ExpectedOutcome, Verification
from harness.scenario.observation import (
    DeliveryRecord,
    DnsRecord,
    EventRecord,
    FetchRecord,
    SessionRecord,
    StepObservation,
    WorldSlice,
)


def ev(code: str, **fields: Any) -> EventRecord:
    return EventRecord(code, fields, "info", 0.0, 0.0, f"{code} line")


def obs(*events: EventRecord, **kw: Any) -> StepObservation:
    return StepObservation(0, "step", events=events, lines=tuple(e.line for e in events), **kw)


def session(mx: str, *, delivered: int = 0, transactions: int = 0, **kw: Any) -> SessionRecord:
    base: dict[str, Any] = dict(
        at=0.0,
        end=1.0,
        mx=mx,
        starttls_offered=True,
        starttls_attempted=True,
        tls_version="TLSv1.3",
        cipher="X",
        sni=mx,
        tls_error=None,
        transactions=max(transactions, delivered),
        delivered=delivered,
        in_clear=False,
        commands=("EHLO",),
        ended="quit",
    )
    base.update(kw)
    return SessionRecord(**base)


EVENTS = (
    ev("sts.txt.found", domain="example.com", txt_id="A1"),
    ev("sts.fetch.start", domain="example.com"),
    ev("sts.fetch.failed", domain="example.com", kind="timeout", detail="read timeout after 1s"),
    ev("tls.session", failures=[{"result_type": "sts-policy-fetch-error"}]),
    ev("delivery.delayed", rid=0),
)


def test_events_match_as_an_ordered_subsequence() -> None:
    x = Expect(events=(EventPattern("sts.txt.found"), EventPattern("sts.fetch.failed")))
    assert check(x, [obs(*EVENTS)]) == []
    backwards = Expect(events=(EventPattern("sts.fetch.failed"), EventPattern("sts.txt.found")))
    [m] = check(backwards, [obs(*EVENTS)])
    assert m.key == "events[1]"
    assert "out of order: #0" in m.seen
    assert m.closest == ("#0 sts.txt.found: matches, but out of order",)


def test_fields_match_by_equality_regex_and_dotted_paths() -> None:
    x = Expect(
        events=(
            EventPattern("~^sts\\.fetch\\.fail", {"detail": "~timeout", "domain": "example.com"}),
            EventPattern("tls.session", {"failures.0.result_type": "sts-policy-fetch-error"}),
        )
    )
    assert check(x, [obs(*EVENTS)]) == []
    assert field_matches([1, 2], (1, 2)) and field_matches(3, 3.0)
    assert not field_matches("~x", lookup({}, "missing"))
    assert field_matches("~^$", None)
    assert lookup({"a": [{"b": 1}]}, "a.0.b") == 1


def test_missing_event_shows_same_code_with_the_differing_fields() -> None:
    x = Expect(
        events=(EventPattern("sts.fetch.failed", {"kind": "status", "domain": "example.com"}),)
    )
    [m] = check(x, [obs(*EVENTS)])
    assert m.expected == "{code = 'sts.fetch.failed', kind = 'status', domain = 'example.com'}"
    assert m.seen == "no matching event in this scope"
    assert m.closest == ("#2 sts.fetch.failed: kind='timeout' (expected 'status')",)
    text = m.render()
    assert "expected: {code = 'sts.fetch.failed'" in text and "closest:" in text


def test_missing_event_with_unknown_code_shows_similar_codes() -> None:
    near = closest_events(EventPattern("sts.fetch.fail"), EVENTS)
    assert near[0].startswith("#2 sts.fetch.failed {")
    assert any(n.startswith("#1 sts.fetch.start") for n in near)
    far = closest_events(EventPattern("zzz"), EVENTS)
    assert far[0].startswith("(no similar codes; codes seen: sts.txt.found")


def test_no_events_lists_what_happened() -> None:
    [m] = check(Expect(no_events=(EventPattern("delivery.delayed"),)), [obs(*EVENTS)])
    assert m.key == "no_events[0]" and m.closest == ("#4 delivery.delayed {rid=0}",)


def test_logs_are_an_ordered_subsequence_of_regexes() -> None:
    o = obs(*EVENTS)
    assert check(Expect(logs=(r"^sts\.txt", r"fetch\.failed line$")), [o]) == []
    [m] = check(Expect(logs=(r"fetch\.failed", r"sts\.txt")), [o])
    assert m.key == "logs[1]" and "after line #2" in m.seen
    assert any("sts.txt.found line" in c for c in m.closest)


def test_outcome_via_tls_verified_sni() -> None:
    o = obs(
        deliveries=(
            DeliveryRecord(1, "a@example.com", "delivered", "mx2.example.com", "TLSv1.3", "pkix"),
            DeliveryRecord(1, "b@example.com", "deferred", None, reason="no", result_type="x"),
        ),
        world=WorldSlice(
            sessions=(session("mx1.example.com"), session("mx2.example.com", delivered=1))
        ),
    )
    good = Expect(
        outcome={
            "a@example.com": ExpectedOutcome.DELIVERED,
            "b@example.com": ExpectedOutcome.DEFERRED,
        },
        via="mx2.example.com",
        tls="TLSv1.3",
        verified=Verification.PKIX,
        sni="mx2.example.com",
        no_transaction=("mx1.example.com",),
        in_clear=False,
    )
    assert check(good, [o]) == []
    bad = Expect(
        outcome=ExpectedOutcome.DELIVERED,
        via="mx1.example.com",
        tls="none",
        verified=Verification.DANE,
        sni={"mx1.example.com": "other"},
        no_transaction=("mx2.example.com",),
        in_clear=True,
    )
    keys = [m.key for m in check(bad, [o])]
    assert keys == [
        "outcome.b@example.com",
        "via",
        "tls",
        "verified",
        "no_transaction.mx2.example.com",
        "in_clear",
        "sni.mx1.example.com",
    ]


def test_outcome_without_a_send_is_a_mismatch() -> None:
    [m] = check(Expect(outcome=ExpectedOutcome.DELIVERED), [obs()])
    assert m.seen == "no message was sent"


def test_fetches_and_queries_count() -> None:
    world = WorldSlice(
        dns=(
            DnsRecord(0, "_mta-sts.example.com", "TXT", "NOERROR", False, (), None),
            DnsRecord(0, "example.com", "MX", "NOERROR", False, (), None),
        ),
        fetches=(
            FetchRecord(0, "mta-sts.example.com", "mta-sts.example.com", "GET", "/p", "serve 200"),
        ),
    )
    o = obs(world=world)
    assert (
        check(Expect(fetches=1, queries={"_mta-sts.example.com TXT": 1, "example.com": 1}), [o])
        == []
    )
    ms = check(Expect(fetches={"mta-sts.example.com": 2}, queries={"example.com A": 1}), [o])
    assert [m.key for m in ms] == ["fetches.mta-sts.example.com", "queries.'example.com A'"]
    assert ms[0].closest == (
        "GET https://mta-sts.example.com/p SNI=mta-sts.example.com -> serve 200",
    )
    assert ms[1].closest == ("example.com MX -> NOERROR",)


@pytest.mark.parametrize("value", [0, False])
def test_falsy_expectations_are_still_checked(value: Any) -> None:
    o = obs(
        world=WorldSlice(
            fetches=(FetchRecord(0, "h", None, "GET", "/", "404"),),
            sessions=(session("mx", in_clear=True),),
        )
    )
    key = "fetches" if value == 0 and value is not False else "in_clear"
    assert [m.key for m in check(Expect(**{key: value}), [o])] == [key]


def test_scope_spans_several_observations() -> None:
    x = Expect(events=(EventPattern("sts.txt.found"), EventPattern("delivery.delayed")))
    assert check(x, [obs(EVENTS[0]), obs(EVENTS[4])]) == []


def test_faults_must_have_been_recorded_at_the_host() -> None:
    mx1 = session("mx1.example.com", faults=("banner: reset",))
    mx2 = session("mx2.example.com", faults=("mail: 451 4.3.0 later",))
    o = obs(world=WorldSlice(sessions=(mx1, mx2)))
    good = {"mx1.example.com": ("banner: reset",), "mx2.example.com": ("~^mail: 4\\d\\d",)}
    assert check(Expect(faults=good), [o]) == []
    bad = {"mx1.example.com": ("mail: reset",), "mx3.example.com": ("~.",)}
    found = check(Expect(faults=bad), [o])
    assert [(m.key, m.seen) for m in found] == [
        ("faults.mx1.example.com", "banner: reset"),
        ("faults.mx3.example.com", "no fault recorded there"),
    ]
