"""The I/O loop around :class:`~engine.core.discovery.PolicyDiscovery`.

The state machine decides; this driver only answers what it asks: a TXT
lookup through the engine's resolver, or an HTTPS fetch through the policy
fetcher. Events the machine emits are forwarded as they happen, so the
``mail_logs`` order matches the order of the exchanges.

With a :class:`PolicyShare` (gateways sharing state, docs/cluster.md), a TXT
answer that would make the local cache fetch is first checked against what the
other gateways learned (:meth:`PolicyShare.pull`), then under a fetch lease
(:meth:`PolicyShare.lease_or_wait`); when either brings the local store
something new the machine is made again from the store, before it took the
answer, so it decides on it and has emitted nothing twice. The decision stays
the core's (:meth:`PolicyDiscovery.plan`, :func:`engine.core.cache.decide`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.core.cache import (
    FETCH_RETRY_AFTER,
    CachedPolicy,
    Fetch,
    FetchFailure,
    PolicyStore,
    TxtAbsent,
    TxtFound,
    TxtInvalid,
    TxtOutcome,
    TxtTempError,
)
from engine.core.clock import Clock
from engine.core.discovery import (
    DiscoveryResult,
    Done,
    NeedFetch,
    NeedTxt,
    PolicyDiscovery,
    save_result,
)
from engine.core.events import EventSink, wants_debug
from engine.core.fastpaths import FAST_PATHS
from engine.core.txt import NoStsRecord, select_sts_record
from engine.io.dns import DnsAnswer, DnsResolver, DnsStatus
from engine.io.fetch import PolicyFetcher

__all__ = ["PolicyShare", "discover_policy", "refresh_policy", "txt_outcome"]


class PolicyShare(Protocol):
    """The policy cache several gateways share (``engine.io.redis_policy``).

    Every method answers from what it can reach now; none raises when the shared
    store is away (the gateway then goes on with its local cache).
    """

    async def pull(self, domain: str, store: PolicyStore) -> bool:
        """Copy what is newer in the shared cache into ``store``; True if it changed."""

    async def lease_or_wait(self, domain: str, txt_id: str, store: PolicyStore) -> bool:
        """Take the fetch lease, or wait for its holder's result (True: ``store`` changed)."""

    async def publish(
        self, domain: str, new_entry: CachedPolicy | None, failure: FetchFailure | None
    ) -> None:
        """Share a fetch's result and give back the lease."""


def txt_outcome(answer: DnsAnswer) -> TxtOutcome:
    """Classify a ``_mta-sts`` TXT answer (RFC 8461 §3.1)."""
    if answer.status.temporary:
        # AMB-10 / DISC-12: a lookup error is never "no policy" by itself.
        return TxtTempError(f"{answer.status.value}: {answer.detail}".rstrip(": "))
    if answer.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        return TxtAbsent(answer.status.value)
    # The warm path: the same records as last time mean the same (immutable) outcome.
    found = _FOUND.get(answer.records)
    if found is not None:
        return found
    # DISC-9: the resolver followed any CNAME at _mta-sts; the strings are the target's.
    selected = select_sts_record(answer.txt_strings(), source=answer.qname)
    if isinstance(selected, NoStsRecord):
        return TxtInvalid(selected)
    found = TxtFound(selected)
    if not FAST_PATHS:
        return found  # STS_ENGINE_NO_FAST_PATHS=1: no memo (engine.core.fastpaths)
    if len(_FOUND) >= _FOUND_SIZE:
        _FOUND.clear()
    _FOUND[answer.records] = found
    return found


# Valid record sets seen before and what they said (bounded; an invalid one is re-read,
# so its error keeps naming the domain it came from).
_FOUND: dict[tuple[object, ...], TxtFound] = {}
_FOUND_SIZE = 4096


#: Makes the discovery again from the local store (after the shared cache changed it).
_Remake = Callable[[], PolicyDiscovery]


async def _consult(
    discovery: PolicyDiscovery,
    txt: TxtOutcome,
    domain: str,
    shared: tuple[PolicyShare, PolicyStore, _Remake],
    clock: Clock,
) -> PolicyDiscovery:
    """Before taking ``txt``: if it means a fetch, ask the other gateways first."""
    share, store, remake = shared
    plan = discovery.plan(txt, now=clock.now())
    if not isinstance(plan, Fetch):
        return discovery  # the local cache answers: nothing to share
    if await share.pull(domain, store):
        discovery = remake()
        plan = discovery.plan(txt, now=clock.now())
        if not isinstance(plan, Fetch):
            return discovery
    if await share.lease_or_wait(domain, plan.txt_id, store):
        discovery = remake()  # another gateway fetched (or failed) meanwhile
    return discovery


async def _drive(
    discovery: PolicyDiscovery,
    domain: str,
    *,
    resolver: DnsResolver,
    fetcher: PolicyFetcher,
    clock: Clock,
    sink: EventSink,
    shared: tuple[PolicyShare, PolicyStore, _Remake] | None = None,
) -> DiscoveryResult:
    sent = 0
    while True:
        for event in discovery.events_since(sent):
            sink.emit(event)
            sent += 1
        action = discovery.next_action()
        if isinstance(action, Done):
            return action.result
        if isinstance(action, NeedTxt):
            answer = await resolver.query(action.qname, "TXT")
            txt = txt_outcome(answer)
            if shared is not None:
                # The machine has emitted nothing before its TXT answer: a new one from
                # the store can take its place.
                discovery = await _consult(discovery, txt, domain, shared, clock)
            discovery.receive(txt, now=clock.now())
        elif isinstance(action, NeedFetch):
            # RFC 8461 §3.3: the policy always comes from mta-sts.<Policy Domain> (DISC-9).
            outcome = await fetcher.fetch(domain)
            discovery.receive(outcome, now=clock.now())


async def discover_policy(
    domain: str,
    *,
    resolver: DnsResolver,
    fetcher: PolicyFetcher,
    store: PolicyStore,
    clock: Clock,
    sink: EventSink,
    recheck: bool = False,
    retry_after: float = FETCH_RETRY_AFTER,
    share: PolicyShare | None = None,
) -> DiscoveryResult:
    """Find the MTA-STS policy in force for ``domain`` and update the cache.

    Args:
        domain: the Policy Domain (lower-case A-labels).
        recheck: APPLY-6: look the TXT record up again before a final failure.
        share: the policy cache other gateways share, if any (docs/cluster.md).
    """

    def remake() -> PolicyDiscovery:
        return PolicyDiscovery.from_store(
            store,
            domain,
            clock.now(),
            recheck=recheck,
            retry_after=retry_after,
            debug=wants_debug(sink),
        )

    result = await _drive(
        remake(),
        domain,
        resolver=resolver,
        fetcher=fetcher,
        clock=clock,
        sink=sink,
        shared=None if share is None else (share, store, remake),
    )
    save_result(store, result)
    if share is not None and (result.new_entry is not None or result.failure is not None):
        await share.publish(domain, result.new_entry, result.failure)
    return result


async def refresh_policy(
    entry: CachedPolicy,
    *,
    resolver: DnsResolver,
    fetcher: PolicyFetcher,
    store: PolicyStore,
    clock: Clock,
    sink: EventSink,
    share: PolicyShare | None = None,
) -> DiscoveryResult:
    """Proactive refresh: fetch over HTTPS whatever the TXT says (AMB-15, CACHE-7).

    With ``share``, the result is shared (the caller took the fetch lease first).
    """
    discovery = PolicyDiscovery.for_refresh(entry, clock.now())
    result = await _drive(
        discovery, entry.domain, resolver=resolver, fetcher=fetcher, clock=clock, sink=sink
    )
    save_result(store, result)
    if share is not None and (result.new_entry is not None or result.failure is not None):
        await share.publish(entry.domain, result.new_entry, result.failure)
    return result
