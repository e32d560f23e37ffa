"""SQLite policy cache: the :class:`~engine.core.cache.PolicyStore` port on disk.

The cache must survive restarts: downgrade resistance depends on it
(RFC 8461 §10.2, CACHE-12). One row per Policy Domain; policies are stored as
JSON of their parsed fields (not re-parsed on read). WAL journaling lets the
gateway's CLI read the cache while the server writes it. Calls are
synchronous: each is one indexed statement on a local file, shorter than an
event-loop switch to a thread would be.

The rules of the port hold here too: an older entry never overwrites a newer
one, and nothing is deleted except by :meth:`delete` (AMB-11).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from engine.core.cache import CachedPolicy, FetchFailure
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy

__all__ = ["SqlitePolicyStore", "policy_from_json", "policy_json"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sts_policy (
    domain TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    txt_id TEXT NOT NULL,
    fetched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sts_failure (
    domain TEXT PRIMARY KEY,
    txt_id TEXT NOT NULL,
    failed_at REAL NOT NULL,
    result_type TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sts_used (
    domain TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""


def policy_json(policy: Policy) -> str:
    """``policy`` as JSON of its parsed fields (the SQLite and Redis caches store this)."""
    return json.dumps(
        {
            "version": policy.version,
            "mode": policy.mode.value,
            "max_age": policy.max_age,
            "mx": [[p.domain, p.wildcard] for p in policy.mx],
            "extensions": [list(e) for e in policy.extensions],
        }
    )


def policy_from_json(text: str) -> Policy:
    """The policy :func:`policy_json` wrote (not parsed again: it was checked on fetch)."""
    data = json.loads(text)
    return Policy(
        mode=Mode(data["mode"]),
        max_age=int(data["max_age"]),
        mx=tuple(MxPattern(d, bool(w)) for d, w in data["mx"]),
        version=data["version"],
        extensions=tuple((k, v) for k, v in data["extensions"]),
    )


class SqlitePolicyStore:
    """A :class:`~engine.core.cache.PolicyStore` in an SQLite file.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        durable: WAL journal and synced commits (production); off in the harness.
    """

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if not durable:
            # The harness: still a file that outlives the engine (CACHE-12 restarts),
            # without a write-ahead log or syncs, which only matter on a power cut.
            self._db.execute("PRAGMA journal_mode=MEMORY")
            self._db.execute("PRAGMA synchronous=OFF")
        else:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def get(self, domain: str) -> CachedPolicy | None:
        """The entry for ``domain``, expired or not, or None."""
        row = self._db.execute(
            "SELECT policy, txt_id, fetched_at FROM sts_policy WHERE domain = ?", (domain,)
        ).fetchone()
        if row is None:
            return None
        return CachedPolicy(domain, policy_from_json(row[0]), row[1], row[2])

    def put(self, entry: CachedPolicy) -> None:
        """Store ``entry`` unless a newer entry for its domain is stored."""
        self._db.execute(
            "INSERT INTO sts_policy (domain, policy, txt_id, fetched_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(domain) DO UPDATE SET policy = excluded.policy, "
            "txt_id = excluded.txt_id, fetched_at = excluded.fetched_at "
            "WHERE excluded.fetched_at >= sts_policy.fetched_at",
            (entry.domain, policy_json(entry.policy), entry.txt_id, entry.fetched_at),
        )

    def delete(self, domain: str) -> None:
        """Forget ``domain``'s entry and its bookkeeping."""
        for table in ("sts_policy", "sts_failure", "sts_used"):
            self._db.execute(f"DELETE FROM {table} WHERE domain = ?", (domain,))

    def all(self) -> Sequence[CachedPolicy]:
        """Every entry, in domain order."""
        rows = self._db.execute(
            "SELECT domain, policy, txt_id, fetched_at FROM sts_policy ORDER BY domain"
        ).fetchall()
        return [CachedPolicy(d, policy_from_json(p), i, f) for d, p, i, f in rows]

    def record_failure(self, failure: FetchFailure) -> None:
        """Remember ``failure`` as its domain's last failed fetch."""
        self._db.execute(
            "INSERT OR REPLACE INTO sts_failure VALUES (?, ?, ?, ?, ?)",
            (
                failure.domain,
                failure.txt_id,
                failure.failed_at,
                failure.result_type.value,
                failure.detail,
            ),
        )

    def get_failure(self, domain: str) -> FetchFailure | None:
        """``domain``'s last failed fetch, or None."""
        row = self._db.execute(
            "SELECT txt_id, failed_at, result_type, detail FROM sts_failure WHERE domain = ?",
            (domain,),
        ).fetchone()
        if row is None:
            return None
        return FetchFailure(domain, row[0], row[1], ResultType(row[2]), row[3])

    def clear_failure(self, domain: str) -> None:
        """Forget ``domain``'s last failed fetch."""
        self._db.execute("DELETE FROM sts_failure WHERE domain = ?", (domain,))

    def mark_used(self, domain: str, at: float) -> None:
        """Note that a delivery applied ``domain``'s policy at ``at``."""
        self._db.execute("INSERT OR REPLACE INTO sts_used VALUES (?, ?)", (domain, at))

    def last_used(self, domain: str) -> float | None:
        """When ``domain``'s policy was last applied, or None."""
        row = self._db.execute("SELECT at FROM sts_used WHERE domain = ?", (domain,)).fetchone()
        return None if row is None else float(row[0])
