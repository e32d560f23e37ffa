"""engine.core.controls: docs/gateway-behaviour.md §2.1 rows 1–11, composed as §2.2 says."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.controls import (
    DECISION_TABLE,
    Check,
    Coexistence,
    DaneOption,
    DaneStatus,
    DestinationProfile,
    FailureAction,
    PostStarttlsFailure,
    Route,
    StartTls,
    TlsRequirement,
    TlsSetting,
    decide,
)
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy

MX = "mx1.example.com"
A, D, M = FailureAction, DaneOption, Mode


def policy(mode: Mode, *patterns: str) -> Policy:
    mx = tuple(
        MxPattern(p[2:], wildcard=True) if p.startswith("*.") else MxPattern(p)
        for p in patterns or (MX,)
    )
    return Policy(mode=mode, max_age=86400, mx=mx)


def req(
    tls: TlsSetting = TlsSetting.PREFERRED,
    *,
    dane_option: DaneOption = D.NONE,
    dane: DaneStatus = DaneStatus.NOT_APPLICABLE,
    mode: Mode | None = None,
    mta_sts: bool = True,
    routed: bool = False,
    mx: str = MX,
    pol: Policy | None = None,
    **knobs: Any,
) -> TlsRequirement:
    profile = DestinationProfile(tls=tls, dane=dane_option, mta_sts=mta_sts, **knobs)
    if pol is None and mode is not None:
        pol = policy(mode)
    return decide(profile, mx_host=mx, policy=pol, dane=dane, routed=routed)


# --- the table itself ---------------------------------------------------------------


def test_table_has_rows_1_to_11_in_order_each_citing_its_row() -> None:
    assert [r.number for r in DECISION_TABLE] == list(range(1, 12))
    for row in DECISION_TABLE:
        assert row.source.startswith(f"gateway §2.1 row {row.number} [")


def test_profile_defaults() -> None:
    p = DestinationProfile()
    assert (p.tls, p.dane, p.mta_sts) == (TlsSetting.NO, DaneOption.NONE, False)
    assert (p.max_concurrency, p.max_messages_per_connection) == (500, 50)
    assert p.opportunistic_dane_fail_falls_back is False
    assert p.sts_testing_falls_back is True
    assert p.preferred_post220_failure is PostStarttlsFailure.DEFER
    assert p.coexistence is Coexistence.HYBRID
    assert p.dane_audit_only is False
    assert Route("relay.example.net") == Route("relay.example.net", 25)


# --- row 1 -------------------------------------------------------------------------


@pytest.mark.parametrize("dane", list(DaneStatus))
def test_row1_tls_no_evaluates_neither_dane_nor_sts(dane: DaneStatus) -> None:
    r = req(TlsSetting.NO, dane_option=D.MANDATORY, dane=dane, mode=M.ENFORCE, mx="other.example")
    assert r.row == 1 and r.starttls is StartTls.NEVER
    assert r.checks == () and r.mx_permitted and r.defer_now is None and r.sts_mode is None


# --- rows 2-6: DANE -----------------------------------------------------------------


@pytest.mark.parametrize("option", [D.OPPORTUNISTIC, D.MANDATORY])
@pytest.mark.parametrize("dane", [DaneStatus.USABLE, DaneStatus.USABLE_PASS])
def test_row2_dane_authenticates(option: DaneOption, dane: DaneStatus) -> None:
    r = req(TlsSetting.PREFERRED_VERIFY, dane_option=option, dane=dane)
    assert r.row == 2 and r.starttls is StartTls.MANDATORY
    # docs/gateway-behaviour.md §2.2: DANE replaces the setting's Verify check; AMB-33: TLS >= 1.2.
    assert r.checks == (Check.DANE, Check.TLS_1_2) and r.min_version == "TLSv1.2"
    assert r.on_no_starttls is A.DEFER and r.on_verify_failure is A.DEFER
    assert r.dane_fallback is not None and r.dane_fallback.row in (3, 5)


@pytest.mark.parametrize(
    ("dane", "result"),
    [
        (DaneStatus.USABLE_FAIL, ResultType.TLSA_INVALID),
        (DaneStatus.NOT_APPLICABLE, ResultType.DANE_REQUIRED),
        (DaneStatus.UNUSABLE_ONLY, ResultType.TLSA_INVALID),
    ],
)
def test_row3_mandatory_dane_not_delivered(dane: DaneStatus, result: ResultType) -> None:
    r = req(TlsSetting.PREFERRED, dane_option=D.MANDATORY, dane=dane, mode=M.ENFORCE)
    assert r.row == 3 and r.defer_now is result and MX in r.defer_reason


@pytest.mark.parametrize("option", [D.OPPORTUNISTIC, D.MANDATORY])
def test_row4_dane_dns_error_defers(option: DaneOption) -> None:
    r = req(dane_option=option, dane=DaneStatus.DNS_ERROR, mode=M.ENFORCE)
    assert r.row == 4 and r.defer_now is ResultType.DNSSEC_INVALID  # COEX-3


def test_row5_opportunistic_dane_failure_defers_by_default() -> None:
    r = req(dane_option=D.OPPORTUNISTIC, dane=DaneStatus.USABLE_FAIL, mode=M.ENFORCE)
    assert r.row == 5 and r.defer_now is ResultType.TLSA_INVALID  # COEX-1


def test_row5_knob_falls_back_to_the_sts_rows() -> None:
    r = req(
        dane_option=D.OPPORTUNISTIC,
        dane=DaneStatus.USABLE_FAIL,
        mode=M.ENFORCE,
        opportunistic_dane_fail_falls_back=True,
    )
    assert r.row == 11 and r.defer_now is None and "opportunistic_dane_fail_falls_back" in r.source
    pending = req(
        dane_option=D.OPPORTUNISTIC, dane=DaneStatus.USABLE, opportunistic_dane_fail_falls_back=True
    )
    assert pending.row == 2 and pending.dane_fallback is not None
    assert pending.dane_fallback.row == 8 and pending.dane_fallback.defer_now is None


@pytest.mark.parametrize(("option", "row"), [(D.MANDATORY, 3), (D.OPPORTUNISTIC, 5)])
def test_dane_audit_only_hands_a_tlsa_mismatch_to_the_rows_below(
    option: DaneOption, row: int
) -> None:
    # RFC 7672 §9.1 (DANE-35): audit only: the mismatch is logged, the MX judged under T.
    assert req(dane_option=option, dane=DaneStatus.USABLE_FAIL, mode=M.ENFORCE).row == row
    r = req(dane_option=option, dane=DaneStatus.USABLE_FAIL, mode=M.ENFORCE, dane_audit_only=True)
    assert r.row == 11 and r.defer_now is None and "dane_audit_only" in r.source
    pending = req(dane_option=option, dane=DaneStatus.USABLE, dane_audit_only=True)
    assert pending.row == 2 and pending.dane_fallback is not None
    assert pending.dane_fallback.row == 8 and pending.dane_fallback.defer_now is None


@pytest.mark.parametrize("dane", [DaneStatus.NOT_APPLICABLE, DaneStatus.UNUSABLE_ONLY])
def test_dane_audit_only_keeps_mandatory_dane_without_usable_tlsa(dane: DaneStatus) -> None:
    # Audit concerns a TLSA mismatch; Mandatory DANE with no usable TLSA still defers.
    r = req(dane_option=D.MANDATORY, dane=dane, dane_audit_only=True)
    assert r.row == 3 and r.defer_now is not None


def test_row6_opportunistic_not_applicable_goes_on_under_t() -> None:
    r = req(TlsSetting.PREFERRED, dane_option=D.OPPORTUNISTIC, mta_sts=False)
    assert r.row == 7 and r.starttls is StartTls.OPTIONAL and r.on_no_starttls is A.CLEAR


@pytest.mark.parametrize("dane", list(DaneStatus))
def test_row6_dane_none_ignores_the_dane_status(dane: DaneStatus) -> None:
    r = req(TlsSetting.PREFERRED, dane_option=D.NONE, dane=dane, mta_sts=False)
    assert r.row == 7 and Check.DANE not in r.checks and r.defer_now is None


def test_row6_opportunistic_unusable_only_makes_tls_mandatory() -> None:
    # RFC 7672 §2.2 / AMB-28: TLS mandatory without authentication, never clear.
    r = req(TlsSetting.PREFERRED, dane_option=D.OPPORTUNISTIC, dane=DaneStatus.UNUSABLE_ONLY)
    assert r.row == 8 and r.starttls is StartTls.MANDATORY
    assert r.on_no_starttls is A.DEFER and r.on_handshake_failure is A.DEFER
    assert r.checks == (Check.TLS_1_2,) and "AMB-28" in r.source


# --- rows 7-9: deliver under T --------------------------------------------------------


def test_row7_sts_off_in_profile() -> None:
    r = req(TlsSetting.REQUIRED, mta_sts=False, mode=M.ENFORCE, mx="not-listed.example")
    assert r.row == 7 and r.mx_permitted and r.sts_mode is None


def test_row7_routed_domain_skips_mta_sts() -> None:
    r = req(TlsSetting.REQUIRED, mode=M.ENFORCE, routed=True, mx="relay.example.net")
    assert r.row == 7 and r.mx_permitted and Check.STS_PKIX not in r.checks


def test_row8_no_policy() -> None:
    r = req(TlsSetting.PREFERRED, mode=None)
    assert r.row == 8 and r.starttls is StartTls.OPTIONAL and r.sts_mode is None


def test_row9_mode_none_is_ignored() -> None:
    r = req(TlsSetting.PREFERRED, mode=M.NONE, mx="not-listed.example")  # APPLY-5
    assert r.row == 9 and r.mx_permitted and not r.report_mx_mismatch and r.report_checks == ()


# Each TLS setting "under T" (docs/gateway-behaviour.md §1.1): attempt, checks, and the three
# failure actions.
SETTINGS = [
    (TlsSetting.PREFERRED, StartTls.OPTIONAL, (), A.CLEAR, A.DEFER, A.DEFER),
    (TlsSetting.REQUIRED, StartTls.MANDATORY, (), A.DEFER, A.DEFER, A.DEFER),
    (
        TlsSetting.PREFERRED_VERIFY,
        StartTls.OPTIONAL,
        (Check.CISCO_VERIFY,),
        A.CLEAR,
        A.DEFER,
        A.DELIVER_UNVERIFIED,
    ),
    (
        TlsSetting.REQUIRED_VERIFY,
        StartTls.MANDATORY,
        (Check.CISCO_VERIFY,),
        A.DEFER,
        A.DEFER,
        A.DEFER,
    ),
    (
        TlsSetting.REQUIRED_VERIFY_HOSTED,
        StartTls.MANDATORY,
        (Check.CISCO_HOSTED_VERIFY,),
        A.DEFER,
        A.DEFER,
        A.DEFER,
    ),
]


@pytest.mark.parametrize(("tls", "starttls", "checks", "no_tls", "hs", "verify"), SETTINGS)
def test_each_tls_setting_under_t(
    tls: TlsSetting,
    starttls: StartTls,
    checks: tuple[Check, ...],
    no_tls: FailureAction,
    hs: FailureAction,
    verify: FailureAction,
) -> None:
    r = req(tls, mta_sts=False)
    assert (r.row, r.starttls, r.checks) == (7, starttls, checks)
    assert (r.on_no_starttls, r.on_handshake_failure, r.on_verify_failure) == (no_tls, hs, verify)
    assert r.min_version is None  # no floor for the plain settings ([INF])


@pytest.mark.parametrize("tls", [TlsSetting.PREFERRED, TlsSetting.PREFERRED_VERIFY])
def test_post220_knob_reconnects_in_clear(tls: TlsSetting) -> None:
    r = req(tls, mta_sts=False, preferred_post220_failure=PostStarttlsFailure.CLEAR)
    assert r.on_handshake_failure is A.RECONNECT_CLEAR and r.on_no_starttls is A.CLEAR
    assert req(TlsSetting.REQUIRED, mta_sts=False).on_handshake_failure is A.DEFER


# --- row 10: testing ------------------------------------------------------------------


def test_row10_testing_reports_and_never_blocks() -> None:
    r = req(TlsSetting.PREFERRED, mode=M.TESTING, mx="not-listed.example")  # MX-7, AMB-16
    assert r.row == 10 and r.sts_mode is M.TESTING
    assert r.mx_permitted and r.report_mx_mismatch
    assert r.checks == () and r.report_checks == (Check.TLS_1_2, Check.STS_PKIX)
    assert r.on_no_starttls is A.CLEAR  # APPLY-4: testing never requires STARTTLS
    listed = req(TlsSetting.PREFERRED, mode=M.TESTING)
    assert not listed.report_mx_mismatch  # control


def test_row10_testing_keeps_the_settings_own_checks() -> None:
    r = req(TlsSetting.REQUIRED_VERIFY, mode=M.TESTING)
    assert r.checks == (Check.CISCO_VERIFY,) and r.on_verify_failure is A.DEFER


def test_row10_knob_off_makes_testing_block_like_enforce() -> None:
    r = req(TlsSetting.PREFERRED, mode=M.TESTING, mx="x.example", sts_testing_falls_back=False)
    assert r.row == 10 and not r.mx_permitted and r.sts_mode is M.TESTING
    assert r.checks == (Check.TLS_1_2, Check.STS_PKIX)


# --- row 11: enforce ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "own"),
    [
        # Seed Sep 26: Preferred + enforce delivers over a cert naming only the MX host.
        (TlsSetting.PREFERRED, ()),
        (TlsSetting.REQUIRED, ()),
        # Preferred-Verify's name check never blocked, so enforce adds only its own.
        (TlsSetting.PREFERRED_VERIFY, ()),
        # Seed troubleshooting 1: Required-Verify keeps the Verify algorithm (hosted MX fails).
        (TlsSetting.REQUIRED_VERIFY, (Check.CISCO_VERIFY,)),
    ],
)
def test_row11_enforce_keeps_blocking_setting_checks_and_adds_sts(
    tls: TlsSetting, own: tuple[Check, ...]
) -> None:
    r = req(tls, mode=M.ENFORCE)
    assert r.row == 11 and r.starttls is StartTls.MANDATORY and r.sts_mode is M.ENFORCE
    # docs/gateway-behaviour.md §2.2: the setting's blocking checks, then the STS checks on top.
    assert r.checks == (*own, Check.TLS_1_2, Check.STS_PKIX)
    assert (r.on_no_starttls, r.on_handshake_failure, r.on_verify_failure) == (A.DEFER,) * 3
    assert r.min_version == "TLSv1.2"  # AMB-33


def test_row11_hosted_setting_keeps_hosted_verify() -> None:
    r = req(TlsSetting.REQUIRED_VERIFY_HOSTED, mode=M.ENFORCE)
    assert r.checks == (Check.CISCO_HOSTED_VERIFY, Check.TLS_1_2, Check.STS_PKIX)


@pytest.mark.parametrize(
    ("mx", "patterns", "permitted"),
    [
        (MX, (MX,), True),
        ("MX1.Example.COM.", (MX,), True),  # MX-2
        ("mx2.example.com", (MX,), False),  # MX-1
        ("mail.example.com", ("*.example.com",), True),  # MX-3
        ("a.b.example.com", ("*.example.com",), False),
        ("mx1.example.com.evil.net", (MX,), False),  # MX-4
    ],
)
def test_row11_mx_must_match_a_pattern(mx: str, patterns: tuple[str, ...], permitted: bool) -> None:
    r = req(TlsSetting.REQUIRED_VERIFY_HOSTED, pol=policy(M.ENFORCE, *patterns), mx=mx)
    assert r.mx_permitted is permitted


# --- AMB-24: DANE passes, MTA-STS in force ----------------------------------------------


def _dane_sts(coexistence: Coexistence, mode: Mode, mx: str = MX) -> TlsRequirement:
    return req(
        TlsSetting.REQUIRED_VERIFY,
        dane_option=D.OPPORTUNISTIC,
        dane=DaneStatus.USABLE_PASS,
        mode=mode,
        mx=mx,
        coexistence=coexistence,
    )


def test_amb24_hybrid_keeps_allow_list_and_reports_pkix() -> None:
    r = _dane_sts(Coexistence.HYBRID, M.ENFORCE, mx="other.example")
    assert r.row == 2 and not r.mx_permitted  # COEX-4 (b)
    assert r.checks == (Check.DANE, Check.TLS_1_2) and r.report_checks == (Check.STS_PKIX,)


def test_amb24_dane_precedence_ignores_mta_sts() -> None:
    r = _dane_sts(Coexistence.DANE_PRECEDENCE, M.ENFORCE, mx="other.example")
    assert r.row == 2 and r.mx_permitted and r.report_checks == () and r.sts_mode is None


def test_amb24_literal_requires_both() -> None:
    r = _dane_sts(Coexistence.LITERAL, M.ENFORCE, mx="other.example")
    assert not r.mx_permitted and r.checks == (Check.DANE, Check.TLS_1_2, Check.STS_PKIX)


@pytest.mark.parametrize("coexistence", [Coexistence.HYBRID, Coexistence.LITERAL])
def test_coex2_testing_never_weakens_or_blocks_dane(coexistence: Coexistence) -> None:
    r = _dane_sts(coexistence, M.TESTING, mx="other.example")
    assert r.mx_permitted and r.report_mx_mismatch and Check.DANE in r.checks
    assert Check.STS_PKIX not in r.checks


def test_dane_for_routed_domain_ignores_sts() -> None:
    r = req(dane_option=D.MANDATORY, dane=DaneStatus.USABLE_PASS, mode=M.ENFORCE, routed=True)
    assert r.row == 2 and r.sts_mode is None and r.mx_permitted
