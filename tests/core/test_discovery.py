"""The discovery state machine (engine/core/discovery.py), driven by a tiny loop."""

from __future__ import annotations

import pytest

from engine.core.cache import (
    CachedPolicy,
    DecisionReason,
    MemoryPolicyStore,
    TxtAbsent,
    TxtFound,
    TxtInvalid,
    TxtOutcome,
    TxtTempError,
    on_fetch_failure,
    on_fetch_success,
)
from engine.core.discovery import (
    DiscoveryResult,
    DiscoveryState,
    Done,
    FetchErrorKind,
    FetchFailed,
    FetchOk,
    FetchOutcome,
    NeedFetch,
    NeedTxt,
    PolicyDiscovery,
    PolicySource,
    Trigger,
    is_policy_media_type,
    save_result,
)
from engine.core.errors import StateError
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.core.txt import NoStsReason, NoStsRecord, StsRecord
from engine.logs import render_text

T0 = 1_767_225_600.0
DOMAIN = "example.com"
URL = "https://mta-sts.example.com/.well-known/mta-sts.txt"


def body(mode: str = "enforce", max_age: int = 86_400) -> bytes:
    mx = "mx: mx1.example.com\r\nmx: mx2.example.com\r\n"
    return f"version: STSv1\r\nmode: {mode}\r\n{mx}max_age: {max_age}\r\n".encode()


def ok(mode: str = "enforce", max_age: int = 86_400) -> FetchOk:
    return FetchOk(body(mode, max_age), "text/plain")


def found(txt_id: str) -> TxtFound:
    return TxtFound(StsRecord(id=txt_id))


def entry(txt_id: str = "A1", *, mode: Mode = Mode.ENFORCE, at: float = T0) -> CachedPolicy:
    policy = Policy(mode=mode, max_age=86_400, mx=(MxPattern("mx2.example.com"),))
    return on_fetch_success(DOMAIN, policy, txt_id, at)


def drive(
    machine: PolicyDiscovery, txt: TxtOutcome | None = None, fetch: FetchOutcome | None = None
) -> tuple[DiscoveryResult, list[NeedTxt | NeedFetch]]:
    """Answer the machine's requests; fail loudly on one the test did not expect."""
    asked: list[NeedTxt | NeedFetch] = []
    while True:
        action = machine.next_action()
        if isinstance(action, Done):
            return action.result, asked
        asked.append(action)
        answer = txt if isinstance(action, NeedTxt) else fetch
        assert answer is not None, f"unexpected request {action!r}"
        machine.receive(answer)


def codes(result: DiscoveryResult) -> list[str]:
    return [e.code for e in result.events]


def event(result: DiscoveryResult, code: str) -> dict[str, object]:
    (match,) = [e for e in result.events if e.code == code]
    return dict(match.fields)


FAILURES = [
    (FetchErrorKind.DNS, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.CONNECT, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.TLS, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.STATUS, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.REDIRECT, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.TIMEOUT, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.OVERSIZE, ResultType.STS_POLICY_FETCH_ERROR),
    (FetchErrorKind.CERTIFICATE, ResultType.STS_WEBPKI_INVALID),
    (FetchErrorKind.MEDIA_TYPE, ResultType.STS_POLICY_INVALID),
    (FetchErrorKind.BODY, ResultType.STS_POLICY_INVALID),
]


# --- discovery and fetch ----------------------------------------------------------


def test_disc_1_fetch_1_asks_for_txt_then_the_well_known_url() -> None:
    machine = PolicyDiscovery(DOMAIN, T0)
    assert machine.next_action() == NeedTxt("_mta-sts.example.com")
    assert machine.next_action() == NeedTxt("_mta-sts.example.com")  # idempotent
    machine.receive(found("A1"))
    assert machine.state is DiscoveryState.NEED_FETCH
    assert machine.next_action() == NeedFetch(URL, "mta-sts.example.com", "A1")


def test_disc_1_fetched_policy_is_applied_and_stored() -> None:
    result, asked = drive(PolicyDiscovery(DOMAIN, T0), found("A1"), ok())
    assert [type(a) for a in asked] == [NeedTxt, NeedFetch]
    assert result.source is PolicySource.FETCHED and result.active
    assert result.policy is not None and result.policy.mode is Mode.ENFORCE
    assert result.new_entry == CachedPolicy(DOMAIN, result.policy, "A1", T0)
    assert result.failure is None and result.reason is None
    assert codes(result) == ["sts.txt.found", "sts.fetch.start", "sts.policy.fetched"]
    assert event(result, "sts.policy.fetched") == {
        "domain": DOMAIN,
        "txt_id": "A1",
        "mode": "enforce",
        "max_age": 86_400,
        "expires_at": T0 + 86_400,
        "cached": True,
    }


def test_seed_lines_render_verbatim_from_the_events() -> None:
    fetched, _ = drive(
        PolicyDiscovery(DOMAIN, T0), found("A1"), FetchFailed(FetchErrorKind.TIMEOUT)
    )
    hit, _ = drive(PolicyDiscovery(DOMAIN, T0, cached=entry()), found("A1"))
    lines = [render_text(e) for e in (*fetched.events, *hit.events)]
    assert lines[:4] == [
        "Successfully fetched MTA-STS TXT record for domain(example.com)",
        "Fetch MTA-STS policy for the domain (example.com)",
        "STS policy fetch request failed due to connection timeout., for the domain example.com",
        "Failure encountered while fetching MTA-STS policy for the domain (example.com)",
    ]
    assert lines[-1] == "Valid cache entry found for the domain (example.com)."


def test_events_carry_time_domain_and_level() -> None:
    machine = PolicyDiscovery(DOMAIN, T0, cached=entry())
    machine.receive(found("A2"), now=T0 + 5)
    result, _ = drive(machine, fetch=FetchFailed(FetchErrorKind.STATUS, "HTTP 503"))
    assert all(e.at == T0 + 5 and e.fields["domain"] == DOMAIN for e in result.events)
    levels = {e.code: e.level for e in result.events}
    assert levels == {
        "sts.txt.found": "info",
        "sts.fetch.start": "debug",
        "sts.fetch.failed": "info",
        "sts.cache.valid": "debug",
    }


def test_debug_false_leaves_out_debug_events_and_nothing_else() -> None:
    full = PolicyDiscovery(DOMAIN, T0, cached=entry())
    full.receive(found("A2"))
    lean = PolicyDiscovery(DOMAIN, T0, cached=entry(), debug=False)
    lean.receive(found("A2"))
    failed = FetchFailed(FetchErrorKind.STATUS, "HTTP 503")
    with_debug, _ = drive(full, fetch=failed)
    without, _ = drive(lean, fetch=failed)
    assert [e for e in with_debug.events if e.level != "debug"] == list(without.events)
    assert codes(without) == ["sts.txt.found", "sts.fetch.failed"]
    assert without.policy == with_debug.policy and without.source is with_debug.source


def test_cache_5_unchanged_id_applies_cache_without_fetch() -> None:
    cached = entry("A1")
    result, asked = drive(PolicyDiscovery(DOMAIN, T0 + 60, cached=cached), found("A1"))
    assert asked == [NeedTxt("_mta-sts.example.com")]
    assert result.source is PolicySource.CACHE and result.used_entry == cached
    assert result.reason is DecisionReason.ID_UNCHANGED and result.new_entry is None
    assert codes(result) == ["sts.txt.found", "sts.cache.valid"]


def test_cache_4_new_id_fetches_and_replaces() -> None:
    result, asked = drive(
        PolicyDiscovery(DOMAIN, T0 + 60, cached=entry("A1")), found("A2"), ok(max_age=600)
    )
    assert isinstance(asked[-1], NeedFetch) and asked[-1].txt_id == "A2"
    assert result.source is PolicySource.FETCHED
    assert result.new_entry is not None and result.new_entry.txt_id == "A2"
    assert result.new_entry.expires_at == T0 + 60 + 600  # CACHE-11: shorter max_age wins


@pytest.mark.parametrize(("kind", "result_type"), FAILURES)
def test_cache_6_failed_fetch_keeps_applying_the_cache(
    kind: FetchErrorKind, result_type: ResultType
) -> None:
    cached = entry("A1")
    machine = PolicyDiscovery(DOMAIN, T0 + 60, cached=cached)
    result, _ = drive(machine, found("A2"), FetchFailed(kind, "boom"))
    assert result.source is PolicySource.CACHE and result.policy == cached.policy
    assert result.reason is DecisionReason.FETCH_FAILED and result.new_entry is None
    assert result.failure == on_fetch_failure(
        DOMAIN, "A2", T0 + 60, result_type=result_type, detail="boom"
    )
    failed = event(result, "sts.fetch.failed")
    assert failed["result_type"] == str(result_type) and failed["kind"] == str(kind)


@pytest.mark.parametrize(("kind", "result_type"), FAILURES)
def test_fetch_14_failure_without_cache_means_no_policy(
    kind: FetchErrorKind, result_type: ResultType
) -> None:
    result, _ = drive(PolicyDiscovery(DOMAIN, T0), found("A1"), FetchFailed(kind))
    assert result.source is PolicySource.NONE and result.policy is None and not result.active
    assert result.failure is not None and result.failure.result_type is result_type
    assert event(result, "sts.policy.none")["reason"] == "fetch-failed"


def test_fetch_13_only_timeouts_emit_the_timeout_line() -> None:
    timeout, _ = drive(
        PolicyDiscovery(DOMAIN, T0), found("A1"), FetchFailed(FetchErrorKind.TIMEOUT)
    )
    status, _ = drive(PolicyDiscovery(DOMAIN, T0), found("A1"), FetchFailed(FetchErrorKind.STATUS))
    assert codes(timeout).index("sts.fetch.timeout") + 1 == codes(timeout).index("sts.fetch.failed")
    assert "sts.fetch.timeout" not in codes(status)


ACCEPTED_TYPES = ["text/plain", "Text/Plain", "TEXT/PLAIN", "text/plain; charset=utf-8"]
ACCEPTED_TYPES += ["text/plain;charset=us-ascii", "text/plain; format=flowed", " text/plain "]
REJECTED_TYPES = [None, "", "text/html", "application/octet-stream", "text/plainx", "text"]


@pytest.mark.parametrize("content_type", ACCEPTED_TYPES)
def test_fetch_11_text_plain_with_any_parameters_is_accepted(content_type: str) -> None:
    assert is_policy_media_type(content_type)
    result, _ = drive(PolicyDiscovery(DOMAIN, T0), found("A1"), FetchOk(body(), content_type))
    assert result.source is PolicySource.FETCHED


@pytest.mark.parametrize("content_type", REJECTED_TYPES)
def test_fetch_11_amb_12_other_or_missing_media_type_is_invalid(content_type: str | None) -> None:
    assert not is_policy_media_type(content_type)
    result, _ = drive(PolicyDiscovery(DOMAIN, T0), found("A1"), FetchOk(body(), content_type))
    assert result.source is PolicySource.NONE
    assert result.failure is not None
    assert result.failure.result_type is ResultType.STS_POLICY_INVALID


@pytest.mark.parametrize(
    "bad_body",
    [b"", b"version: STSv1\r\nmode: enforce\r\nmx: bad..name\r\nmax_age: 60\r\n", b"\xff\xfe"],
)
def test_pol_15_invalid_body_is_never_applied(bad_body: bytes) -> None:
    cached = entry("A1")
    machine = PolicyDiscovery(DOMAIN, T0 + 1, cached=cached)
    result, _ = drive(machine, found("A2"), FetchOk(bad_body, "text/plain"))
    assert result.source is PolicySource.CACHE and result.policy == cached.policy
    assert result.failure is not None
    assert result.failure.result_type is ResultType.STS_POLICY_INVALID
    assert event(result, "sts.fetch.failed")["kind"] == "body"


def test_cache_9_fetched_mode_none_replaces_and_deactivates() -> None:
    machine = PolicyDiscovery(DOMAIN, T0 + 1, cached=entry("A1"))
    result, _ = drive(machine, found("A2"), ok(mode="none"))
    assert result.source is PolicySource.FETCHED and not result.active
    assert result.new_entry is not None and result.new_entry.policy.mode is Mode.NONE


def test_amb_13_max_age_zero_applies_to_this_attempt_only() -> None:
    store = MemoryPolicyStore()
    store.put(entry("A1"))
    first, _ = drive(PolicyDiscovery.from_store(store, DOMAIN, T0 + 1), found("A2"), ok(max_age=0))
    assert first.source is PolicySource.FETCHED and first.active
    assert event(first, "sts.policy.fetched")["cached"] is False
    save_result(store, first)
    second, _ = drive(PolicyDiscovery.from_store(store, DOMAIN, T0 + 2), TxtAbsent())
    assert second.source is PolicySource.NONE  # CACHE-11: A1 is not resurrected


# --- TXT outcomes without a record --------------------------------------------------

NO_RECORD: list[tuple[TxtOutcome, str, DecisionReason]] = [
    (TxtAbsent("NXDOMAIN"), "sts.txt.absent", DecisionReason.TXT_ABSENT),
    (TxtTempError("SERVFAIL"), "sts.txt.temperror", DecisionReason.TXT_TEMPERROR),
    (
        TxtInvalid(NoStsRecord(NoStsReason.MULTIPLE, "2 records")),
        "sts.txt.invalid",
        DecisionReason.TXT_INVALID,
    ),
]


@pytest.mark.parametrize(("txt", "code", "reason"), NO_RECORD)
def test_cache_2_cache_3_no_record_keeps_the_cached_policy(
    txt: TxtOutcome, code: str, reason: DecisionReason
) -> None:
    cached = entry("A1")
    result, asked = drive(PolicyDiscovery(DOMAIN, T0 + 1, cached=cached), txt)
    assert len(asked) == 1 and result.source is PolicySource.CACHE
    assert result.used_entry == cached and result.reason is reason and result.txt == txt
    assert codes(result) == [code, "sts.cache.valid"]


@pytest.mark.parametrize(("txt", "code", "reason"), NO_RECORD)
def test_disc_11_amb_10_no_record_and_no_cache_means_no_policy(
    txt: TxtOutcome, code: str, reason: DecisionReason
) -> None:
    result, _ = drive(PolicyDiscovery(DOMAIN, T0), txt)
    assert result.source is PolicySource.NONE and result.failure is None
    assert codes(result) == [code, "sts.policy.none"]
    assert event(result, "sts.policy.none")["reason"] == str(reason)


def test_disc_5_invalid_txt_event_names_the_reason() -> None:
    result, _ = drive(PolicyDiscovery(DOMAIN, T0), NO_RECORD[2][0])
    assert event(result, "sts.txt.invalid")["reason"] == "multiple-records"


def test_cache_10_expired_cache_is_neither_used_nor_a_fallback() -> None:
    machine = PolicyDiscovery(DOMAIN, T0 + 86_400, cached=entry("A1"))
    result, _ = drive(machine, found("A1"), FetchFailed(FetchErrorKind.CONNECT))
    assert result.source is PolicySource.NONE


# --- FETCH-15 and APPLY-6 ----------------------------------------------------------------


def test_fetch_15_no_second_fetch_of_a_failed_id_within_five_minutes() -> None:
    store = MemoryPolicyStore()
    fetches = 0
    for t in range(0, 240, 12):  # 20 messages in 4 minutes, host answering 503
        machine = PolicyDiscovery.from_store(store, DOMAIN, T0 + t)
        result, asked = drive(machine, found("A1"), FetchFailed(FetchErrorKind.STATUS, "503"))
        save_result(store, result)
        fetches += sum(isinstance(a, NeedFetch) for a in asked)
        assert result.source is PolicySource.NONE
    assert fetches == 1
    # AMB-34: a new id is fetched at once.
    result, _ = drive(PolicyDiscovery.from_store(store, DOMAIN, T0 + 241), found("A2"), ok())
    assert result.source is PolicySource.FETCHED


def test_apply_6_recheck_fetches_a_new_id_despite_the_throttle() -> None:
    failure = on_fetch_failure(DOMAIN, "A2", T0, result_type=ResultType.STS_POLICY_FETCH_ERROR)

    def machine(recheck: bool) -> PolicyDiscovery:
        cached = entry("A1")
        return PolicyDiscovery(
            DOMAIN, T0 + 60, cached=cached, last_failure=failure, recheck=recheck
        )

    normal, _ = drive(machine(False), found("A2"))
    assert normal.reason is DecisionReason.FETCH_THROTTLED
    result, asked = drive(machine(True), found("A2"), ok())
    assert [type(a) for a in asked] == [NeedTxt, NeedFetch]
    assert result.trigger is Trigger.RECHECK and result.source is PolicySource.FETCHED
    assert event(result, "sts.fetch.start")["trigger"] == "recheck"


def test_apply_6_recheck_with_unchanged_id_queries_txt_and_keeps_cache() -> None:
    machine = PolicyDiscovery(DOMAIN, T0 + 60, cached=entry("A1"), recheck=True)
    result, asked = drive(machine, found("A1"))
    assert asked == [NeedTxt("_mta-sts.example.com")] and result.txt == found("A1")
    assert result.source is PolicySource.CACHE


# --- AMB-15 / CACHE-7 / CACHE-8: background refresh ---------------------------------


def test_amb_15_refresh_fetches_without_looking_at_txt() -> None:
    cached = entry("A1")
    machine = PolicyDiscovery.for_refresh(cached, T0 + 3600)
    assert machine.next_action() == NeedFetch(URL, "mta-sts.example.com", "A1")
    result, asked = drive(machine, fetch=ok())
    assert [type(a) for a in asked] == [NeedFetch] and result.txt is None
    assert result.new_entry is not None and result.new_entry.fetched_at == T0 + 3600


def test_cache_7_refresh_can_store_under_a_known_new_id() -> None:
    result, _ = drive(PolicyDiscovery.for_refresh(entry("A1"), T0, txt_id="A9"), fetch=ok())
    assert result.new_entry is not None and result.new_entry.txt_id == "A9"


@pytest.mark.parametrize(
    ("mode", "alert"), [(Mode.ENFORCE, True), (Mode.TESTING, True), (Mode.NONE, False)]
)
def test_cache_8_failed_refresh_alerts_unless_mode_none(mode: Mode, alert: bool) -> None:
    cached = entry("A1", mode=mode)
    machine = PolicyDiscovery.for_refresh(cached, T0 + 3600)
    result, _ = drive(machine, fetch=FetchFailed(FetchErrorKind.STATUS, "HTTP 500"))
    assert result.source is PolicySource.CACHE and result.used_entry == cached
    assert ("sts.refresh.failed" in codes(result)) is alert
    assert "sts.cache.valid" not in codes(result)
    if alert:
        warning = next(e for e in result.events if e.code == "sts.refresh.failed")
        assert warning.level == "warning" and warning.fields["detail"] == "HTTP 500"


# --- the store glue ---------------------------------------------------------------------


def test_save_result_stores_clears_failure_and_marks_use() -> None:
    store = MemoryPolicyStore()
    store.record_failure(
        on_fetch_failure(DOMAIN, "A0", T0 - 900, result_type=ResultType.STS_POLICY_FETCH_ERROR)
    )
    result, _ = drive(PolicyDiscovery.from_store(store, DOMAIN, T0), found("A1"), ok())
    save_result(store, result)
    assert store.get(DOMAIN) == result.new_entry
    assert store.get_failure(DOMAIN) is None and store.last_used(DOMAIN) == T0


def test_save_result_records_failure_and_never_deletes() -> None:
    store = MemoryPolicyStore()
    cached = entry("A1")
    store.put(cached)
    machine = PolicyDiscovery.from_store(store, DOMAIN, T0 + 5)
    result, _ = drive(machine, found("A2"), FetchFailed(FetchErrorKind.STATUS))
    save_result(store, result)
    assert store.get(DOMAIN) == cached and store.get_failure(DOMAIN) == result.failure


def test_save_result_refresh_is_not_a_use() -> None:
    store = MemoryPolicyStore()
    result, _ = drive(PolicyDiscovery.for_refresh(entry("A1"), T0 + 5), fetch=ok())
    save_result(store, result)
    assert store.last_used(DOMAIN) is None and store.get(DOMAIN) == result.new_entry


# --- illegal inputs ------------------------------------------------------------------------


def test_state_error_names_state_and_event() -> None:
    machine = PolicyDiscovery(DOMAIN, T0)
    with pytest.raises(StateError, match=r"'FetchOk' in state 'need-txt'"):
        machine.receive(ok())
    machine.receive(found("A1"))
    with pytest.raises(StateError, match=r"'TxtAbsent' in state 'need-fetch'"):
        machine.receive(TxtAbsent())
    machine.receive(ok())
    with pytest.raises(StateError, match=r"'FetchFailed' in state 'done'"):
        machine.receive(FetchFailed(FetchErrorKind.STATUS))


def test_receive_stamps_the_entry_with_arrival_time_and_refuses_going_back() -> None:
    machine = PolicyDiscovery(DOMAIN, T0)
    machine.receive(found("A1"))
    with pytest.raises(ValueError, match="backwards"):
        machine.receive(ok(), now=T0 - 1)
    machine.receive(ok(), now=T0 + 30)
    result, _ = drive(machine)
    assert result.new_entry is not None and result.new_entry.fetched_at == T0 + 30


@pytest.mark.parametrize(
    "domain", ["Example.com", "example.com.", "[192.0.2.10]", "bücher.example", ""]
)
def test_disc_2_disc_15_domain_must_be_normalised(domain: str) -> None:
    with pytest.raises(ValueError, match="Policy Domain"):
        PolicyDiscovery(domain, T0)


def test_cache_entry_of_another_domain_is_refused() -> None:
    with pytest.raises(ValueError, match=r"example\.com.*example\.org"):
        PolicyDiscovery("example.org", T0, cached=entry())
