"""One delivery attempt for one destination domain.

Theory of operation
-------------------
For the recipients of one message at one domain, :func:`deliver_domain`:

1. resolves the domain's Destination Controls profile and SMTP route;
2. finds the MTA-STS policy in force, when the profile has MTA-STS on, the TLS
   setting is not No and the domain is not routed (seed: routed domains skip
   MTA-STS; ``engine.delivery.mtasts`` drives discovery and the cache);
3. resolves next hops (``engine.delivery.nexthop``): MX in preference order, or the
   route hosts; a lookup error defers, never falls back (AMB-26). When one of the
   MX hosts is this sender (``[identity] names``), every MX at its preference or
   worse is dropped before anything else (RFC 5321 §5.1; RFC 8461 §8.4, MX-8);
4. walks the hosts once, in order (RFC 8461 §8.4, MX-8: an invalid candidate is
   an unreachable host), asking ``engine.core.controls.decide`` for each host's
   TLS requirement and ``engine.delivery.session`` to try each address;
5. gives every recipient an outcome: delivered, deferred (with the one reason
   and RFC 8460 result type that explain it) or bounced.

On the final attempt before a bounce, discovery runs in re-check mode: the TXT
record is looked up and a new policy fetched even inside the FETCH-15 retry
throttle (RFC 8461 §5.1, APPLY-6).

Nothing that goes wrong on one host escapes the walk: each piece of work on a
host (its lookups; each connection) runs inside one ``engine.delivery.attempt.Trial``,
the one boundary that contains faults (its module docstring says how).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from engine.core.controls import (
    DaneOption,
    DaneStatus,
    DestinationProfile,
    Route,
    RouteSts,
    TlsRequirement,
    TlsSetting,
    decide,
)
from engine.core.mx import normalize_host
from engine.core.policy import Mode, Policy
from engine.core.verdict import Outcome, TlsObservation, judge
from engine.delivery.attempt import Attempt, Plan, RecipientResult, Trial, report_failure
from engine.delivery.mtasts import discover_policy
from engine.delivery.nexthop import DaneState, NextHop, resolve_addresses, resolve_mx, resolve_tlsa
from engine.delivery.services import Services
from engine.delivery.session import ConnectionResult, Job, connect, run_session

__all__ = ["deliver_domain"]


_DANE_STATE = {
    DaneState.USABLE: DaneStatus.USABLE,
    DaneState.UNUSABLE: DaneStatus.UNUSABLE_ONLY,
    DaneState.NOT_APPLICABLE: DaneStatus.NOT_APPLICABLE,
    DaneState.DNS_ERROR: DaneStatus.DNS_ERROR,
    DaneState.NOT_CHECKED: DaneStatus.NOT_APPLICABLE,
}


@dataclass(slots=True)
class _Walk:
    """What the walk knows about the destination, shared by every host it tries."""

    services: Services
    domain: str
    attempt: Attempt
    profile: DestinationProfile
    routes: tuple[Route, ...]
    literal: str | None
    final: bool
    policy: Policy | None = None
    mx_secure: bool = False
    announce: bool = False  # "Applying MTA-STS policy" is still to be logged

    @property
    def want_dane(self) -> bool:
        # RFC 8461 §3.4 (DISC-15) / RFC 7672 §2.2 (DANE-36): no DANE for an address literal.
        return (
            self.profile.tls is not TlsSetting.NO
            and self.profile.dane is not DaneOption.NONE
            and self.literal is None
        )

    @property
    def route_sts(self) -> bool:
        # RFC 8461 §3.4 / DISC-13 (opt-in, AMB-31): the route host's domain is the Policy
        # Domain; the seed's default skips MTA-STS for routed domains instead.
        p = self.profile
        return (
            bool(self.routes)
            and p.route_sts is RouteSts.ROUTE_DOMAIN
            and p.tls is not TlsSetting.NO
            and p.mta_sts
        )


def _emit(services: Services, code: str, level: str = "info", **fields: object) -> None:
    services.emit(code, fields, level)


async def deliver_domain(
    services: Services,
    jobs: list[Job],
    domain: str,
    *,
    final: bool = False,
    report_mail: bool = False,
) -> list[list[RecipientResult]]:
    """Try once to deliver a batch of messages, all to recipients at ``domain``.

    The batch shares one policy discovery, one MX walk and, per address tried, one SMTP
    connection (docs/gateway-behaviour.md §4: up to ``max_messages_per_connection`` messages).
    Nothing that goes wrong on one host escapes (see the module docstring); every
    recipient ends with an outcome.

    Args:
        services: the engine's adapters.
        jobs: (message, [(rid, address), ...]) with every address at ``domain``.
        domain: the destination domain (lower-case A-labels).
        final: this is the last attempt before a bounce (APPLY-6 re-check).
        report_mail: a TLS report: RFC 8460 §3 (RPT-9) says report mail is delivered
            despite MTA-STS and DANE failures, so neither is applied and TLS is
            opportunistic (Preferred); its ``tls.session`` events say ``report_mail``.

    Returns:
        Per job, the result of each of its recipients, in order.
    """
    profile = services.config.profile_for(domain)
    if report_mail:
        profile = DestinationProfile(tls=TlsSetting.PREFERRED)
        # Its sessions are marked, so that the reporter never counts them (RPT-9).
        services = replace(services, report_mail=True)
    attempt = Attempt(
        domain,
        {m.mid: m for m, _ in jobs},
        {(m.mid, rid): rcpt for m, rcpts in jobs for rid, rcpt in rcpts},
    )
    walk = _Walk(
        services,
        domain,
        attempt,
        profile,
        services.config.routes_for(domain),
        _address_literal(domain),
        final,
    )
    candidates: list[tuple[int, str, int]] = []
    async with Trial(services, attempt) as trial:
        candidates = await _candidates(walk, trial)
    for pref, host, port in candidates:
        if not attempt.pending:
            break
        await _try_host(walk, pref, host, port)
    attempt.defer_pending()
    return [[attempt.results[m.mid, rid] for rid, _ in rcpts] for m, rcpts in jobs]


async def _policy(walk: _Walk, domain: str) -> Policy | None:
    s = walk.services
    result = await discover_policy(
        domain,
        resolver=s.resolver,
        fetcher=s.fetcher,
        store=s.store,
        clock=s.clock,
        sink=s.sink,
        recheck=walk.final,
        share=s.share,
    )
    return result.policy


async def _candidates(walk: _Walk, trial: Trial) -> list[tuple[int, str, int]]:
    """The domain's policy and its hosts in order (empty: the attempt ends here)."""
    attempt, profile = walk.attempt, walk.profile
    # RFC 8461 §3.4 (DISC-15) / RFC 7672 §2.2 (DANE-36): an address literal has no
    # MTA-STS policy and no DANE; it is delivered under the TLS setting alone.
    if (
        profile.tls is not TlsSetting.NO
        and profile.mta_sts
        and not walk.routes
        and walk.literal is None
    ):
        # RFC 8461 §5.1 (3) / APPLY-6: before a message blocked by `enforce` is failed for
        # good, the TXT record is looked up again and a new policy fetched. Every attempt
        # queries the TXT anyway; the final one also ignores the FETCH-15 retry throttle.
        trial.stage = "policy discovery"
        walk.policy = await _policy(walk, walk.domain)
        walk.announce = walk.policy is not None and walk.policy.mode is not Mode.NONE
    if walk.literal is not None:
        return [(0, walk.literal, 25)]
    if walk.routes:
        return [(i, r.host, r.port) for i, r in enumerate(walk.routes)]
    trial.stage = "mx lookup"
    mx = await resolve_mx(walk.services.resolver, walk.domain, walk.services.rng)
    if mx.status == "defer":
        attempt.last_reason, attempt.last_type = mx.detail, None
        return []
    if mx.status == "fail":
        attempt.bounce_all(mx.detail)
        return []
    walk.mx_secure = mx.secure
    candidates = [(pref, host, 25) for pref, host in mx.hosts]
    own = walk.services.config.identity.names
    if own:
        candidates, me = _before_self(candidates, own)
        if me is not None and not candidates:
            # RFC 5321 §5.1 then says "returned as undeliverable"; we defer instead
            # (deliberate): an MX set naming us first is usually a transient DNS or
            # configuration state, and the bounce profile still ends the retries.
            attempt.last_reason, attempt.last_type = _SELF_MOST_PREFERRED.format(*me), None
            return []
    return candidates


async def _try_host(walk: _Walk, pref: int, host: str, port: int) -> None:
    """One host: its lookups and decision in one trial, then one trial per address."""
    plan: Plan | None = None
    async with Trial(walk.services, walk.attempt, host, walk.want_dane) as trial:
        plan = await _plan(walk, trial, pref, host, port)
    if plan is None:
        return
    for address in plan.hop.addresses:
        session = await _connection(walk, plan, address)
        if (
            session.verdict is not None
            and session.verdict.outcome is Outcome.RECONNECT_CLEAR
            and walk.attempt.pending
        ):
            plain = decide(DestinationProfile(tls=TlsSetting.NO), mx_host=plan.hop.host)
            await _connection(walk, Plan(plan.hop, plain, walk.domain, None), address)
        if not walk.attempt.pending:
            return


async def _plan(walk: _Walk, trial: Trial, pref: int, host: str, port: int) -> Plan | None:
    """Look ``host`` up and decide its TLS requirement; None when it is not to be used."""
    services, domain = walk.services, walk.domain
    if walk.literal is not None:
        hop = NextHop(host, port, pref, (walk.literal,), canonical=host)
    else:
        trial.stage = "address lookup"
        hop = await resolve_addresses(services.resolver, host, port, preference=pref)
        if hop.addresses and walk.want_dane:
            trial.stage = "tlsa lookup"
            hop = await resolve_tlsa(services.resolver, hop)
    policy_domain = domain
    if walk.route_sts:
        trial.stage = "policy discovery"
        policy_domain = normalize_host(host)
        walk.policy = await _policy(walk, policy_domain)
        walk.announce = walk.policy is not None and walk.policy.mode is not Mode.NONE
    trial.stage = "decision"
    policy = walk.policy
    if walk.announce and policy is not None:
        # Seed (Sep 26, debug): "Applying MTA-STS policy" comes after the MX lookup,
        # right before the first connection.
        _emit(services, "sts.apply", domain=policy_domain, mode=policy.mode.value)
        walk.announce = False
    dane = _DANE_STATE[hop.dane]
    if (
        walk.want_dane
        and walk.profile.dane is DaneOption.OPPORTUNISTIC
        and hop.addresses
        and hop.dane is DaneState.NOT_APPLICABLE
    ):
        # docs/gateway-behaviour.md §5.3 [INF]: "DANE: No secure TLSA record found for MX host
        # <mx>, falling back to TLS setting" (RFC 7672 §2.2: insecure or denied).
        _emit(services, "dane.not.applicable", domain=domain, mx=hop.host)
    if walk.profile.dane is DaneOption.MANDATORY and not walk.mx_secure and not walk.routes:
        # RFC 7672 §2.2.1 / DANE-9: an insecure MX RRset under mandatory DANE: delay.
        dane = DaneStatus.NOT_APPLICABLE
    requirement = decide(
        walk.profile,
        mx_host=hop.host,
        policy=policy,
        dane=dane,
        routed=bool(walk.routes) and not walk.route_sts,
    )
    if not hop.addresses or requirement.defer_now is not None or not requirement.mx_permitted:
        _skip_host(services, domain, walk.attempt, hop, requirement)
        return None
    return Plan(hop, requirement, policy_domain, host if walk.routes else None)


async def _connection(walk: _Walk, plan: Plan, address: str) -> ConnectionResult:
    """One connection to ``address`` of the planned host, inside the boundary."""
    services = walk.services
    session = ConnectionResult(services.next_dcid())
    hop = plan.hop
    async with Trial(services, walk.attempt, hop.host, plan=plan, address=address) as trial:
        trial.session = session
        trial.client = await connect(services, session, hop, address)
        await run_session(
            services,
            trial.client,
            session,
            walk.attempt.pending_jobs(),
            domain=walk.domain,
            hop=hop,
            address=address,
            requirement=plan.requirement,
            next_hop_secure=walk.mx_secure,
            route_host=plan.route_host,
            policy_domain=plan.policy_domain,
        )
    return session


_SELF_MOST_PREFERRED = (
    "this sender is MX {1} (preference {0}) and no MX is more preferred "
    "(RFC 5321 §5.1: no delivery to an MX of its preference or worse)"
)


def _before_self(
    candidates: list[tuple[int, str, int]], own: tuple[str, ...]
) -> tuple[list[tuple[int, str, int]], tuple[int, str] | None]:
    """The MX candidates more preferred than this sender, and its own (preference, name).

    RFC 5321 §5.1: "The relay host MUST then inspect the list for any of the names or
    addresses by which it might be known in mail transactions. If a matching record is
    found, all records at that preference level and higher-numbered ones MUST be
    discarded from consideration." RFC 8461 §8.4 / MX-8: this happens on the MX list
    itself, before MTA-STS filters it, so a policy that excludes the more preferred MXs
    never lets mail through to a less preferred one ("mx3" behind a backup "self").
    """
    mine = [(pref, host) for pref, host, _ in candidates if normalize_host(host) in own]
    if not mine:
        return candidates, None
    me = min(mine)
    return [c for c in candidates if c[0] < me[0]], me


def _skip_host(
    services: Services, domain: str, attempt: Attempt, hop: NextHop, req: TlsRequirement
) -> None:
    if not hop.addresses:
        attempt.last_reason, attempt.last_type = hop.detail, None
        attempt.last_mx = hop.host
        return
    verdict = judge(
        TlsObservation(),
        req,
        now=services.clock.now(),
        roots=services.roots,
        rcpt_domain=domain,
        mx_host=hop.host,
    )
    attempt.last_reason = verdict.reason
    attempt.last_type = verdict.result_type
    attempt.last_mx = hop.host
    fields: dict[str, object] = {"domain": domain, "mx": hop.host, "detail": verdict.reason}
    if verdict.result_type is not None:
        fields["result_type"] = verdict.result_type.value
    services.emit("delivery.host.skipped", fields)
    report_failure(
        services,
        domain,
        hop,
        hop.addresses[0],
        services.interface,
        req,
        {
            "policy_type": verdict.policy_type.value if verdict.policy_type else None,
            "result_type": verdict.result_type.value if verdict.result_type else None,
            "reason_code": verdict.failure_reason_code,
        },
        dane=False,
    )


def _address_literal(domain: str) -> str | None:
    """The address of an RFC 5321 §4.1.3 address literal (``[192.0.2.1]``), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    inner = inner[5:] if inner.lower().startswith("ipv6:") else inner
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None
