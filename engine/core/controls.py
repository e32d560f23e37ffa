"""Destination Controls: the per-domain profile and the per-MX TLS decision.

Theory of operation
-------------------
For one MX host of one delivery, :func:`decide` turns the recipient domain's
:class:`DestinationProfile`, the MTA-STS policy in force (or None), the DANE
status of the MX and whether the domain is SMTP-routed into one
:class:`TlsRequirement`: what to attempt, what must be verified, what is only
reported, and what each kind of failure does. :mod:`engine.core.verdict`
judges what the connection showed against it.

The decision is the table of ``spec/docs/gateway-behaviour.md`` §2.1, kept below as data
(:data:`DECISION_TABLE`), rows 1–11 in order, first matching row wins. Two rows
do not decide but hand over to the MTA-STS rows: row 6 always, and row 5 when
``opportunistic_dane_fail_falls_back`` is set. With ``dane_audit_only`` a TLSA
mismatch (rows 3 and 5 on ``usable-fail``) hands over too: RFC 7672 §9.1 lets
local policy audit DANE, logging the failure but delivering (DANE-35). The deciding row's number and
citation travel in the requirement, so logs and tests can name it.

Composition (docs/gateway-behaviour.md §2.2):

* The TLS setting's own checks always apply (§1.1 per-setting behaviour).
* MTA-STS ``enforce`` keeps the setting's blocking checks and adds its own on
  top: STARTTLS mandatory, the MX must match a policy pattern (MX-1, MX-6),
  TLS >= 1.2 (CISCO 222782, AMB-33), a trusted chain and a SAN naming the MX
  host (RFC 8461 §4.2). So a hosted MX under Required-Verify + enforce fails the
  Verify algorithm with "peer cert does not match domain <rcpt>", and passes
  under Required-Verify Hosted; under Preferred + enforce the RFC checks alone
  decide, as in the seed's successful Sep 26 delivery.
* A usable, passing DANE replaces the PKIX and name checks of both; what is
  left of MTA-STS is set by the AMB-24 ``coexistence`` knob.
* ``testing`` checks and reports but never blocks (AMB-16, MX-7), unless
  ``sts_testing_falls_back`` is switched off.
* ``T = No`` evaluates neither DANE nor MTA-STS; routed domains skip MTA-STS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from engine.core.events import ResultType
from engine.core.mx import policy_permits
from engine.core.policy import Mode, Policy

__all__ = [
    "DECISION_TABLE",
    "Check",
    "Coexistence",
    "DaneOption",
    "DaneStatus",
    "DecisionFacts",
    "DecisionRow",
    "DestinationProfile",
    "FailureAction",
    "IpSortPref",
    "PostStarttlsFailure",
    "Route",
    "RouteSts",
    "RowOutcome",
    "StartTls",
    "TlsRequirement",
    "TlsSetting",
    "decide",
]


class TlsSetting(StrEnum):
    """The six outbound "TLS Support" values (docs/gateway-behaviour.md §1)."""

    NO = "no"
    PREFERRED = "preferred"
    REQUIRED = "required"
    PREFERRED_VERIFY = "preferred-verify"
    REQUIRED_VERIFY = "required-verify"
    REQUIRED_VERIFY_HOSTED = "required-verify-hosted"


class DaneOption(StrEnum):
    """The Destination Controls DANE option (docs/gateway-behaviour.md §2)."""

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    MANDATORY = "mandatory"


class DaneStatus(StrEnum):
    """What DANE says about one MX host (RFC 7672 §2.2), as the caller knows it.

    ``USABLE`` is the pre-handshake state (secure, usable TLSA present); the
    handshake turns it into ``USABLE_PASS`` or ``USABLE_FAIL``.
    """

    USABLE = "usable"
    USABLE_PASS = "usable-pass"
    USABLE_FAIL = "usable-fail"
    UNUSABLE_ONLY = "unusable-only"
    NOT_APPLICABLE = "not-applicable"
    DNS_ERROR = "dns-error"


class Coexistence(StrEnum):
    """AMB-24: what is left of MTA-STS when DANE passes."""

    HYBRID = "hybrid"  # keep the enforce MX allow-list; PKIX only reported (default)
    DANE_PRECEDENCE = "dane-precedence"  # MTA-STS ignored (seed row 2, Postfix)
    LITERAL = "literal"  # both must pass


class RouteSts(StrEnum):
    """MTA-STS for a domain with an SMTP route (seed vs RFC 8461 §3.4, AMB-31)."""

    SKIP = "skip"  # seed: "MTA-STS is not applied to domains with SMTP routes" (default)
    ROUTE_DOMAIN = "route-domain"  # RFC 8461 §3.4 / DISC-13: the route host is the Policy Domain


class PostStarttlsFailure(StrEnum):
    """[INF] knob: a Preferred handshake failure after the STARTTLS 220."""

    DEFER = "defer"  # the session is lost; retry later (docs/gateway-behaviour.md §1.1)
    CLEAR = "clear"  # reconnect and deliver in clear


class IpSortPref(StrEnum):
    """Address ordering within one MX preference (docs/gateway-behaviour.md §4)."""

    PREFER_V4 = "PREFER_V4"
    PREFER_V6 = "PREFER_V6"
    REQUIRE_V4 = "REQUIRE_V4"
    REQUIRE_V6 = "REQUIRE_V6"


class StartTls(StrEnum):
    """Whether to send STARTTLS, and whether TLS is a must."""

    NEVER = "never"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"


class Check(StrEnum):
    """One verification. Every name check includes a chain to a trusted root."""

    CISCO_VERIFY = "cisco-verify"
    CISCO_HOSTED_VERIFY = "cisco-hosted-verify"
    STS_PKIX = "sts-pkix"  # RFC 8461 §4.2: trusted chain + SAN DNS-ID for the MX host
    DANE = "dane"  # RFC 7672 §3: TLSA match replaces PKIX and names
    TLS_1_2 = "tls-1.2"  # AMB-33 protocol floor


class FailureAction(StrEnum):
    """What a failure does to this delivery attempt on this MX."""

    CLEAR = "clear"  # go on in clear on this connection (no 220 yet)
    RECONNECT_CLEAR = "reconnect-clear"  # post-220 knob: new connection, in clear
    DELIVER_UNVERIFIED = "deliver-unverified"  # TLS is up; deliver encrypted, unverified
    DEFER = "defer"  # nothing on this MX; try the next, else retry later


@dataclass(frozen=True, slots=True)
class Route:
    """An SMTP route target (``[routes]`` in the config)."""

    host: str
    port: int = 25


@dataclass(frozen=True, slots=True)
class DestinationProfile:
    """One Destination Controls entry, fully resolved against the Default entry.

    Attributes:
        tls: the TLS setting.
        dane: the DANE option (ignored when ``tls`` is No).
        mta_sts: MTA-STS on (AsyncOS 16.0+; not allowed with ``tls`` No).
        max_concurrency: simultaneous connections.
        max_messages_per_connection: messages before a new connection (CISCO 118548).
        bounce_profile: the name of the bounce profile.
        ip_sort_pref: address ordering.
        opportunistic_dane_fail_falls_back: [INF] row 5 goes on to the MTA-STS rows.
        sts_testing_falls_back: [INF] ``testing`` failures deliver anyway (RFC 8461 §5).
        preferred_post220_failure: [INF] Preferred handshake failure after 220.
        coexistence: AMB-24 reading when DANE passes.
        dane_audit_only: RFC 7672 §9.1 (MAY) audit only: a TLSA mismatch is logged
            (``dane.failed``) and the MX judged by the rows below, as if DANE were off.
        route_sts: MTA-STS for SMTP-routed domains: skipped (seed), or applied with the
            route host's domain as the Policy Domain (RFC 8461 §3.4, DISC-13).
    """

    tls: TlsSetting = TlsSetting.NO
    dane: DaneOption = DaneOption.NONE
    mta_sts: bool = False
    max_concurrency: int = 500
    max_messages_per_connection: int = 50
    bounce_profile: str = "default"
    ip_sort_pref: IpSortPref = IpSortPref.PREFER_V4
    opportunistic_dane_fail_falls_back: bool = False
    sts_testing_falls_back: bool = True
    preferred_post220_failure: PostStarttlsFailure = PostStarttlsFailure.DEFER
    coexistence: Coexistence = Coexistence.HYBRID
    route_sts: RouteSts = RouteSts.SKIP
    dane_audit_only: bool = False


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    """What one connection to one MX must achieve.

    Attributes:
        row: the deciding row of docs/gateway-behaviour.md §2.1.
        source: that row's citation (and modifiers applied).
        starttls: never / optional / mandatory.
        checks: blocking verifications.
        report_checks: verifications that are only reported (``testing``, AMB-24 hybrid).
        mx_permitted: False when ``enforce`` excludes this MX (MX-1, MX-6).
        report_mx_mismatch: ``testing``: the MX matches no pattern; use it, report it (MX-7).
        on_no_starttls: STARTTLS not offered, or its reply was not 220.
        on_handshake_failure: the handshake failed after the 220.
        on_verify_failure: TLS is up but a blocking check failed.
        defer_now: rows 3–5: do not connect; the result type to report.
        defer_reason: the reason text for ``defer_now``.
        sts_mode: the MTA-STS mode applied, or None when MTA-STS is not applied.
        dane_fallback: with a DANE check: the requirement that applies when the
            TLSA match fails (rows 3/5, or rows 7–11 with the fall-back knob).
    """

    row: int
    source: str
    starttls: StartTls
    checks: tuple[Check, ...] = ()
    report_checks: tuple[Check, ...] = ()
    mx_permitted: bool = True
    report_mx_mismatch: bool = False
    on_no_starttls: FailureAction = FailureAction.DEFER
    on_handshake_failure: FailureAction = FailureAction.DEFER
    on_verify_failure: FailureAction = FailureAction.DEFER
    defer_now: ResultType | None = None
    defer_reason: str = ""
    sts_mode: Mode | None = None
    dane_fallback: TlsRequirement | None = None

    @property
    def min_version(self) -> str | None:
        """The blocking protocol floor as the ``ssl`` version string, or None."""
        return "TLSv1.2" if Check.TLS_1_2 in self.checks else None


# --- the decision table -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    """The inputs of docs/gateway-behaviour.md §2.1 (T, D, R, dane, sts)."""

    tls: TlsSetting
    option: DaneOption
    dane: DaneStatus
    sts_on: bool  # MTA-STS enabled in the profile
    routed: bool
    sts: Mode | None  # None: ABSENT/SKIPPED (no TXT, fetch failed, invalid policy)


class RowOutcome(StrEnum):
    """What a decision-table row does."""

    PLAIN = "plain"
    DANE = "dane"
    DEFER = "defer"
    DEFER_OR_CONTINUE = "defer-or-continue"
    CONTINUE = "continue"
    UNDER_T = "under-t"
    STS_TESTING = "sts-testing"
    STS_ENFORCE = "sts-enforce"


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One row of docs/gateway-behaviour.md §2.1: number, citation, condition, outcome."""

    number: int
    source: str
    when: Callable[[DecisionFacts], bool]
    outcome: RowOutcome


_DANE_ON = (DaneOption.OPPORTUNISTIC, DaneOption.MANDATORY)
_S = DaneStatus

# fmt: off
# The table reads like docs/gateway-behaviour.md §2.1: (row, citation, condition, outcome).
DECISION_TABLE: tuple[DecisionRow, ...] = (
    DecisionRow(1, "gateway §2.1 row 1 [SEED]: T = No: plain SMTP; DANE and MTA-STS not evaluated",
                lambda f: f.tls is TlsSetting.NO, RowOutcome.PLAIN),
    DecisionRow(2, "gateway §2.1 row 2 [SEED]: DANE usable and passing: TLS authenticated by DANE",
                lambda f: f.option in _DANE_ON and f.dane in (_S.USABLE, _S.USABLE_PASS),
                RowOutcome.DANE),
    DecisionRow(3, "gateway §2.1 row 3 [SEED]: Mandatory DANE failed or not applicable: deferred",
                lambda f: f.option is DaneOption.MANDATORY
                and f.dane in (_S.USABLE_FAIL, _S.NOT_APPLICABLE, _S.UNUSABLE_ONLY),
                RowOutcome.DEFER),
    DecisionRow(4, "gateway §2.1 row 4 [INF] / RFC 7672 §2.2.3: DANE DNS error: deferred",
                lambda f: f.option in _DANE_ON and f.dane is _S.DNS_ERROR, RowOutcome.DEFER),
    DecisionRow(5, "gateway §2.1 row 5 [INF] / RFC 7672 §2.2: Opportunistic DANE failed: deferred",
                lambda f: f.option is DaneOption.OPPORTUNISTIC and f.dane is _S.USABLE_FAIL,
                RowOutcome.DEFER_OR_CONTINUE),
    DecisionRow(6, "gateway §2.1 row 6 [SEED]: DANE not applicable or off: on to the MTA-STS rows",
                lambda f: f.option is DaneOption.NONE
                or f.dane in (_S.NOT_APPLICABLE, _S.UNUSABLE_ONLY),
                RowOutcome.CONTINUE),
    DecisionRow(7, "gateway §2.1 row 7 [SEED]: MTA-STS off, or SMTP-routed domain: deliver under T",
                lambda f: not f.sts_on or f.routed, RowOutcome.UNDER_T),
    DecisionRow(8, "gateway §2.1 row 8 [SEED]: no MTA-STS policy (absent/skipped): deliver under T",
                lambda f: f.sts is None, RowOutcome.UNDER_T),
    DecisionRow(9, "gateway §2.1 row 9 [INF] / RFC 8461 §5: mode none: policy ignored, under T",
                lambda f: f.sts is Mode.NONE, RowOutcome.UNDER_T),
    DecisionRow(10, "gateway §2.1 row 10 [INF] / RFC 8461 §5: testing: check, report, under T",
                lambda f: f.sts is Mode.TESTING, RowOutcome.STS_TESTING),
    DecisionRow(11, "gateway §2.1 row 11 [SEED] / RFC 8461 §5: enforce: MX list, TLS>=1.2, PKIX",
                lambda f: f.sts is Mode.ENFORCE, RowOutcome.STS_ENFORCE),
)
# fmt: on

_UNUSABLE_NOTE = "; RFC 7672 §2.2 / AMB-28: unusable TLSA only: TLS mandatory, unauthenticated"


def decide(
    profile: DestinationProfile,
    *,
    mx_host: str,
    policy: Policy | None = None,
    dane: DaneStatus = DaneStatus.NOT_APPLICABLE,
    routed: bool = False,
) -> TlsRequirement:
    """The TLS requirement for one MX host of one delivery.

    Args:
        profile: the recipient domain's resolved Destination Controls profile.
        mx_host: the MX RR target (or the route host for a routed domain).
        policy: the MTA-STS policy in force, or None when absent or skipped.
        dane: the DANE status of this MX (``USABLE`` before the handshake).
        routed: the domain has an SMTP route (MTA-STS is then skipped; seed).

    Returns:
        The requirement, naming the deciding row of docs/gateway-behaviour.md §2.1.
    """
    facts = DecisionFacts(
        tls=profile.tls,
        option=profile.dane,
        dane=dane,
        sts_on=profile.mta_sts,
        routed=routed,
        sts=policy.mode if policy is not None else None,
    )
    notes = ""
    for row in DECISION_TABLE:
        if not row.when(facts):
            continue
        outcome = row.outcome
        if profile.dane_audit_only and dane is DaneStatus.USABLE_FAIL and row.number in (3, 5):
            # RFC 7672 §9.1: "audit only" local policy: the TLSA mismatch is logged (the
            # session's dane.failed) and does not block; on to the MTA-STS rows (DANE-35).
            notes += "; dane_audit_only: TLSA mismatch logged, on to the MTA-STS rows"
            continue
        if outcome is RowOutcome.DEFER_OR_CONTINUE:
            # [INF] knob: docs/gateway-behaviour.md §2 "opportunistic_dane_fail_falls_back".
            if not profile.opportunistic_dane_fail_falls_back:
                return _deferred(row, dane, mx_host)
            notes += "; opportunistic_dane_fail_falls_back: on to the MTA-STS rows"
            continue
        if outcome is RowOutcome.CONTINUE:
            if profile.dane is DaneOption.OPPORTUNISTIC and dane is DaneStatus.UNUSABLE_ONLY:
                notes += _UNUSABLE_NOTE
            continue
        if outcome is RowOutcome.DEFER:
            return _deferred(row, dane, mx_host)
        if outcome is RowOutcome.PLAIN:
            return TlsRequirement(row=row.number, source=row.source, starttls=StartTls.NEVER)
        if outcome is RowOutcome.DANE:
            return _dane_requirement(row, profile, facts, policy, mx_host)
        req = _build_sts_rows(row, outcome, profile, policy, mx_host)
        req = replace(req, source=req.source + notes)
        if _UNUSABLE_NOTE in notes:
            req = _tls_mandatory(req)
        return req
    raise RuntimeError(f"no decision-table row matched {facts!r}")  # rows 6–11 are exhaustive


def _under_setting(
    row: DecisionRow, tls: TlsSetting, profile: DestinationProfile
) -> TlsRequirement:
    """docs/gateway-behaviour.md §1.1: the per-setting behaviour ("deliver under T")."""
    base = TlsRequirement(row=row.number, source=row.source, starttls=StartTls.MANDATORY)
    # docs/gateway-behaviour.md §1.1 note [CISCO 118955]: fall back to clear only before the
    # 220 reply; after it, the session is lost ([INF] knob preferred_post220_failure).
    post220 = (
        FailureAction.RECONNECT_CLEAR
        if profile.preferred_post220_failure is PostStarttlsFailure.CLEAR
        else FailureAction.DEFER
    )
    if tls is TlsSetting.PREFERRED:
        # docs/gateway-behaviour.md §1.1 [CISCO 118955]: no CA check, no name check.
        return replace(
            base,
            starttls=StartTls.OPTIONAL,
            on_no_starttls=FailureAction.CLEAR,
            on_handshake_failure=post220,
        )
    if tls is TlsSetting.PREFERRED_VERIFY:
        # docs/gateway-behaviour.md §1.1 [CISCO*]: verification fails but TLS is up: delivered,
        # encrypted, unverified.
        return replace(
            base,
            starttls=StartTls.OPTIONAL,
            checks=(Check.CISCO_VERIFY,),
            on_no_starttls=FailureAction.CLEAR,
            on_handshake_failure=post220,
            on_verify_failure=FailureAction.DELIVER_UNVERIFIED,
        )
    if tls is TlsSetting.REQUIRED_VERIFY:
        # docs/gateway-behaviour.md §1.1 [SEED]:
        # "TLS deferring: verify error: peer cert does not match domain x".
        return replace(base, checks=(Check.CISCO_VERIFY,))
    if tls is TlsSetting.REQUIRED_VERIFY_HOSTED:
        # docs/gateway-behaviour.md §1.1 [SEED; CISCO 200537]: the Hosted Verify algorithm.
        return replace(base, checks=(Check.CISCO_HOSTED_VERIFY,))
    # docs/gateway-behaviour.md §1.1 [CISCO]: Required: no certificate check, never in clear.
    return base


def _build_sts_rows(
    row: DecisionRow,
    outcome: RowOutcome,
    profile: DestinationProfile,
    policy: Policy | None,
    mx_host: str,
) -> TlsRequirement:
    if outcome is RowOutcome.UNDER_T:
        return _under_setting(row, profile.tls, profile)
    assert policy is not None, "rows 10-11 need a policy"
    permitted = policy_permits(policy.mx, mx_host)
    if outcome is RowOutcome.STS_TESTING and profile.sts_testing_falls_back:
        # RFC 8461 §5 / AMB-16: run MX matching and PKIX, deliver anyway, report (MX-7).
        return replace(
            _under_setting(row, profile.tls, profile),
            report_checks=(Check.TLS_1_2, Check.STS_PKIX),
            report_mx_mismatch=not permitted,
            sts_mode=Mode.TESTING,
        )
    # docs/gateway-behaviour.md §2.1 row 11, composed as §2.2 says: the TLS setting's own
    # checks still apply and MTA-STS enforce adds its own on top. Only the *blocking* part of the
    # setting survives: a Preferred-Verify name check that would merely have delivered
    # unverified is dropped, since enforce never delivers on a failed check. This reading
    # fits both seed observations: under Preferred + enforce the seed delivers over a
    # certificate naming only *.mail123.domain.com (Sep 26 log), and under Required-Verify
    # a hosted MX fails with "peer cert does not match domain" until the setting becomes
    # Required-Verify Hosted (seed troubleshooting 1). The same applies to testing when
    # the [INF] knob sts_testing_falls_back is off.
    base = _under_setting(row, profile.tls, profile)
    own = base.checks if base.on_verify_failure is FailureAction.DEFER else ()
    return replace(
        base,
        # RFC 8461 §5 (CERT-1, CERT-2): STARTTLS is a must and nothing goes in clear.
        starttls=StartTls.MANDATORY,
        on_no_starttls=FailureAction.DEFER,
        on_handshake_failure=FailureAction.DEFER,
        on_verify_failure=FailureAction.DEFER,
        # RFC 8461 §4.2 + CISCO 222782 / AMB-33: the STS checks on top of the setting's own.
        checks=(*own, Check.TLS_1_2, Check.STS_PKIX),
        # RFC 8461 §4.1, §5 (MX-1, MX-6): an MX matching no pattern is not used.
        mx_permitted=permitted,
        sts_mode=policy.mode,
    )


def _dane_requirement(
    row: DecisionRow,
    profile: DestinationProfile,
    facts: DecisionFacts,
    policy: Policy | None,
    mx_host: str,
) -> TlsRequirement:
    # RFC 7672 §2.2: with usable TLSA, STARTTLS is mandatory; AMB-33: TLS >= 1.2.
    # docs/gateway-behaviour.md §2.2: DANE replaces the PKIX and name checks of the setting
    # and of MTA-STS.
    fallback = decide(
        profile, mx_host=mx_host, policy=policy, dane=DaneStatus.USABLE_FAIL, routed=facts.routed
    )
    req = TlsRequirement(
        row=row.number,
        source=row.source,
        starttls=StartTls.MANDATORY,
        checks=(Check.DANE, Check.TLS_1_2),
        dane_fallback=fallback,
    )
    sts_applies = facts.sts_on and not facts.routed and facts.sts in (Mode.ENFORCE, Mode.TESTING)
    if not sts_applies or policy is None or profile.coexistence is Coexistence.DANE_PRECEDENCE:
        # docs/gateway-behaviour.md §2.1 row 2 [SEED]: "MTA-STS ignored" (AMB-24 dane-precedence).
        return req
    permitted = policy_permits(policy.mx, mx_host)
    changes: dict[str, Any]
    if policy.mode is Mode.TESTING:
        # RFC 8461 §2 / COEX-2: testing never weakens DANE; its checks are only reported.
        changes = {"report_checks": (Check.STS_PKIX,), "report_mx_mismatch": not permitted}
    elif profile.coexistence is Coexistence.LITERAL:
        # AMB-24 literal: both must pass.
        changes = {"checks": (*req.checks, Check.STS_PKIX), "mx_permitted": permitted}
    else:
        # AMB-24 hybrid (COEX-4): keep the enforce MX allow-list; DANE decides the
        # certificate, the PKIX result is only reported.
        changes = {"report_checks": (Check.STS_PKIX,), "mx_permitted": permitted}
    note = f"; AMB-24 {profile.coexistence}"
    return replace(req, source=req.source + note, sts_mode=policy.mode, **changes)


def _deferred(row: DecisionRow, dane: DaneStatus, mx_host: str) -> TlsRequirement:
    # docs/requirements.md §1.11: the result type of each DANE failure.
    if dane is DaneStatus.DNS_ERROR:
        result, reason = ResultType.DNSSEC_INVALID, f"DANE lookup failed for MX host {mx_host}"
    elif dane is DaneStatus.NOT_APPLICABLE:
        result, reason = ResultType.DANE_REQUIRED, f"No secure TLSA record for MX host {mx_host}"
    else:
        result, reason = ResultType.TLSA_INVALID, f"DANE Failed for MX host {mx_host}"
    return TlsRequirement(
        row=row.number,
        source=row.source,
        starttls=StartTls.MANDATORY,
        mx_permitted=True,
        defer_now=result,
        defer_reason=reason,
    )


def _tls_mandatory(req: TlsRequirement) -> TlsRequirement:
    # RFC 7672 §2.2 (DANE-7, AMB-28): unusable-only TLSA: no cleartext, TLS >= 1.2 (AMB-33).
    checks = req.checks if Check.TLS_1_2 in req.checks else (*req.checks, Check.TLS_1_2)
    return replace(
        req,
        starttls=StartTls.MANDATORY,
        checks=checks,
        on_no_starttls=FailureAction.DEFER,
        on_handshake_failure=FailureAction.DEFER,
    )
