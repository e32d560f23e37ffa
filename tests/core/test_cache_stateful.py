"""The cache decision against a plain-dict model, over time (STYLE habit 6).

Hypothesis drives advancing time, TXT changes and delivery attempts whose
fetches succeed or fail. Each attempt goes through either :func:`decide` with
``on_fetch_*`` or the whole :class:`PolicyDiscovery` with ``save_result``;
both must agree with the model, which holds only: the last fetched policy
(id, mode, max_age, fetched_at) and the last failed fetch (id, time).
"""

from __future__ import annotations

from typing import Any

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.core.cache import (
    FETCH_RETRY_AFTER,
    Fetch,
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
)
from engine.core.discovery import (
    Done,
    FetchErrorKind,
    FetchFailed,
    FetchOk,
    NeedFetch,
    PolicyDiscovery,
    PolicySource,
    save_result,
)
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.core.txt import NoStsReason, NoStsRecord, StsRecord

T0 = 1_767_225_600
DOMAIN = "example.com"
IDS = ["A1", "A2", "B7"]

# Records are published more often than they go missing, so ids repeat and change.
txt_outcomes = st.sampled_from(
    [TxtFound(StsRecord(id=i)) for i in IDS] * 2
    + [TxtAbsent("NXDOMAIN"), TxtTempError("SERVFAIL")]
    + [TxtInvalid(NoStsRecord(r, str(r))) for r in NoStsReason]
)
# Mostly short steps (around the throttle and short lifetimes), sometimes long ones.
steps = st.one_of(
    st.sampled_from([0, 1, 59, 60, 299, 300, 301, 599, 600]),
    st.integers(min_value=0, max_value=900),
    st.sampled_from([86_399, 86_400, 2 * 86_400]),
)
max_ages = st.sampled_from([0, 1, 60, 300, 600, 86_400])
fetch_results = st.one_of(
    st.tuples(st.sampled_from(Mode), max_ages),  # success: (mode, max_age)
    st.sampled_from(FetchErrorKind),  # failure
)


def body(mode: Mode, max_age: int) -> bytes:
    mx = "" if mode is Mode.NONE else "mx: mx2.example.com\n"
    return f"version: STSv1\nmode: {mode}\n{mx}max_age: {max_age}\n".encode()


class CacheModel(RuleBasedStateMachine):
    """Delivery attempts to one domain, checked against a dict model."""

    @initialize()
    def start(self) -> None:
        self.now = T0
        self.txt: TxtOutcome = TxtAbsent()
        self.store = MemoryPolicyStore()
        # The model: plain values, updated only by what the rules observe.
        self.model: dict[str, Any] = {"entry": None, "failure": None}

    # --- the model's own reading of the rules ------------------------------

    def model_valid(self) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = self.model["entry"]
        if entry is None or self.now >= entry["fetched_at"] + entry["max_age"]:
            return None
        return entry

    def expected(self, recheck: bool) -> str:
        valid = self.model_valid()
        fallback = "use" if valid is not None else "none"
        if not isinstance(self.txt, TxtFound):
            return fallback
        txt_id = self.txt.record.id
        if valid is not None and valid["id"] == txt_id:
            return "use"
        failure = self.model["failure"]
        recent = failure is not None and self.now - failure["at"] < FETCH_RETRY_AFTER
        if not recheck and recent and failure["id"] == txt_id:
            return fallback
        return "fetch"

    def model_fetched(self, txt_id: str, mode: Mode, max_age: int) -> None:
        self.model["entry"] = {
            "id": txt_id,
            "mode": mode,
            "max_age": max_age,
            "fetched_at": self.now,
        }
        self.model["failure"] = None

    def model_failed(self, txt_id: str) -> None:
        self.model["failure"] = {"id": txt_id, "at": self.now}

    # --- rules ------------------------------------------------------------------

    @rule(seconds=steps)
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule(txt=txt_outcomes)
    def publish(self, txt: TxtOutcome) -> None:
        self.txt = txt

    @rule(result=fetch_results, recheck=st.booleans())
    def deliver_with_decide(self, result: tuple[Mode, int] | FetchErrorKind, recheck: bool) -> None:
        action = decide(
            self.store.get(DOMAIN),
            self.txt,
            self.now,
            last_failure=self.store.get_failure(DOMAIN),
            honour_throttle=not recheck,
        )
        kind = {UseCached: "use", NoPolicy: "none", Fetch: "fetch"}[type(action)]
        event(f"decide: {kind} ({getattr(action, 'reason', 'fetch')})")
        assert kind == self.expected(recheck), (action, self.model, self.now)
        if isinstance(action, UseCached):
            # Expired entries are never used; the entry used is the last fetched.
            assert action.entry.is_valid(self.now)
            assert action.entry == self.store.get(DOMAIN)
        if not isinstance(action, Fetch):
            return
        assert action.fallback == (self.store.get(DOMAIN) if self.model_valid() else None)
        if isinstance(result, tuple):
            mode, max_age = result
            policy = Policy(mode=mode, max_age=max_age, mx=(MxPattern("mx2.example.com"),))
            self.store.put(on_fetch_success(DOMAIN, policy, action.txt_id, self.now))
            self.store.clear_failure(DOMAIN)
            self.model_fetched(action.txt_id, mode, max_age)
        else:
            failure = on_fetch_failure(
                DOMAIN, action.txt_id, self.now, result_type=result.result_type
            )
            self.store.record_failure(failure)
            self.model_failed(action.txt_id)

    @rule(result=fetch_results, recheck=st.booleans())
    def deliver_with_discovery(
        self, result: tuple[Mode, int] | FetchErrorKind, recheck: bool
    ) -> None:
        expected = self.expected(recheck)
        valid_before = self.model_valid()
        machine = PolicyDiscovery.from_store(self.store, DOMAIN, self.now, recheck=recheck)
        machine.receive(self.txt)
        fetch = machine.next_action()
        assert isinstance(fetch, NeedFetch) == (expected == "fetch")
        if isinstance(fetch, NeedFetch):
            if isinstance(result, tuple):
                machine.receive(FetchOk(body(*result), "text/plain"))
            else:
                machine.receive(FetchFailed(result, "simulated"))
        done = machine.next_action()
        assert isinstance(done, Done)
        outcome = done.result
        save_result(self.store, outcome)
        if isinstance(fetch, NeedFetch) and isinstance(result, tuple):
            assert outcome.source is PolicySource.FETCHED
            self.model_fetched(fetch.txt_id, *result)
        elif isinstance(fetch, NeedFetch) and isinstance(result, FetchErrorKind):
            assert outcome.failure is not None
            assert outcome.failure.result_type is result.result_type
            self.model_failed(fetch.txt_id)
        # After any failure, the policy in force is the unexpired one, if any.
        if outcome.source is PolicySource.CACHE:
            assert valid_before is not None and outcome.used_entry is not None
            assert outcome.used_entry.is_valid(self.now)
            assert outcome.used_entry == self.store.get(DOMAIN)
        if outcome.source is PolicySource.NONE:
            assert valid_before is None, "a valid cached policy was dropped"

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        # Only fetches write the entry, so only fetches restart the lifetime;
        # nothing but a newer fetch replaces it.
        entry, modelled = self.store.get(DOMAIN), self.model["entry"]
        if modelled is None:
            assert entry is None
        else:
            assert entry is not None
            assert (entry.txt_id, entry.policy.mode, entry.policy.max_age, entry.fetched_at) == (
                modelled["id"],
                modelled["mode"],
                modelled["max_age"],
                modelled["fetched_at"],
            )

    @invariant()
    def failure_matches_model(self) -> None:
        failure, modelled = self.store.get_failure(DOMAIN), self.model["failure"]
        if modelled is None:
            assert failure is None
        else:
            assert failure is not None
            assert (failure.txt_id, failure.failed_at) == (modelled["id"], modelled["at"])
            assert failure.result_type in set(ResultType)


TestCacheModel = CacheModel.TestCase
