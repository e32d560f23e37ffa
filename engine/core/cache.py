"""The policy cache decision (RFC 8461 §3.3, §5.1, §10.2): what to do, given
the cached entry, what the ``_mta-sts`` TXT lookup said, and the time.

Theory of operation
-------------------
A delivery attempt asks :func:`decide` one question: use the cached policy,
fetch over HTTPS, or go on without a policy. The answer depends on three
values and nothing else (no clock, no I/O):

* the entry in the store for the Policy Domain (a :class:`CachedPolicy`), if
  any. An entry whose lifetime is over is treated exactly like no entry
  (CACHE-10); the store may still hold it.
* the TXT outcome, one of a closed set: :class:`TxtFound`, :class:`TxtAbsent`
  (NXDOMAIN/NODATA), :class:`TxtInvalid` (several, none or a broken
  ``v=STSv1`` record) and :class:`TxtTempError` (SERVFAIL, timeout).
* the last failed fetch for the domain (a :class:`FetchFailure`), for the
  five-minute retry throttle of FETCH-15, which is per ``id`` (AMB-34). Only
  the latest failure is kept, so if the TXT flips A1 -> A2 -> A1 within five
  minutes and both fetches fail, A1 is fetched again: a deliberate
  simplification that errs towards fetching.

The rules, in the order :func:`decide` applies them::

    TXT found, id == valid entry's id     -> UseCached (no HTTPS; CACHE-5)
    TXT found, id new or no valid entry:
        same id failed < retry_after ago  -> UseCached if valid, else NoPolicy
        otherwise                         -> Fetch(id, fallback=valid entry)
    TXT absent / invalid / temp error     -> UseCached if valid, else NoPolicy

After a fetch the driver calls :func:`on_fetch_success` (the new entry
replaces the old one, whatever the old one's lifetime: CACHE-11) or
:func:`on_fetch_failure` (the old entry stays; the failure is remembered for
the throttle). Nothing in this module ever deletes an entry: a cached policy
ends by expiry or by replacement (AMB-11). Only a successful fetch sets
``fetched_at``, so only a fetch restarts ``max_age`` (AMB-14).

Proactive refresh (CACHE-7, AMB-15) is planned by :func:`refresh_due`: a
recently used entry is re-fetched over HTTPS about once a day, whatever the
TXT says, before it expires. Randomness for jitter is passed in.

The :class:`PolicyStore` port is what the gateway keeps entries in;
:class:`MemoryPolicyStore` is the in-memory implementation (tests, harness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol, TypeAlias

from engine.core.errors import ConfigError
from engine.core.events import ResultType
from engine.core.policy import Policy
from engine.core.txt import NoStsRecord, StsRecord

__all__ = [
    "DEFAULT_REFRESH_INTERVAL",
    "FETCH_RETRY_AFTER",
    "CacheAction",
    "CachedPolicy",
    "DecisionReason",
    "Fetch",
    "FetchFailure",
    "MemoryPolicyStore",
    "NoPolicy",
    "PolicyStore",
    "TxtAbsent",
    "TxtFound",
    "TxtInvalid",
    "TxtOutcome",
    "TxtTempError",
    "UseCached",
    "decide",
    "is_throttled",
    "on_fetch_failure",
    "on_fetch_success",
    "refresh_due",
]

# RFC 8461 §3.3: "senders SHOULD wait at least 5 minutes before retrying" the same id.
FETCH_RETRY_AFTER: Final = 300.0
# RFC 8461 §10.2 suggests refreshing cached policies daily (CACHE-7).
DEFAULT_REFRESH_INTERVAL: Final = 86_400.0
# Entries idle longer than this are not refreshed in the background.
DEFAULT_MAX_IDLE: Final = 30 * 86_400.0


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy as fetched, with the TXT id it was fetched under.

    Attributes:
        domain: the Policy Domain (lower-case A-labels, no root dot).
        policy: the parsed policy.
        txt_id: the ``_mta-sts`` ``id`` the fetch was made for.
        fetched_at: when the successful HTTPS fetch completed (POSIX seconds).
    """

    domain: str
    policy: Policy
    txt_id: str
    fetched_at: float

    @property
    def expires_at(self) -> float:
        """``fetched_at + max_age``; the entry is unusable from this instant on."""
        # RFC 8461 §3.2: max_age counts "from last policy fetch time" (AMB-14).
        return self.fetched_at + self.policy.max_age

    def is_valid(self, now: float) -> bool:
        """Whether the entry may still be applied at ``now``.

        A ``max_age`` of 0 is never valid from the cache (AMB-13).
        """
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """The last failed policy fetch for a domain, kept for the retry throttle.

    Attributes:
        domain: the Policy Domain.
        txt_id: the id the failed fetch was made for.
        failed_at: when the fetch failed (POSIX seconds).
        result_type: the RFC 8460 result type of the failure.
        detail: a human-readable description.
    """

    domain: str
    txt_id: str
    failed_at: float
    result_type: ResultType
    detail: str = ""


# --- TXT outcomes: a closed set ---------------------------------------------


@dataclass(frozen=True, slots=True)
class TxtFound:
    """Exactly one valid ``v=STSv1`` record."""

    record: StsRecord


@dataclass(frozen=True, slots=True)
class TxtAbsent:
    """NXDOMAIN or NODATA for ``_mta-sts.<domain>`` (DISC-11)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class TxtInvalid:
    """An RRset with no usable record: none, several, or one invalid (DISC-3..6)."""

    why: NoStsRecord


@dataclass(frozen=True, slots=True)
class TxtTempError:
    """SERVFAIL, timeout or another temporary DNS failure (DISC-12, AMB-10)."""

    detail: str = ""


TxtOutcome: TypeAlias = TxtFound | TxtAbsent | TxtInvalid | TxtTempError


# --- actions ------------------------------------------------------------------


class DecisionReason(StrEnum):
    """Why :func:`decide` chose what it chose (also a log field)."""

    ID_UNCHANGED = "id-unchanged"
    TXT_ABSENT = "txt-absent"
    TXT_INVALID = "txt-invalid"
    TXT_TEMPERROR = "txt-temperror"
    FETCH_THROTTLED = "fetch-throttled"
    FETCH_FAILED = "fetch-failed"


@dataclass(frozen=True, slots=True)
class UseCached:
    """Apply ``entry`` without any HTTPS request."""

    entry: CachedPolicy
    reason: DecisionReason


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch the policy for ``txt_id``; on failure apply ``fallback`` if it is not None."""

    txt_id: str
    fallback: CachedPolicy | None


@dataclass(frozen=True, slots=True)
class NoPolicy:
    """Deliver as though the domain had no MTA-STS policy."""

    reason: DecisionReason


CacheAction: TypeAlias = UseCached | Fetch | NoPolicy

_NO_RECORD_REASON: Final[dict[type, DecisionReason]] = {
    TxtAbsent: DecisionReason.TXT_ABSENT,
    TxtInvalid: DecisionReason.TXT_INVALID,
    TxtTempError: DecisionReason.TXT_TEMPERROR,
}


def _check_interval(name: str, value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise ConfigError(f"{name} must be a number of seconds >= 0", key=name, value=value)


def is_throttled(failure: FetchFailure | None, txt_id: str, now: float, retry_after: float) -> bool:
    """Whether a fetch for ``txt_id`` must wait because of ``failure``."""
    # AMB-34: the throttle is per id; a new id may be fetched at once.
    return (
        failure is not None and failure.txt_id == txt_id and now < failure.failed_at + retry_after
    )


def decide(
    cached: CachedPolicy | None,
    txt: TxtOutcome,
    now: float,
    *,
    last_failure: FetchFailure | None = None,
    retry_after: float = FETCH_RETRY_AFTER,
    honour_throttle: bool = True,
) -> CacheAction:
    """Decide between the cached policy, a fetch and no policy.

    Args:
        cached: the store's entry for the domain, expired or not, or None.
        txt: the outcome of the ``_mta-sts`` TXT lookup made for this attempt.
        now: the current time (POSIX seconds).
        last_failure: the domain's last failed fetch, or None.
        retry_after: seconds to wait before fetching an id whose fetch failed.
        honour_throttle: False to ignore the retry throttle (the APPLY-6
            re-check before a message is failed permanently).

    Returns:
        :class:`UseCached`, :class:`Fetch` or :class:`NoPolicy`.

    Raises:
        ConfigError: ``retry_after`` is negative.
    """
    _check_interval("retry_after", retry_after)
    # CACHE-10: an expired entry is never applied, and never a fallback.
    valid = cached if cached is not None and cached.is_valid(now) else None
    if not isinstance(txt, TxtFound):
        # CACHE-2, CACHE-3: a missing, invalid or duplicated TXT (or a DNS error,
        # AMB-10) does not remove an unexpired policy; without one, no policy.
        reason = _NO_RECORD_REASON[type(txt)]
        return UseCached(valid, reason) if valid is not None else NoPolicy(reason)
    txt_id = txt.record.id
    if valid is not None and valid.txt_id == txt_id:
        # CACHE-5: unchanged id, no HTTPS. AMB-14: and no extension of the lifetime.
        return UseCached(valid, DecisionReason.ID_UNCHANGED)
    # CACHE-4, DISC-7: any other id (only equality matters) means a new policy.
    if honour_throttle and is_throttled(last_failure, txt_id, now, retry_after):
        # FETCH-15: wait before retrying this id. AMB-34: the cache still applies.
        reason = DecisionReason.FETCH_THROTTLED
        return UseCached(valid, reason) if valid is not None else NoPolicy(reason)
    # CACHE-6: if this fetch fails, the unexpired entry stays in force.
    return Fetch(txt_id, fallback=valid)


def on_fetch_success(domain: str, policy: Policy, txt_id: str, now: float) -> CachedPolicy:
    """The entry to store after a successful fetch.

    The result always replaces the stored entry, even one with a longer
    remaining lifetime (CACHE-11). A policy with ``max_age: 0`` is returned
    too, so that it replaces the old entry; it is never valid, so it is
    applied only to the attempt that fetched it and never from the cache
    (AMB-13, CACHE-13).

    Args:
        domain: the Policy Domain.
        policy: the policy just fetched and parsed.
        txt_id: the id the fetch was made for.
        now: when the fetch completed.

    Returns:
        The new :class:`CachedPolicy`, with ``fetched_at = now`` (AMB-14).
    """
    return CachedPolicy(domain=domain, policy=policy, txt_id=txt_id, fetched_at=now)


def on_fetch_failure(
    domain: str, txt_id: str, now: float, *, result_type: ResultType, detail: str = ""
) -> FetchFailure:
    """The failure record to keep after a failed fetch (FETCH-15).

    Args:
        domain: the Policy Domain.
        txt_id: the id the fetch was made for.
        now: when the fetch failed.
        result_type: the RFC 8460 result type of the failure.
        detail: what went wrong.

    Returns:
        The :class:`FetchFailure`; the cached entry, if any, is left as it is.
    """
    return FetchFailure(
        domain=domain, txt_id=txt_id, failed_at=now, result_type=result_type, detail=detail
    )


def refresh_due(
    entry: CachedPolicy,
    now: float,
    *,
    last_used: float | None,
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
    jitter_fraction: float = 0.1,
    rng_value: float,
    max_idle: float = DEFAULT_MAX_IDLE,
    last_failure: FetchFailure | None = None,
    retry_after: float = FETCH_RETRY_AFTER,
) -> float | None:
    """When to re-fetch ``entry`` in the background, or None for never.

    The refresh fetches over HTTPS whatever the TXT says (AMB-15), so that a
    policy whose TXT is blocked still gets its lifetime restarted (CACHE-7).
    The period is ``refresh_interval``, shortened to half of ``max_age`` for
    short-lived policies so that the refresh lands before expiry. Jitter
    spreads refreshes over the ``jitter_fraction`` of the period that follows
    it (never earlier: a policy fetched a day ago by a delivery is not fetched
    again by the background before its period is over), and the period being at
    most half of ``max_age`` keeps the refresh well before expiry. After a failed
    fetch since ``entry`` was fetched, the refresh waits ``retry_after`` (FETCH-15).

    Args:
        entry: the cached entry.
        now: the current time.
        last_used: when a delivery last applied the entry, or None if never.
        refresh_interval: the nominal refresh period in seconds (> 0).
        jitter_fraction: how much of the period jitter may take, in [0, 1).
        rng_value: a random number in [0, 1), drawn by the caller.
        max_idle: entries unused for longer than this are not refreshed.
        last_failure: the domain's last failed fetch, or None.
        retry_after: the fetch retry throttle in seconds.

    Returns:
        The time the refresh is due (``now`` if overdue), or None when the
        entry is expired, idle or will expire before a refresh may happen.

    Raises:
        ConfigError: an interval or the jitter fraction is out of range.
        ValueError: ``rng_value`` is not in [0, 1).
    """
    if not refresh_interval > 0:
        raise ConfigError(
            "refresh_interval must be > 0 seconds", key="refresh_interval", value=refresh_interval
        )
    if not 0 <= jitter_fraction < 1:
        raise ConfigError(
            "jitter_fraction must be in [0, 1)", key="jitter_fraction", value=jitter_fraction
        )
    _check_interval("max_idle", max_idle)
    _check_interval("retry_after", retry_after)
    if not 0 <= rng_value < 1:
        raise ValueError(f"rng_value must be in [0, 1), got {rng_value!r}")
    if not entry.is_valid(now):
        return None  # AMB-11: an expired entry is over; the next delivery rediscovers.
    if last_used is None or now - last_used > max_idle:
        return None  # refresh only what is being used: no refresh traffic for idle domains
    period = min(refresh_interval, entry.policy.max_age / 2)
    due = entry.fetched_at + period * (1 + jitter_fraction * rng_value)
    if last_failure is not None and last_failure.failed_at >= entry.fetched_at:
        due = max(due, last_failure.failed_at + retry_after)
    if due >= entry.expires_at:
        return None
    return max(due, now)


# --- the store port -----------------------------------------------------------


class PolicyStore(Protocol):
    """Where cached policies, fetch failures and last-use times are kept.

    One entry per Policy Domain. Implementations (memory here; SQLite in
    ``engine/io``) must keep these rules: :meth:`put` never lets an older
    entry (smaller ``fetched_at``) overwrite a newer one; expired entries are
    kept until :meth:`delete` (the core never deletes: AMB-11); values come
    back equal to what was put.
    """

    def get(self, domain: str) -> CachedPolicy | None:
        """The entry for ``domain``, expired or not, or None."""

    def put(self, entry: CachedPolicy) -> None:
        """Store ``entry``, replacing any older entry for its domain."""

    def delete(self, domain: str) -> None:
        """Forget ``domain``'s entry (administration and purging only)."""

    def all(self) -> Sequence[CachedPolicy]:
        """Every entry, in domain order."""

    def record_failure(self, failure: FetchFailure) -> None:
        """Remember ``failure`` as its domain's last failed fetch."""

    def get_failure(self, domain: str) -> FetchFailure | None:
        """``domain``'s last failed fetch, or None."""

    def clear_failure(self, domain: str) -> None:
        """Forget ``domain``'s last failed fetch (after a successful fetch)."""

    def mark_used(self, domain: str, at: float) -> None:
        """Note that a delivery applied ``domain``'s policy at ``at``."""

    def last_used(self, domain: str) -> float | None:
        """When ``domain``'s policy was last applied, or None."""


class MemoryPolicyStore:
    """A :class:`PolicyStore` in a few dicts (tests, the harness, single runs)."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedPolicy] = {}
        self._failures: dict[str, FetchFailure] = {}
        self._used: dict[str, float] = {}

    def get(self, domain: str) -> CachedPolicy | None:
        """The entry for ``domain``, expired or not, or None."""
        return self._entries.get(domain)

    def put(self, entry: CachedPolicy) -> None:
        """Store ``entry``, unless a newer one for its domain is already stored."""
        old = self._entries.get(entry.domain)
        if old is None or old.fetched_at <= entry.fetched_at:
            self._entries[entry.domain] = entry

    def delete(self, domain: str) -> None:
        """Forget ``domain``'s entry and its bookkeeping."""
        self._entries.pop(domain, None)
        self._failures.pop(domain, None)
        self._used.pop(domain, None)

    def all(self) -> Sequence[CachedPolicy]:
        """Every entry, in domain order."""
        return [self._entries[d] for d in sorted(self._entries)]

    def record_failure(self, failure: FetchFailure) -> None:
        """Remember ``failure`` as its domain's last failed fetch."""
        self._failures[failure.domain] = failure

    def get_failure(self, domain: str) -> FetchFailure | None:
        """``domain``'s last failed fetch, or None."""
        return self._failures.get(domain)

    def clear_failure(self, domain: str) -> None:
        """Forget ``domain``'s last failed fetch."""
        self._failures.pop(domain, None)

    def mark_used(self, domain: str, at: float) -> None:
        """Note that ``domain``'s policy was applied at ``at`` (never moves back)."""
        self._used[domain] = max(at, self._used.get(domain, at))

    def last_used(self, domain: str) -> float | None:
        """When ``domain``'s policy was last applied, or None."""
        return self._used.get(domain)
