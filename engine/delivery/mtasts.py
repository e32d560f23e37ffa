"""The I/O loop around :class:`~engine.core.discovery.PolicyDiscovery`.

The state machine decides; this driver only answers what it asks: a TXT
lookup through the engine's resolver, or an HTTPS fetch through the policy
fetcher. Events the machine emits are forwarded as they happen, so the
``mail_logs`` order matches the order of the exchanges.
"""

from __future__ import annotations

from engine.core.cache import (
    FETCH_RETRY_AFTER,
    CachedPolicy,
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

__all__ = ["discover_policy", "refresh_policy", "txt_outcome"]


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


async def _drive(
    discovery: PolicyDiscovery,
    domain: str,
    *,
    resolver: DnsResolver,
    fetcher: PolicyFetcher,
    clock: Clock,
    sink: EventSink,
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
            discovery.receive(txt_outcome(answer), now=clock.now())
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
) -> DiscoveryResult:
    """Find the MTA-STS policy in force for ``domain`` and update the cache.

    Args:
        domain: the Policy Domain (lower-case A-labels).
        recheck: APPLY-6: look the TXT record up again before a final failure.
    """
    discovery = PolicyDiscovery.from_store(
        store,
        domain,
        clock.now(),
        recheck=recheck,
        retry_after=retry_after,
        debug=wants_debug(sink),
    )
    result = await _drive(
        discovery, domain, resolver=resolver, fetcher=fetcher, clock=clock, sink=sink
    )
    save_result(store, result)
    return result


async def refresh_policy(
    entry: CachedPolicy,
    *,
    resolver: DnsResolver,
    fetcher: PolicyFetcher,
    store: PolicyStore,
    clock: Clock,
    sink: EventSink,
) -> DiscoveryResult:
    """Proactive refresh: fetch over HTTPS whatever the TXT says (AMB-15, CACHE-7)."""
    discovery = PolicyDiscovery.for_refresh(entry, clock.now())
    result = await _drive(
        discovery, entry.domain, resolver=resolver, fetcher=fetcher, clock=clock, sink=sink
    )
    save_result(store, result)
    return result
