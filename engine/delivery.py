"""One delivery attempt for one destination domain.

Theory of operation
-------------------
For the recipients of one message at one domain, :func:`deliver_domain`:

1. resolves the domain's Destination Controls profile and SMTP route;
2. finds the MTA-STS policy in force, when the profile has MTA-STS on, the TLS
   setting is not No and the domain is not routed (seed: routed domains skip
   MTA-STS; ``engine.mtasts`` drives discovery and the cache);
3. resolves next hops (``engine.nexthop``): MX in preference order, or the
   route hosts; a lookup error defers, never falls back (AMB-26). When one of the
   MX hosts is this sender (``[identity] names``), every MX at its preference or
   worse is dropped before anything else (RFC 5321 §5.1; RFC 8461 §8.4, MX-8);
4. walks the hosts once, in order (RFC 8461 §8.4, MX-8: an invalid candidate is
   an unreachable host), asking ``engine.core.controls.decide`` for each host's
   TLS requirement and ``engine.session.run_session`` to try each address;
5. gives every recipient an outcome: delivered, deferred (with the one reason
   and RFC 8460 result type that explain it) or bounced.

On the final attempt before a bounce, discovery runs in re-check mode: the TXT
record is looked up and a new policy fetched even inside the FETCH-15 retry
throttle (RFC 8461 §5.1, APPLY-6).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from engine.core.controls import (
    DaneOption,
    DaneStatus,
    DestinationProfile,
    RouteSts,
    TlsRequirement,
    TlsSetting,
    decide,
)
from engine.core.events import ResultType
from engine.core.mx import normalize_host
from engine.core.policy import Mode, Policy
from engine.core.verdict import Outcome, TlsObservation, judge
from engine.mtasts import discover_policy
from engine.nexthop import DaneState, NextHop, resolve_host, resolve_mx
from engine.services import Message, Services
from engine.session import Job, RcptOutcome, SessionResult, run_session

__all__ = ["RecipientResult", "deliver_domain"]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome of one recipient after one attempt.

    Attributes:
        rid: recipient index in the message.
        rcpt: the address.
        status: ``delivered`` | ``deferred`` | ``bounced``.
        mx: the host that took (or last refused) the message.
        address: the address connected to.
        tls: the TLS protocol used, or None for clear text.
        verified: ``dane`` | ``pkix`` | ``none`` (TLS unverified) | ``clear``.
        reason: the one reason that explains a failure.
        result_type: its RFC 8460 result type, if it has one.
        reply: the last SMTP reply concerning this recipient.
    """

    rid: int
    rcpt: str
    status: str
    mx: str | None = None
    address: str | None = None
    tls: str | None = None
    verified: str = "clear"
    reason: str = ""
    result_type: str | None = None
    reply: str | None = None
    dcid: int = 0


_DANE_STATE = {
    DaneState.USABLE: DaneStatus.USABLE,
    DaneState.UNUSABLE: DaneStatus.UNUSABLE_ONLY,
    DaneState.NOT_APPLICABLE: DaneStatus.NOT_APPLICABLE,
    DaneState.DNS_ERROR: DaneStatus.DNS_ERROR,
    DaneState.NOT_CHECKED: DaneStatus.NOT_APPLICABLE,
}


Key = tuple[int, int]  # (mid, rid)


@dataclass(slots=True)
class _Attempt:
    messages: dict[int, Message]
    pending: dict[Key, str]
    results: dict[Key, RecipientResult] = field(default_factory=dict)
    last_reason: str = ""
    last_type: ResultType | None = None
    last_mx: str | None = None
    last_dcid: int = 0


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
    connection (seg-behaviour §4: up to ``max_messages_per_connection`` messages).

    Args:
        services: the engine's adapters.
        jobs: (message, [(rid, address), ...]) with every address at ``domain``.
        domain: the destination domain (lower-case A-labels).

    Returns:
        Per job, the result of each of its recipients, in order.
        final: this is the last attempt before a bounce (APPLY-6 re-check).
        report_mail: a TLS report: RFC 8460 §3 (RPT-9) says report mail is delivered
            despite MTA-STS and DANE failures, so neither is applied and TLS is
            opportunistic (Preferred).
    """
    profile = services.config.profile_for(domain)
    if report_mail:
        profile = DestinationProfile(tls=TlsSetting.PREFERRED)
    literal = _address_literal(domain)
    routes = services.config.routes_for(domain)
    attempt = _Attempt(
        {m.mid: m for m, _ in jobs},
        {(m.mid, rid): rcpt for m, rcpts in jobs for rid, rcpt in rcpts},
    )
    policy: Policy | None = None
    # RFC 8461 §3.4 (DISC-15) / RFC 7672 §2.2 (DANE-36): an address literal has no
    # MTA-STS policy and no DANE; it is delivered under the TLS setting alone.
    sts_wanted = (
        profile.tls is not TlsSetting.NO and profile.mta_sts and not routes and literal is None
    )
    if sts_wanted:
        # RFC 8461 §5.1 (3) / APPLY-6: before a message blocked by `enforce` is failed for
        # good, the TXT record is looked up again and a new policy fetched. Every attempt
        # queries the TXT anyway; the final one also ignores the FETCH-15 retry throttle.
        policy = await _policy(services, domain, recheck=final)
    await _walk(
        services,
        domain,
        attempt,
        profile,
        policy=policy,
        routes=routes,
        literal=literal,
        final=final,
    )
    for (mid, rid), rcpt in sorted(attempt.pending.items()):
        attempt.results[mid, rid] = RecipientResult(
            rid,
            rcpt,
            "deferred",
            attempt.last_mx,
            reason=attempt.last_reason or "no host",
            result_type=attempt.last_type.value if attempt.last_type else None,
            dcid=attempt.last_dcid,
        )
    return [[attempt.results[m.mid, rid] for rid, _ in rcpts] for m, rcpts in jobs]


async def _policy(services: Services, domain: str, *, recheck: bool) -> Policy | None:
    result = await discover_policy(
        domain,
        resolver=services.resolver,
        fetcher=services.fetcher,
        store=services.store,
        clock=services.clock,
        sink=services.sink,
        recheck=recheck,
    )
    return result.policy


def _pending_jobs(attempt: _Attempt) -> list[Job]:
    """The recipients still pending, grouped by message, in MID then RID order."""
    jobs: dict[int, list[tuple[int, str]]] = {}
    for (mid, rid), rcpt in sorted(attempt.pending.items()):
        jobs.setdefault(mid, []).append((rid, rcpt))
    return [(attempt.messages[mid], rcpts) for mid, rcpts in jobs.items()]


async def _walk(
    services: Services,
    domain: str,
    attempt: _Attempt,
    profile: DestinationProfile,
    *,
    policy: Policy | None,
    routes: tuple[object, ...],
    literal: str | None = None,
    final: bool = False,
) -> None:
    want_dane = (
        profile.tls is not TlsSetting.NO and profile.dane is not DaneOption.NONE and literal is None
    )
    # RFC 8461 §3.4 / DISC-13 (opt-in, AMB-31): the route host's domain is the Policy
    # Domain; the seed's default skips MTA-STS for routed domains instead.
    route_sts = (
        bool(routes)
        and profile.route_sts is RouteSts.ROUTE_DOMAIN
        and profile.tls is not TlsSetting.NO
        and profile.mta_sts
    )
    candidates: list[tuple[int, str, int]]
    mx_secure = False
    if literal is not None:
        candidates = [(0, literal, 25)]
    elif routes:
        candidates = [(i, r.host, r.port) for i, r in enumerate(routes)]  # type: ignore[attr-defined]
    else:
        mx = await resolve_mx(services.resolver, domain, services.rng)
        if mx.status == "defer":
            attempt.last_reason, attempt.last_type = mx.detail, None
            return
        if mx.status == "fail":
            _bounce_all(attempt, mx.detail)
            return
        mx_secure = mx.secure
        candidates = [(pref, host, 25) for pref, host in mx.hosts]
        own = services.config.identity.names
        if own:
            candidates, me = _before_self(candidates, own)
            if me is not None and not candidates:
                # RFC 5321 §5.1 then says "returned as undeliverable"; we defer instead
                # (deliberate): an MX set naming us first is usually a transient DNS or
                # configuration state, and the bounce profile still ends the retries.
                attempt.last_reason, attempt.last_type = _SELF_MOST_PREFERRED.format(*me), None
                return
    applying = policy is not None and policy.mode is not Mode.NONE
    for pref, host, port in candidates:
        if not attempt.pending:
            return
        if literal is not None:
            hop = NextHop(host, port, pref, (literal,), canonical=host)
        else:
            hop = await resolve_host(
                services.resolver, host, port, preference=pref, want_dane=want_dane
            )
        policy_domain = domain
        if route_sts:
            policy_domain = normalize_host(host)
            policy = await _policy(services, policy_domain, recheck=final)
            applying = policy is not None and policy.mode is not Mode.NONE
        if applying and policy is not None:
            # Seed (Sep 26, debug): "Applying MTA-STS policy" comes after the MX lookup,
            # right before the first connection.
            _emit(services, "sts.apply", domain=policy_domain, mode=policy.mode.value)
            applying = False
        dane = _DANE_STATE[hop.dane]
        opportunistic = want_dane and profile.dane is DaneOption.OPPORTUNISTIC
        if opportunistic and hop.addresses and hop.dane is DaneState.NOT_APPLICABLE:
            # seg-behaviour §5.3 [INF]: "DANE: No secure TLSA record found for MX host
            # <mx>, falling back to TLS setting" (RFC 7672 §2.2: insecure or denied).
            _emit(services, "dane.not.applicable", domain=domain, mx=hop.host)
        if profile.dane is DaneOption.MANDATORY and not mx_secure and not routes:
            # RFC 7672 §2.2.1 / DANE-9: an insecure MX RRset under mandatory DANE: delay.
            dane = DaneStatus.NOT_APPLICABLE
        requirement = decide(
            profile,
            mx_host=hop.host,
            policy=policy,
            dane=dane,
            routed=bool(routes) and not route_sts,
        )
        if not hop.addresses or requirement.defer_now is not None or not requirement.mx_permitted:
            _skip_host(services, domain, attempt, hop, requirement)
            continue
        for address in hop.addresses:
            session = await run_session(
                services,
                _pending_jobs(attempt),
                domain=domain,
                hop=hop,
                address=address,
                requirement=requirement,
                next_hop_secure=mx_secure,
                route_host=host if routes else None,
                policy_domain=policy_domain,
            )
            if session.verdict is not None and session.verdict.outcome is Outcome.RECONNECT_CLEAR:
                plain = decide(DestinationProfile(tls=TlsSetting.NO), mx_host=hop.host)
                session = await run_session(
                    services,
                    _pending_jobs(attempt),
                    domain=domain,
                    hop=hop,
                    address=address,
                    requirement=plain,
                    next_hop_secure=mx_secure,
                )
            _absorb(attempt, hop, address, session, policy)
            if not attempt.pending:
                break
        if not attempt.pending:
            return


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
    services: Services, domain: str, attempt: _Attempt, hop: NextHop, req: TlsRequirement
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
    _emit(
        services,
        "tls.session",
        "debug",
        domain=domain,
        mx=hop.host,
        tlsa_base=hop.tlsa_base,
        receiving_ip=hop.addresses[0],
        sending_ip=services.interface,
        row=req.row,
        sts_mode=req.sts_mode.value if req.sts_mode else None,
        dane=False,
        success=False,
        outcome="defer",
        failures=[
            {
                "policy_type": verdict.policy_type.value if verdict.policy_type else None,
                "result_type": verdict.result_type.value if verdict.result_type else None,
                "reason_code": verdict.failure_reason_code,
            }
        ],
    )


def _absorb(
    attempt: _Attempt, hop: NextHop, address: str, session: SessionResult, policy: Policy | None
) -> None:
    attempt.last_mx = hop.host
    attempt.last_dcid = session.dcid
    if session.reason:
        attempt.last_reason = session.reason
        attempt.last_type = session.result_type
    obs = session.observation
    for out in session.outcomes:
        attempt.pending.pop((out.mid, out.rid), None)
        attempt.results[out.mid, out.rid] = _result(out, hop, address, session, obs)


def _result(
    out: RcptOutcome,
    hop: NextHop,
    address: str,
    session: SessionResult,
    obs: TlsObservation | None,
) -> RecipientResult:
    verdict = session.verdict
    tls = obs.protocol if obs is not None and obs.handshake_ok else None
    verified = "clear"
    if tls is not None and verdict is not None:
        if verdict.outcome is Outcome.DELIVER_VERIFIED:
            verified = "dane" if "dane" in verdict.reason else "pkix"
        else:
            verified = "none"
    return RecipientResult(
        out.rid,
        out.rcpt,
        out.status,
        hop.host,
        address,
        tls,
        verified,
        reason=out.reason if out.status != "delivered" else "",
        reply=str(out.reply) if out.reply is not None else None,
        dcid=session.dcid,
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


def _bounce_all(attempt: _Attempt, reason: str) -> None:
    for (mid, rid), rcpt in list(attempt.pending.items()):
        attempt.results[mid, rid] = RecipientResult(rid, rcpt, "bounced", reason=reason)
    attempt.pending.clear()
