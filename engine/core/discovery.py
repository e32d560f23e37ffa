"""MTA-STS policy discovery for one Policy Domain and one delivery attempt.

Theory of operation
-------------------
:class:`PolicyDiscovery` is a sans-IO state machine in the style of h11's
``Connection`` and dnspython's ``_Resolution``: the driver asks
:meth:`~PolicyDiscovery.next_action` what to do, performs it (a DNS query, an
HTTPS GET), and hands the outcome back with :meth:`~PolicyDiscovery.receive`.
Every decision about the cache is delegated to :func:`engine.core.cache.decide`;
this module sequences the steps, checks the fetched body, and records what
happened as :class:`~engine.core.events.LogEvent`\\ s.

States and transitions (``_TRANSITIONS`` below is the authority)::

    NEED_TXT   --TxtFound------------> NEED_FETCH  (new id, or no valid entry)
                                   \\-> DONE        (cache hit, or throttled)
    NEED_TXT   --TxtAbsent/TxtInvalid/TxtTempError--> DONE  (cache or none)
    NEED_FETCH --FetchOk-------------> DONE        (fetched; or cache/none if invalid)
    NEED_FETCH --FetchFailed---------> DONE        (cache fallback, or none)

Any other (state, input) pair raises :class:`~engine.core.errors.StateError`
naming both. A delivery discovery starts in NEED_TXT. ``recheck=True`` (the
APPLY-6 re-check before a message is failed for good) also starts there, but
ignores the fetch throttle, because RFC 8461 §5.1's MUST NOT outranks §3.3's
SHOULD. :meth:`PolicyDiscovery.for_refresh` starts in NEED_FETCH and never
looks at the TXT (AMB-15).

Event codes (all carry ``domain``; ``at`` is the machine's ``now``):

=====================  =======  ==============================================
code                   level    other fields
=====================  =======  ==============================================
``sts.txt.found``      info     txt_id
``sts.txt.absent``     debug    detail
``sts.txt.invalid``    info     reason (a NoStsReason), detail
``sts.txt.temperror``  info     detail
``sts.cache.valid``    debug    txt_id, mode, expires_at, reason
``sts.fetch.start``    debug    txt_id, url, trigger
``sts.fetch.timeout``  debug    txt_id, detail (emitted just before fetch.failed)
``sts.fetch.failed``   info     txt_id, url, kind, result_type, detail
``sts.policy.fetched`` debug    txt_id, mode, max_age, expires_at, cached
``sts.policy.none``    debug    reason (a DecisionReason)
``sts.refresh.failed`` warning  txt_id, mode, result_type, detail, expires_at
=====================  =======  ==============================================

``sts.refresh.failed`` is the CACHE-8 admin alert: only background refreshes
of a cached policy whose mode is not ``none`` emit it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeAlias

from engine.core.cache import (
    FETCH_RETRY_AFTER,
    CacheAction,
    CachedPolicy,
    DecisionReason,
    Fetch,
    FetchFailure,
    NoPolicy,
    PolicyStore,
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
from engine.core.errors import ParseError, StateError
from engine.core.events import LogEvent, ResultType
from engine.core.policy import Mode, Policy, parse_policy

__all__ = [
    "DiscoveryResult",
    "DiscoveryState",
    "Done",
    "FetchErrorKind",
    "FetchFailed",
    "FetchOk",
    "FetchOutcome",
    "NeedFetch",
    "NeedTxt",
    "PolicyDiscovery",
    "PolicySource",
    "Trigger",
    "is_policy_media_type",
    "save_result",
]


class FetchErrorKind(StrEnum):
    """What went wrong with a policy fetch; :attr:`result_type` maps it to RFC 8460."""

    DNS = "dns"  # mta-sts.<domain> does not resolve
    CONNECT = "connect"  # refused, reset, unreachable
    TLS = "tls"  # handshake failed for a reason other than the certificate
    CERTIFICATE = "certificate"  # PKIX: chain, name, dates (FETCH-2..6)
    STATUS = "status"  # anything but 200 (FETCH-8)
    REDIRECT = "redirect"  # any 3xx (FETCH-9)
    TIMEOUT = "timeout"  # FETCH-13
    OVERSIZE = "oversize"  # body over the cap (FETCH-12)
    MEDIA_TYPE = "media-type"  # not text/plain (FETCH-11, AMB-12)
    BODY = "body"  # not a valid policy (POL-15)

    @property
    def result_type(self) -> ResultType:
        """The RFC 8460 §4.3.2 result type reported for this kind of failure."""
        if self is FetchErrorKind.CERTIFICATE:
            # "the MTA-STS Policy could not be authenticated using PKIX validation"
            return ResultType.STS_WEBPKI_INVALID
        if self in (FetchErrorKind.MEDIA_TYPE, FetchErrorKind.BODY):
            # "the policy ... failed to validate against the policy specification"
            return ResultType.STS_POLICY_INVALID
        return ResultType.STS_POLICY_FETCH_ERROR


@dataclass(frozen=True, slots=True)
class FetchOk:
    """An HTTP 200 answer: the raw body and the ``Content-Type`` header, if any."""

    body: bytes
    content_type: str | None


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """A fetch that produced no body worth parsing."""

    kind: FetchErrorKind
    detail: str = ""


FetchOutcome: TypeAlias = FetchOk | FetchFailed


@dataclass(frozen=True, slots=True)
class NeedTxt:
    """Query TXT at ``qname`` and :meth:`~PolicyDiscovery.receive` a TxtOutcome."""

    qname: str


@dataclass(frozen=True, slots=True)
class NeedFetch:
    """GET ``url`` from ``host`` (SNI and Host) and receive a FetchOutcome."""

    url: str
    host: str
    txt_id: str


class PolicySource(StrEnum):
    """Where the effective policy came from."""

    FETCHED = "fetched"
    CACHE = "cache"
    NONE = "none"


class Trigger(StrEnum):
    """Why the discovery runs."""

    DELIVERY = "delivery"
    RECHECK = "recheck"  # APPLY-6: before a message blocked by enforce is failed
    REFRESH = "refresh"  # CACHE-7: background refresh, TXT not consulted


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """What discovery concluded. Nothing here ever asks for a deletion (AMB-11).

    Attributes:
        domain: the Policy Domain.
        trigger: delivery, recheck or refresh.
        source: where ``policy`` came from.
        policy: the effective policy (``mode: none`` included), or None.
        reason: why the cache was used or no policy applies; None when fetched.
        txt: what the TXT lookup said; None for a refresh.
        used_entry: the cached entry applied, when ``source`` is CACHE.
        new_entry: the entry to store, after a successful fetch.
        failure: the failed fetch to record, if any (with its result type).
        events: the events emitted, in order.
        at: the time discovery finished.
    """

    domain: str
    trigger: Trigger
    source: PolicySource
    policy: Policy | None
    reason: DecisionReason | None
    txt: TxtOutcome | None
    used_entry: CachedPolicy | None
    new_entry: CachedPolicy | None
    failure: FetchFailure | None
    events: tuple[LogEvent, ...]
    at: float

    @property
    def active(self) -> bool:
        """Whether a policy other than ``mode: none`` applies (RFC 8461 §5 (3))."""
        return self.policy is not None and self.policy.mode is not Mode.NONE


@dataclass(frozen=True, slots=True)
class Done:
    """Discovery is over; ``result`` says what to apply and what to store."""

    result: DiscoveryResult


class DiscoveryState(StrEnum):
    """The states of :class:`PolicyDiscovery`."""

    NEED_TXT = "need-txt"
    NEED_FETCH = "need-fetch"
    DONE = "done"


_S = DiscoveryState
# (state, input type) -> the states the machine may move to on that input.
_TRANSITIONS: Final[dict[tuple[DiscoveryState, type], frozenset[DiscoveryState]]] = {
    (_S.NEED_TXT, TxtFound): frozenset({_S.NEED_FETCH, _S.DONE}),
    (_S.NEED_TXT, TxtAbsent): frozenset({_S.DONE}),
    (_S.NEED_TXT, TxtInvalid): frozenset({_S.DONE}),
    (_S.NEED_TXT, TxtTempError): frozenset({_S.DONE}),
    (_S.NEED_FETCH, FetchOk): frozenset({_S.DONE}),
    (_S.NEED_FETCH, FetchFailed): frozenset({_S.DONE}),
}

_TXT_EVENTS: Final[dict[type, tuple[str, str]]] = {
    TxtFound: ("sts.txt.found", "info"),
    TxtAbsent: ("sts.txt.absent", "debug"),
    TxtInvalid: ("sts.txt.invalid", "info"),
    TxtTempError: ("sts.txt.temperror", "info"),
}

# A Policy Domain as the core takes it: lower-case A-labels, no root dot (DISC-2).
# Address literals have no policy (DISC-15) and are refused here.
_DOMAIN_RE: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def is_policy_media_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header value names ``text/plain``.

    AMB-12, FETCH-11: type and subtype compare case-insensitively, any
    parameters are accepted, and a missing header is not ``text/plain``.
    """
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip()
    return media_type.lower() == "text/plain"


class PolicyDiscovery:
    """The discovery state machine for one Policy Domain and one attempt.

    Args:
        domain: the Policy Domain, in lower-case A-labels without a root dot.
        now: the current time (POSIX seconds).
        cached: the store's entry for ``domain`` (expired or not), or None.
        last_failure: the domain's last failed fetch, or None.
        recheck: the APPLY-6 re-check: ignore the fetch throttle.
        retry_after: the FETCH-15 throttle in seconds.
        debug: keep Debug-level events; False leaves them out (the sink would drop them).

    Raises:
        ValueError: ``domain`` is not a normalised domain name, or ``cached``
            or ``last_failure`` belong to another domain.
    """

    def __init__(
        self,
        domain: str,
        now: float,
        *,
        cached: CachedPolicy | None = None,
        last_failure: FetchFailure | None = None,
        recheck: bool = False,
        retry_after: float = FETCH_RETRY_AFTER,
        debug: bool = True,
    ) -> None:
        if not _DOMAIN_RE.fullmatch(domain):
            raise ValueError(
                f"Policy Domain must be lower-case A-labels without a root dot: {domain!r}"
            )
        for what, owner in (("cached", cached), ("last_failure", last_failure)):
            if owner is not None and owner.domain != domain:
                raise ValueError(f"{what} belongs to {owner.domain!r}, not {domain!r}")
        self.domain = domain
        self.trigger = Trigger.RECHECK if recheck else Trigger.DELIVERY
        self._now = now
        self._cached = cached
        self._last_failure = last_failure
        self._retry_after = retry_after
        self._state = DiscoveryState.NEED_TXT
        self._debug = debug
        self._events: list[LogEvent] = []
        self._txt: TxtOutcome | None = None
        self._fetch: Fetch | None = None
        self._result: DiscoveryResult | None = None

    @classmethod
    def from_store(
        cls,
        store: PolicyStore,
        domain: str,
        now: float,
        *,
        recheck: bool = False,
        retry_after: float = FETCH_RETRY_AFTER,
        debug: bool = True,
    ) -> PolicyDiscovery:
        """A discovery primed with ``store``'s entry and last failure for ``domain``."""
        return cls(
            domain,
            now,
            cached=store.get(domain),
            last_failure=store.get_failure(domain),
            recheck=recheck,
            retry_after=retry_after,
            debug=debug,
        )

    @classmethod
    def for_refresh(
        cls, entry: CachedPolicy, now: float, *, txt_id: str | None = None
    ) -> PolicyDiscovery:
        """A background refresh of ``entry``: fetch over HTTPS at once (AMB-15, CACHE-7).

        Args:
            entry: the cached entry to refresh.
            now: the current time.
            txt_id: the id to store the new policy under; defaults to ``entry.txt_id``.

        Returns:
            A discovery in NEED_FETCH; on failure the entry, if still valid, stays.
        """
        machine = cls(entry.domain, now, cached=entry)
        machine.trigger = Trigger.REFRESH
        valid = entry if entry.is_valid(now) else None
        machine._start_fetch(Fetch(txt_id or entry.txt_id, fallback=valid))
        return machine

    @property
    def state(self) -> DiscoveryState:
        """The current state."""
        return self._state

    @property
    def events(self) -> tuple[LogEvent, ...]:
        """The events emitted so far."""
        return tuple(self._events)

    def events_since(self, count: int) -> list[LogEvent]:
        """The events after the first ``count`` (what a driver has not forwarded yet)."""
        return self._events[count:]

    def next_action(self) -> NeedTxt | NeedFetch | Done:
        """What the driver must do next; repeating the call returns the same answer."""
        if self._state is DiscoveryState.NEED_TXT:
            # RFC 8461 §3.1: the TXT record lives at _mta-sts.<Policy Domain> (DISC-1).
            return NeedTxt(qname=f"_mta-sts.{self.domain}")
        if self._state is DiscoveryState.NEED_FETCH:
            assert self._fetch is not None
            host = f"mta-sts.{self.domain}"
            return NeedFetch(url=self._fetch_url(), host=host, txt_id=self._fetch.txt_id)
        assert self._result is not None
        return Done(self._result)

    def receive(self, outcome: TxtOutcome | FetchOutcome, *, now: float | None = None) -> None:
        """Take the outcome of the action :meth:`next_action` asked for.

        Args:
            outcome: a TXT outcome in NEED_TXT, a fetch outcome in NEED_FETCH.
            now: the time the outcome arrived; defaults to the time so far.
                A fetch's entry is stamped with it (AMB-14).

        Raises:
            StateError: the outcome does not fit the current state.
            ValueError: ``now`` is earlier than the machine's time.
        """
        allowed = _TRANSITIONS.get((self._state, type(outcome)))
        if allowed is None:
            raise StateError("PolicyDiscovery", str(self._state), type(outcome).__name__)
        if now is not None:
            if now < self._now:
                raise ValueError(f"time went backwards: {now!r} < {self._now!r}")
            self._now = now
        if isinstance(outcome, FetchOk | FetchFailed):
            self._take_fetch(outcome)
        else:
            self._take_txt(outcome)
        assert self._state in allowed, (self._state, type(outcome).__name__)

    def plan(self, txt: TxtOutcome, *, now: float | None = None) -> CacheAction:
        """What the cache decision for ``txt`` would be, without taking it.

        A driver that can learn more before fetching (the policy cache other gateways
        share, docs/cluster.md) asks first; :meth:`receive` decides the same way.

        Args:
            txt: a TXT outcome.
            now: the time to decide at (default: the machine's time so far).
        """
        return decide(
            self._cached,
            txt,
            self._now if now is None else max(now, self._now),
            last_failure=self._last_failure,
            retry_after=self._retry_after,
            # APPLY-6: the last look before failing a message is never throttled.
            honour_throttle=self.trigger is not Trigger.RECHECK,
        )

    # --- transitions -----------------------------------------------------------

    def _take_txt(self, txt: TxtOutcome) -> None:
        self._txt = txt
        code, level = _TXT_EVENTS[type(txt)]
        if isinstance(txt, TxtFound):
            self._emit(code, level, txt_id=txt.record.id)
        elif isinstance(txt, TxtInvalid):
            self._emit(code, level, reason=str(txt.why.reason), detail=txt.why.detail)
        else:
            self._emit(code, level, detail=txt.detail)
        action = self.plan(txt)
        if isinstance(action, UseCached):
            self._finish_cached(action.entry, action.reason)
        elif isinstance(action, NoPolicy):
            self._finish_none(action.reason)
        else:
            self._start_fetch(action)

    def _start_fetch(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._state = DiscoveryState.NEED_FETCH
        url, trigger = self._fetch_url(), str(self.trigger)
        self._emit("sts.fetch.start", "debug", txt_id=fetch.txt_id, url=url, trigger=trigger)

    def _take_fetch(self, outcome: FetchOutcome) -> None:
        assert self._fetch is not None
        if isinstance(outcome, FetchFailed):
            self._fail_fetch(outcome)
            return
        if not is_policy_media_type(outcome.content_type):
            # RFC 8461 §3.2: the policy is served with media type "text/plain" (AMB-12).
            detail = f"Content-Type {outcome.content_type!r} is not text/plain"
            self._fail_fetch(FetchFailed(FetchErrorKind.MEDIA_TYPE, detail))
            return
        url = self._fetch_url()
        try:
            policy = parse_policy(outcome.body, source=url)
        except (ParseError, UnicodeDecodeError) as exc:
            # POL-15: an invalid body is never applied, not even in part.
            self._fail_fetch(FetchFailed(FetchErrorKind.BODY, str(exc)))
            return
        entry = on_fetch_success(self.domain, policy, self._fetch.txt_id, self._now)
        self._emit(
            "sts.policy.fetched",
            "debug",
            txt_id=entry.txt_id,
            mode=str(policy.mode),
            max_age=policy.max_age,
            expires_at=entry.expires_at,
            # AMB-13: max_age 0 applies to this attempt only.
            cached=entry.is_valid(self._now),
        )
        self._finish(PolicySource.FETCHED, policy, None, new_entry=entry)

    def _fail_fetch(self, failed: FetchFailed) -> None:
        assert self._fetch is not None
        txt_id = self._fetch.txt_id
        result_type = failed.kind.result_type
        if failed.kind is FetchErrorKind.TIMEOUT:
            # Seed Sep 19/24: the timeout line is printed at Debug ("Débogage : ...").
            self._emit("sts.fetch.timeout", "debug", txt_id=txt_id, detail=failed.detail)
        self._emit(
            "sts.fetch.failed",
            "info",
            txt_id=txt_id,
            url=self._fetch_url(),
            kind=str(failed.kind),
            result_type=str(result_type),
            detail=failed.detail,
        )
        failure = on_fetch_failure(
            self.domain, txt_id, self._now, result_type=result_type, detail=failed.detail
        )
        fallback = self._fetch.fallback
        refreshing = self.trigger is Trigger.REFRESH
        if refreshing and fallback is not None and fallback.policy.mode is not Mode.NONE:
            # CACHE-8: alert when refreshing a policy that still matters fails.
            fields = {**_entry_fields(fallback), "txt_id": txt_id, "detail": failed.detail}
            self._emit("sts.refresh.failed", "warning", **fields, result_type=str(result_type))
        if fallback is not None:
            # RFC 8461 §3.3 (CACHE-6): keep applying the unexpired cached policy.
            self._finish_cached(fallback, DecisionReason.FETCH_FAILED, failure=failure)
        else:
            # FETCH-14: no policy obtainable and nothing cached: no MTA-STS.
            self._finish_none(DecisionReason.FETCH_FAILED, failure=failure)

    # --- endings ---------------------------------------------------------------

    def _finish_cached(
        self, entry: CachedPolicy, reason: DecisionReason, *, failure: FetchFailure | None = None
    ) -> None:
        if self.trigger is not Trigger.REFRESH and self._debug:
            self._emit("sts.cache.valid", "debug", **_entry_fields(entry), reason=str(reason))
        self._finish(PolicySource.CACHE, entry.policy, reason, used_entry=entry, failure=failure)

    def _finish_none(self, reason: DecisionReason, *, failure: FetchFailure | None = None) -> None:
        self._emit("sts.policy.none", "debug", reason=str(reason))
        self._finish(PolicySource.NONE, None, reason, failure=failure)

    def _finish(
        self,
        source: PolicySource,
        policy: Policy | None,
        reason: DecisionReason | None,
        *,
        used_entry: CachedPolicy | None = None,
        new_entry: CachedPolicy | None = None,
        failure: FetchFailure | None = None,
    ) -> None:
        self._state = DiscoveryState.DONE
        self._result = DiscoveryResult(
            domain=self.domain,
            trigger=self.trigger,
            source=source,
            policy=policy,
            reason=reason,
            txt=self._txt,
            used_entry=used_entry,
            new_entry=new_entry,
            failure=failure,
            events=tuple(self._events),
            at=self._now,
        )

    def _fetch_url(self) -> str:
        # RFC 8461 §3.2: "https://mta-sts.example.com/.well-known/mta-sts.txt" (FETCH-1).
        return f"https://mta-sts.{self.domain}/.well-known/mta-sts.txt"

    def _emit(self, code: str, level: str, **fields: object) -> None:
        if level == "debug" and not self._debug:
            return
        self._events.append(
            LogEvent(code=code, fields={"domain": self.domain, **fields}, level=level, at=self._now)
        )


def _entry_fields(entry: CachedPolicy) -> dict[str, object]:
    return {"txt_id": entry.txt_id, "mode": str(entry.policy.mode), "expires_at": entry.expires_at}


def save_result(store: PolicyStore, result: DiscoveryResult) -> None:
    """Write what ``result`` learned into ``store``.

    A new entry replaces the old one and clears the failure record; a
    failure is recorded for the throttle; an applied policy marks the domain
    as used (which :func:`~engine.core.cache.refresh_due` looks at). Nothing
    is ever deleted (AMB-11).

    Args:
        store: the policy store.
        result: a finished discovery's result.
    """
    if result.new_entry is not None:
        store.put(result.new_entry)
        store.clear_failure(result.domain)
    if result.failure is not None:
        store.record_failure(result.failure)
    if result.policy is not None and result.trigger is not Trigger.REFRESH:
        store.mark_used(result.domain, result.at)
