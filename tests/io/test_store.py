"""The PolicyStore contract, run against the in-memory and the SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.cache import CachedPolicy, FetchFailure, MemoryPolicyStore
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.io.store import SqlitePolicyStore

ENFORCE = Policy(
    mode=Mode.ENFORCE,
    max_age=86400,
    mx=(MxPattern("mx1.example.com"), MxPattern("example.net", wildcard=True)),
    extensions=(("note", "hello world"),),
)
TESTING = Policy(mode=Mode.TESTING, max_age=60, mx=(MxPattern("mx2.example.com"),))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "memory":
        yield MemoryPolicyStore()
    else:
        s = SqlitePolicyStore(tmp_path / "cache.sqlite")
        yield s
        s.close()


def test_put_then_get_returns_equal_entry(store) -> None:
    entry = CachedPolicy("example.com", ENFORCE, "A1", 1000.0)
    store.put(entry)
    assert store.get("example.com") == entry
    assert store.get("example.org") is None


def test_older_entry_never_overwrites_newer(store) -> None:
    store.put(CachedPolicy("example.com", ENFORCE, "A2", 2000.0))
    store.put(CachedPolicy("example.com", TESTING, "A1", 1000.0))
    assert store.get("example.com").txt_id == "A2"
    store.put(CachedPolicy("example.com", TESTING, "A3", 3000.0))
    assert store.get("example.com").policy == TESTING


def test_expired_entries_are_kept_until_deleted(store) -> None:
    # AMB-11: the store never drops an entry on its own.
    store.put(CachedPolicy("example.com", TESTING, "A1", 0.0))
    assert store.get("example.com") is not None
    store.delete("example.com")
    assert store.get("example.com") is None


def test_all_lists_entries_in_domain_order(store) -> None:
    store.put(CachedPolicy("b.example", TESTING, "1", 1.0))
    store.put(CachedPolicy("a.example", ENFORCE, "2", 2.0))
    assert [e.domain for e in store.all()] == ["a.example", "b.example"]


def test_failures_and_last_use_round_trip(store) -> None:
    failure = FetchFailure("example.com", "A1", 50.0, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 503")
    store.record_failure(failure)
    assert store.get_failure("example.com") == failure
    store.clear_failure("example.com")
    assert store.get_failure("example.com") is None
    assert store.last_used("example.com") is None
    store.mark_used("example.com", 77.0)
    assert store.last_used("example.com") == 77.0


def test_sqlite_cache_survives_reopen(tmp_path: Path) -> None:
    # CACHE-12: the cache outlives the process.
    path = tmp_path / "cache.sqlite"
    first = SqlitePolicyStore(path)
    first.put(CachedPolicy("example.com", ENFORCE, "A1", 1000.0))
    first.close()
    second = SqlitePolicyStore(path)
    assert second.get("example.com") == CachedPolicy("example.com", ENFORCE, "A1", 1000.0)
    second.close()
