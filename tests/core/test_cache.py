"""The cache decision (engine/core/cache.py), one test per requirement row."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.cache import (
    CachedPolicy,
    DecisionReason,
    Fetch,
    FetchFailure,
    MemoryPolicyStore,
    NoPolicy,
    TxtAbsent,
    TxtFound,
    TxtInvalid,
    TxtOutcome,
    TxtTempError,
    UseCached,
    decide,
    on_fetch_failure,
    on_fetch_success,
    refresh_due,
)
from engine.core.errors import ConfigError
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.core.txt import NoStsReason, NoStsRecord, StsRecord

T0 = 1_767_225_600.0
DAY = 86_400.0
DOMAIN = "example.com"


def policy(mode: Mode = Mode.ENFORCE, max_age: int = 86_400) -> Policy:
    return Policy(mode=mode, max_age=max_age, mx=(MxPattern("mx2.example.com"),))


def cached(
    txt_id: str = "A1", *, at: float = T0, mode: Mode = Mode.ENFORCE, max_age: int = 86_400
) -> CachedPolicy:
    return on_fetch_success(DOMAIN, policy(mode, max_age), txt_id, at)


def found(txt_id: str) -> TxtFound:
    return TxtFound(StsRecord(id=txt_id))


def failed(txt_id: str, at: float) -> FetchFailure:
    return on_fetch_failure(
        DOMAIN, txt_id, at, result_type=ResultType.STS_POLICY_FETCH_ERROR, detail="HTTP 503"
    )


ABSENT = TxtAbsent("NXDOMAIN")
TEMP = TxtTempError("SERVFAIL")
INVALID = {
    reason: TxtInvalid(NoStsRecord(reason, f"{reason} in the RRset")) for reason in NoStsReason
}
NO_RECORD: list[TxtOutcome] = [ABSENT, TEMP, *INVALID.values()]
NO_RECORD_REASON = {
    TxtAbsent: DecisionReason.TXT_ABSENT,
    TxtTempError: DecisionReason.TXT_TEMPERROR,
    TxtInvalid: DecisionReason.TXT_INVALID,
}


# --- CachedPolicy --------------------------------------------------------------


def test_cache_1_entry_valid_for_max_age_from_fetch() -> None:
    entry = cached(max_age=600)
    assert entry.expires_at == T0 + 600
    assert entry.is_valid(T0) and entry.is_valid(T0 + 599.999)
    assert not entry.is_valid(T0 + 600)


# --- DISC / CACHE: the TXT outcome against the cache ----------------------------


@pytest.mark.parametrize("txt", NO_RECORD, ids=repr)
def test_cache_2_cache_3_no_usable_txt_keeps_unexpired_policy(txt: TxtOutcome) -> None:
    entry = cached()
    action = decide(entry, txt, T0 + 3600)
    assert action == UseCached(entry, NO_RECORD_REASON[type(txt)])


@pytest.mark.parametrize("txt", NO_RECORD, ids=repr)
def test_disc_11_disc_12_no_usable_txt_and_no_cache_is_no_policy(txt: TxtOutcome) -> None:
    # DISC-5, DISC-6, DISC-11; AMB-10: a DNS temp error is "no policy", never a failure.
    assert decide(None, txt, T0) == NoPolicy(NO_RECORD_REASON[type(txt)])


def test_cache_4_changed_id_fetches_with_cached_fallback() -> None:
    entry = cached("A1")
    assert decide(entry, found("A2"), T0 + 10) == Fetch("A2", fallback=entry)


def test_disc_7_only_equality_of_ids_matters() -> None:
    # A lexically smaller (or shorter, or case-changed) id is still a new id.
    entry = cached("B2")
    for new in ("A1", "B", "b2", "B20"):
        assert decide(entry, found(new), T0 + 1) == Fetch(new, fallback=entry)


def test_disc_7_id_of_32_characters_compares_exactly() -> None:
    long_id = "Z" * 32
    entry = cached(long_id)
    assert decide(entry, found(long_id), T0 + 1) == UseCached(entry, DecisionReason.ID_UNCHANGED)


def test_cache_5_unchanged_id_uses_cache_without_fetch() -> None:
    entry = cached("A1")
    assert decide(entry, found("A1"), T0 + 100) == UseCached(entry, DecisionReason.ID_UNCHANGED)


def test_fetch_first_sight_of_record_fetches_without_fallback() -> None:
    assert decide(None, found("A1"), T0) == Fetch("A1", fallback=None)


def test_amb_14_unchanged_id_does_not_extend_lifetime() -> None:
    entry = cached("A1", max_age=600)
    action = decide(entry, found("A1"), T0 + 500)
    assert isinstance(action, UseCached)
    assert action.entry.expires_at == T0 + 600  # not T0 + 500 + 600
    # Once the fetch-based lifetime is over, the same id means a new fetch.
    assert decide(entry, found("A1"), T0 + 600) == Fetch("A1", fallback=None)


@pytest.mark.parametrize("txt", [found("A1"), found("A2"), *NO_RECORD], ids=repr)
def test_cache_10_expired_entry_is_never_used(txt: TxtOutcome) -> None:
    entry = cached("A1", max_age=60)
    action = decide(entry, txt, T0 + 120)
    assert not isinstance(action, UseCached)
    if isinstance(action, Fetch):
        assert action.fallback is None  # nor kept as a fallback


def test_amb_11_only_expiry_ends_a_cached_policy() -> None:
    # TXT gone for the entry's whole life: applied until the last second, then not.
    entry = cached("A1", max_age=3600)
    for t in (T0, T0 + 1800, T0 + 3599):
        assert decide(entry, ABSENT, t) == UseCached(entry, DecisionReason.TXT_ABSENT)
    assert decide(entry, ABSENT, T0 + 3600) == NoPolicy(DecisionReason.TXT_ABSENT)


# --- fetch results ---------------------------------------------------------------


def test_cache_9_fetched_mode_none_replaces_enforce() -> None:
    store = MemoryPolicyStore()
    store.put(cached("A1"))
    store.put(on_fetch_success(DOMAIN, policy(Mode.NONE), "A2", T0 + 10))
    action = decide(store.get(DOMAIN), found("A2"), T0 + 20)
    assert isinstance(action, UseCached)
    assert action.entry.policy.mode is Mode.NONE


def test_cache_11_newest_fetch_replaces_even_with_shorter_max_age() -> None:
    store = MemoryPolicyStore()
    store.put(cached("A1", max_age=31_557_600))
    store.put(on_fetch_success(DOMAIN, policy(max_age=60), "A2", T0 + 10))
    # P1 is not resurrected once P2 expires.
    assert decide(store.get(DOMAIN), ABSENT, T0 + 130) == NoPolicy(DecisionReason.TXT_ABSENT)


def test_amb_13_cache_13_max_age_zero_is_never_applied_from_cache() -> None:
    store = MemoryPolicyStore()
    store.put(cached("A1", max_age=86_400))
    zero = on_fetch_success(DOMAIN, policy(max_age=0), "A2", T0 + 10)
    assert not zero.is_valid(T0 + 10)  # applied to its own attempt only
    store.put(zero)  # and it replaces the previous policy (CACHE-11)
    assert decide(store.get(DOMAIN), ABSENT, T0 + 10) == NoPolicy(DecisionReason.TXT_ABSENT)
    assert decide(store.get(DOMAIN), found("A2"), T0 + 11) == Fetch("A2", fallback=None)


def test_cache_6_failed_fetch_leaves_entry_untouched() -> None:
    store = MemoryPolicyStore()
    entry = cached("A1")
    store.put(entry)
    failure = failed("A2", T0 + 10)
    store.record_failure(failure)
    assert store.get(DOMAIN) == entry
    assert failure == FetchFailure(
        DOMAIN, "A2", T0 + 10, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 503"
    )


# --- FETCH-15 / AMB-34: the retry throttle ---------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "throttled"), [(0, True), (1, True), (299.9, True), (300, False), (3600, False)]
)
def test_fetch_15_same_id_waits_five_minutes(elapsed: float, throttled: bool) -> None:
    action = decide(None, found("A1"), T0 + elapsed, last_failure=failed("A1", T0))
    expected = NoPolicy(DecisionReason.FETCH_THROTTLED) if throttled else Fetch("A1", None)
    assert action == expected


def test_fetch_15_retry_interval_is_configurable() -> None:
    failure = failed("A1", T0)
    assert decide(None, found("A1"), T0 + 5, last_failure=failure, retry_after=5) == Fetch(
        "A1", None
    )
    assert isinstance(
        decide(None, found("A1"), T0 + 500, last_failure=failure, retry_after=600), NoPolicy
    )


def test_fetch_15_negative_retry_interval_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="retry_after"):
        decide(None, ABSENT, T0, retry_after=-1)


def test_amb_34_new_id_is_fetched_at_once() -> None:
    entry = cached("A1")
    action = decide(entry, found("A3"), T0 + 20, last_failure=failed("A2", T0 + 10))
    assert action == Fetch("A3", fallback=entry)


def test_amb_34_throttle_never_stops_a_valid_cached_policy() -> None:
    entry = cached("A1")
    action = decide(entry, found("A2"), T0 + 20, last_failure=failed("A2", T0 + 10))
    assert action == UseCached(entry, DecisionReason.FETCH_THROTTLED)


def test_apply_6_recheck_ignores_the_throttle() -> None:
    entry = cached("A1")
    action = decide(
        entry, found("A2"), T0 + 20, last_failure=failed("A2", T0 + 10), honour_throttle=False
    )
    assert action == Fetch("A2", fallback=entry)


# --- CACHE-7 / AMB-15: proactive refresh planning --------------------------------


def due(entry: CachedPolicy, now: float, **kw: Any) -> float | None:
    kw.setdefault("last_used", now)
    kw.setdefault("rng_value", 0.0)
    return refresh_due(entry, now, **kw)


def test_cache_7_refresh_is_daily_and_before_expiry() -> None:
    entry = cached(max_age=3 * 86_400)
    assert due(entry, T0 + 10) == T0 + DAY
    assert due(entry, T0 + 10, rng_value=0.5, jitter_fraction=0.1) == T0 + DAY * 1.05


def test_cache_7_jitter_only_moves_refresh_later_within_the_lifetime() -> None:
    # A policy fetched by a delivery is not fetched again before its period is over.
    entry = cached(max_age=3 * 86_400)
    times = [due(entry, T0, rng_value=r, jitter_fraction=0.2) or 0.0 for r in (0.0, 0.3, 0.999)]
    assert all(T0 + DAY <= t <= T0 + DAY * 1.2 < entry.expires_at for t in times)
    assert times == sorted(times)


def test_cache_7_short_max_age_refreshes_at_half_life() -> None:
    assert due(cached(max_age=600), T0) == T0 + 300


def test_cache_7_overdue_refresh_is_due_now() -> None:
    entry = cached(max_age=3 * 86_400)
    assert due(entry, T0 + 2 * DAY) == T0 + 2 * DAY


@pytest.mark.parametrize(
    ("now", "kw"),
    [
        (T0 + 3 * DAY, {}),  # expired: nothing to refresh (AMB-11)
        (T0 + 10, {"last_used": None}),  # never used
        (T0 + DAY, {"last_used": T0 + DAY - 31 * DAY}),  # idle too long
    ],
)
def test_cache_7_no_refresh_for_expired_or_unused_entries(now: float, kw: dict[str, Any]) -> None:
    assert due(cached(max_age=3 * 86_400), now, **kw) is None


def test_fetch_15_refresh_waits_after_a_failed_fetch() -> None:
    entry = cached(max_age=3 * 86_400)
    failure = failed("A1", T0 + DAY)
    assert due(entry, T0 + DAY, last_failure=failure) == T0 + DAY + 300
    # A failure older than the entry is history.
    assert due(entry, T0 + DAY, last_failure=failed("A1", T0 - 5)) == T0 + DAY


def test_cache_7_no_refresh_when_throttle_outlasts_the_entry() -> None:
    entry = cached(max_age=600)
    assert due(entry, T0 + 400, last_failure=failed("A1", T0 + 400)) is None


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"refresh_interval": 0}, ConfigError),
        ({"jitter_fraction": 1.0}, ConfigError),
        ({"jitter_fraction": -0.1}, ConfigError),
        ({"max_idle": -1}, ConfigError),
        ({"rng_value": 1.0}, ValueError),
        ({"rng_value": float("nan")}, ValueError),
    ],
)
def test_refresh_due_rejects_out_of_range_arguments(
    kw: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        due(cached(), T0, **kw)


# --- the in-memory store ----------------------------------------------------------


def test_store_round_trips_entries_in_domain_order() -> None:
    store = MemoryPolicyStore()
    b = on_fetch_success("b.example", policy(), "B1", T0)
    a = on_fetch_success("a.example", policy(), "A1", T0)
    store.put(b)
    store.put(a)
    assert store.get("a.example") == a
    assert store.get("c.example") is None
    assert list(store.all()) == [a, b]
    store.delete("a.example")
    assert list(store.all()) == [b]


def test_cache_11_store_never_lets_an_older_fetch_overwrite_a_newer_one() -> None:
    store = MemoryPolicyStore()
    newer = cached("A2", at=T0 + 10)
    store.put(newer)
    store.put(cached("A1", at=T0))
    assert store.get(DOMAIN) == newer


def test_store_keeps_last_failure_and_last_use() -> None:
    store = MemoryPolicyStore()
    assert store.get_failure(DOMAIN) is None and store.last_used(DOMAIN) is None
    store.record_failure(failed("A1", T0))
    store.record_failure(failed("A2", T0 + 5))
    assert store.get_failure(DOMAIN) == failed("A2", T0 + 5)
    store.clear_failure(DOMAIN)
    assert store.get_failure(DOMAIN) is None
    store.mark_used(DOMAIN, T0 + 9)
    store.mark_used(DOMAIN, T0 + 3)  # late report of an earlier use
    assert store.last_used(DOMAIN) == T0 + 9
