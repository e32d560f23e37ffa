"""engine.core.verdict: observations judged against requirements.

See docs/gateway-behaviour.md §1.1, §2.1 and RFC 8461 §4-5.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.core.controls import (
    Coexistence,
    DaneOption,
    DaneStatus,
    DestinationProfile,
    PostStarttlsFailure,
    TlsRequirement,
    TlsSetting,
    decide,
)
from engine.core.dane import DaneVerdict
from engine.core.events import ResultType
from engine.core.mx import MxPattern
from engine.core.policy import Mode, Policy
from engine.core.verdict import (
    MX_NOT_IN_POLICY,
    TLS_REQUIRED_NOT_NEGOTIATED,
    DaneOutcome,
    Outcome,
    PolicyType,
    TlsObservation,
    Verdict,
    judge,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RCPT = "example.com"
MX = "mx1.example.com"
HOSTED = "aspmx.l.google.com"
T = TlsSetting

CA = trustme.CA()
ROOTS = [x509.load_pem_x509_certificate(CA.cert_pem.bytes())]
OTHER_CA = trustme.CA()


def chain(*names: str, ca: trustme.CA = CA) -> tuple[bytes, ...]:
    leaf = ca.issue_cert(*names)
    certs = [x509.load_pem_x509_certificate(p.bytes()) for p in leaf.cert_chain_pems]
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)


def cn_only_chain(cn: str) -> tuple[bytes, ...]:
    ca_key = serialization.load_pem_private_key(CA.private_key_pem.bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ROOTS[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.DER),)


def tls(peer: tuple[bytes, ...], protocol: str = "TLSv1.3") -> TlsObservation:
    return TlsObservation(
        starttls_offered=True,
        starttls_reply=220,
        handshake_ok=True,
        protocol=protocol,
        cipher="TLS_AES_256_GCM_SHA384",
        peer_chain=peer,
        sni=MX,
    )


NO_STARTTLS = TlsObservation(starttls_offered=False)
REFUSED_454 = TlsObservation(starttls_offered=True, starttls_reply=454)
HANDSHAKE_ALERT = TlsObservation(
    starttls_offered=True, starttls_reply=220, handshake_error="tlsv1 alert handshake failure"
)
GOOD_MX = chain(MX)
GOOD_DOMAIN = chain(RCPT, MX)
HOSTED_MX = chain(HOSTED)
SELF_SIGNED = chain(MX, ca=OTHER_CA)


def enforce(*patterns: str, mode: Mode = Mode.ENFORCE) -> Policy:
    return Policy(mode=mode, max_age=86400, mx=tuple(MxPattern(p) for p in patterns or (MX,)))


def requirement(
    tls_setting: T,
    *,
    pol: Policy | None = None,
    mx: str = MX,
    dane_option: DaneOption = DaneOption.NONE,
    dane: DaneStatus = DaneStatus.NOT_APPLICABLE,
    **knobs: Any,
) -> TlsRequirement:
    profile = DestinationProfile(
        tls=tls_setting, dane=dane_option, mta_sts=tls_setting is not T.NO, **knobs
    )
    return decide(profile, mx_host=mx, policy=pol, dane=dane)


def verdict(
    obs: TlsObservation,
    req: TlsRequirement,
    *,
    mx: str = MX,
    now: datetime = NOW,
    dane_result: DaneStatus | DaneOutcome | None = None,
    ptr: str | None = None,
) -> Verdict:
    return judge(
        obs,
        req,
        now=now,
        roots=ROOTS,
        rcpt_domain=RCPT,
        mx_host=mx,
        ptr_host=ptr,
        dane_result=dane_result,
    )


# --- the TLS settings on their own (docs/gateway-behaviour.md §1.1) ----------------------------


def test_tls_no_delivers_in_clear_even_when_offered() -> None:
    v = verdict(tls(GOOD_MX), requirement(T.NO))
    assert v.outcome is Outcome.DELIVER_CLEAR and v.delivers and v.result_type is None


@pytest.mark.parametrize("obs", [NO_STARTTLS, REFUSED_454])
@pytest.mark.parametrize("setting", [T.PREFERRED, T.PREFERRED_VERIFY])
def test_preferred_falls_back_to_clear_before_the_220(obs: TlsObservation, setting: T) -> None:
    v = verdict(obs, requirement(setting))
    assert v.outcome is Outcome.DELIVER_CLEAR
    assert v.result_type is ResultType.STARTTLS_NOT_SUPPORTED and v.report == ()


def test_preferred_handshake_failure_after_220_defers() -> None:
    v = verdict(HANDSHAKE_ALERT, requirement(T.PREFERRED))
    assert v.outcome is Outcome.DEFER and not v.delivers
    assert v.result_type is ResultType.VALIDATION_FAILURE
    assert v.reason == "tlsv1 alert handshake failure"


def test_preferred_post220_knob_reconnects_in_clear() -> None:
    req = requirement(T.PREFERRED, preferred_post220_failure=PostStarttlsFailure.CLEAR)
    v = verdict(HANDSHAKE_ALERT, req)
    assert v.outcome is Outcome.RECONNECT_CLEAR and not v.delivers


@pytest.mark.parametrize("setting", [T.PREFERRED, T.REQUIRED])
def test_preferred_and_required_do_not_check_the_certificate(setting: T) -> None:
    v = verdict(tls(SELF_SIGNED), requirement(setting))
    assert v.outcome is Outcome.DELIVER_UNVERIFIED and v.result_type is None


@pytest.mark.parametrize("obs", [NO_STARTTLS, REFUSED_454])
@pytest.mark.parametrize("setting", [T.REQUIRED, T.REQUIRED_VERIFY, T.REQUIRED_VERIFY_HOSTED])
def test_required_settings_never_send_in_clear(obs: TlsObservation, setting: T) -> None:
    v = verdict(obs, requirement(setting))
    assert v.outcome is Outcome.DEFER and v.reason == TLS_REQUIRED_NOT_NEGOTIATED
    assert v.result_type is ResultType.STARTTLS_NOT_SUPPORTED


def test_preferred_verify_delivers_unverified_on_name_mismatch() -> None:
    v = verdict(tls(HOSTED_MX), requirement(T.PREFERRED_VERIFY), mx=HOSTED)
    assert v.outcome is Outcome.DELIVER_UNVERIFIED
    assert v.reason == "peer cert does not match domain example.com"
    assert v.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    good = verdict(tls(GOOD_DOMAIN), requirement(T.PREFERRED_VERIFY))
    assert good.outcome is Outcome.DELIVER_VERIFIED  # control


def test_required_verify_defers_hosted_mx_with_seed_text() -> None:
    v = verdict(tls(HOSTED_MX), requirement(T.REQUIRED_VERIFY), mx=HOSTED)
    assert v.outcome is Outcome.DEFER
    assert v.reason == "peer cert does not match domain example.com"
    assert v.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert verdict(tls(GOOD_DOMAIN), requirement(T.REQUIRED_VERIFY)).outcome is (
        Outcome.DELIVER_VERIFIED
    )


def test_required_verify_accepts_cn_matching_the_ptr_name() -> None:
    peer = cn_only_chain(MX)
    assert verdict(tls(peer), requirement(T.REQUIRED_VERIFY), ptr=MX).delivers
    assert not verdict(tls(peer), requirement(T.REQUIRED_VERIFY)).delivers


def test_required_verify_hosted_accepts_hosted_mx() -> None:
    v = verdict(tls(HOSTED_MX), requirement(T.REQUIRED_VERIFY_HOSTED), mx=HOSTED)
    assert v.outcome is Outcome.DELIVER_VERIFIED
    wrong = verdict(tls(chain("unrelated.example")), requirement(T.REQUIRED_VERIFY_HOSTED))
    assert wrong.outcome is Outcome.DEFER  # control


@pytest.mark.parametrize(
    ("peer", "now", "result", "reason"),
    [
        (SELF_SIGNED, NOW, ResultType.CERTIFICATE_NOT_TRUSTED, "unable to get local issuer"),
        (
            GOOD_DOMAIN,
            NOW + timedelta(days=400_000),
            ResultType.CERTIFICATE_EXPIRED,
            "certificate has",
        ),
    ],
)
def test_required_verify_chain_failures(
    peer: tuple[bytes, ...], now: datetime, result: ResultType, reason: str
) -> None:
    v = verdict(tls(peer), requirement(T.REQUIRED_VERIFY), now=now)
    assert v.outcome is Outcome.DEFER and v.result_type is result
    assert v.reason.startswith(reason) and v.failure_reason_code == v.reason


# --- MTA-STS enforce (row 11) ----------------------------------------------------------


def test_seed_hosted_mx_under_required_verify_and_enforce_fails_with_domain_text() -> None:
    pol = enforce(HOSTED)
    v = verdict(tls(HOSTED_MX), requirement(T.REQUIRED_VERIFY, pol=pol, mx=HOSTED), mx=HOSTED)
    assert v.outcome is Outcome.DEFER
    assert v.reason == "peer cert does not match domain example.com"
    assert v.policy_type is PolicyType.STS
    hosted = requirement(T.REQUIRED_VERIFY_HOSTED, pol=pol, mx=HOSTED)
    assert verdict(tls(HOSTED_MX), hosted, mx=HOSTED).outcome is Outcome.DELIVER_VERIFIED


def test_mx1_mx6_mx_not_in_policy_is_validation_failure_with_reason_code() -> None:
    req = requirement(T.REQUIRED_VERIFY_HOSTED, pol=enforce("mx2.example.com"))
    v = verdict(tls(GOOD_MX), req)
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.VALIDATION_FAILURE
    assert v.failure_reason_code == MX_NOT_IN_POLICY  # AMB-17
    assert v.policy_type is PolicyType.STS


def test_cert1_enforce_no_starttls_defers() -> None:
    v = verdict(NO_STARTTLS, requirement(T.PREFERRED, pol=enforce()))
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.STARTTLS_NOT_SUPPORTED


def test_cert2_enforce_handshake_alert_defers() -> None:
    v = verdict(HANDSHAKE_ALERT, requirement(T.REQUIRED_VERIFY_HOSTED, pol=enforce()))
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.VALIDATION_FAILURE


def test_apply10_enforce_overrides_opportunistic_setting() -> None:
    v = verdict(tls(SELF_SIGNED), requirement(T.PREFERRED, pol=enforce()))
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.CERTIFICATE_NOT_TRUSTED


def test_cert6a_san_names_only_the_domain() -> None:
    # Hosted Verify accepts the email domain; RFC 8461 §4.2 still wants the MX host.
    v = verdict(tls(chain(RCPT)), requirement(T.REQUIRED_VERIFY_HOSTED, pol=enforce()))
    assert v.outcome is Outcome.DEFER
    assert v.result_type is ResultType.CERTIFICATE_HOST_MISMATCH and MX in v.reason


def test_cert7_cn_only_fails_sts_though_hosted_verify_reads_the_cn() -> None:
    v = verdict(tls(cn_only_chain(MX)), requirement(T.REQUIRED_VERIFY_HOSTED, pol=enforce()))
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.CERTIFICATE_HOST_MISMATCH


@pytest.mark.parametrize(
    ("protocol", "delivers"),
    [("TLSv1.1", False), ("TLSv1", False), ("TLSv1.2", True), ("TLSv1.3", True)],
)
def test_cert11_cert12_enforce_tls_floor(protocol: str, delivers: bool) -> None:
    v = verdict(tls(GOOD_MX, protocol), requirement(T.REQUIRED_VERIFY_HOSTED, pol=enforce()))
    assert v.delivers is delivers
    if not delivers:
        assert v.result_type is ResultType.VALIDATION_FAILURE  # AMB-33


# --- MTA-STS testing (row 10) -----------------------------------------------------------


def test_apply3_testing_delivers_and_reports_untrusted() -> None:
    v = verdict(tls(SELF_SIGNED), requirement(T.PREFERRED, pol=enforce(mode=Mode.TESTING)))
    assert v.outcome is Outcome.DELIVER_UNVERIFIED
    [entry] = v.report
    assert entry.policy_type is PolicyType.STS
    assert entry.result_type is ResultType.CERTIFICATE_NOT_TRUSTED


def test_apply4_testing_without_starttls_delivers_in_clear_and_reports() -> None:
    v = verdict(NO_STARTTLS, requirement(T.PREFERRED, pol=enforce(mode=Mode.TESTING)))
    assert v.outcome is Outcome.DELIVER_CLEAR
    assert [e.result_type for e in v.report] == [ResultType.STARTTLS_NOT_SUPPORTED]


def test_mx7_testing_uses_unlisted_mx_and_reports_it() -> None:
    req = requirement(T.PREFERRED, pol=enforce("other.example.net", mode=Mode.TESTING))
    v = verdict(tls(GOOD_MX), req)
    assert v.delivers
    [entry] = v.report
    assert entry.result_type is ResultType.VALIDATION_FAILURE
    assert entry.failure_reason_code == MX_NOT_IN_POLICY


def test_testing_success_reports_nothing_and_floor_is_reported() -> None:
    req = requirement(T.PREFERRED, pol=enforce(mode=Mode.TESTING))
    assert verdict(tls(GOOD_MX), req).report == ()
    old = verdict(tls(GOOD_MX, "TLSv1.1"), req)
    assert old.delivers and [e.result_type for e in old.report] == [ResultType.VALIDATION_FAILURE]


def test_apply5_mode_none_reports_nothing() -> None:
    v = verdict(tls(SELF_SIGNED), requirement(T.PREFERRED, pol=enforce(mode=Mode.NONE)))
    assert v.delivers and v.report == ()


def test_testing_knob_off_blocks() -> None:
    req = requirement(T.PREFERRED, pol=enforce(mode=Mode.TESTING), sts_testing_falls_back=False)
    assert verdict(tls(SELF_SIGNED), req).outcome is Outcome.DEFER


# --- DANE (rows 2-5) and coexistence (COEX-*, AMB-24) -------------------------------------


def dane_req(
    *, option: DaneOption = DaneOption.MANDATORY, pol: Policy | None = None, **knobs: Any
) -> TlsRequirement:
    return requirement(T.PREFERRED, pol=pol, dane_option=option, dane=DaneStatus.USABLE, **knobs)


def test_dane_pass_delivers_verified_even_with_untrusted_chain() -> None:
    v = verdict(tls(SELF_SIGNED), dane_req(), dane_result=DaneStatus.USABLE_PASS)
    assert v.outcome is Outcome.DELIVER_VERIFIED and "dane" in v.reason


def test_coex1_dane_failure_blocks_even_when_sts_would_pass() -> None:
    req = dane_req(option=DaneOption.OPPORTUNISTIC, pol=enforce())
    v = verdict(tls(GOOD_MX), req, dane_result=DaneStatus.USABLE_FAIL)
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.TLSA_INVALID
    assert v.policy_type is PolicyType.TLSA


def test_coex3_tlsa_lookup_error_defers() -> None:
    req = requirement(
        T.PREFERRED, pol=enforce(), dane_option=DaneOption.OPPORTUNISTIC, dane=DaneStatus.DNS_ERROR
    )
    v = verdict(tls(GOOD_MX), req)
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.DNSSEC_INVALID


def test_mandatory_dane_without_tlsa_is_dane_required() -> None:
    req = requirement(T.PREFERRED, dane_option=DaneOption.MANDATORY)
    assert verdict(tls(GOOD_MX), req).result_type is ResultType.DANE_REQUIRED


def test_dane_requires_tls_and_the_floor() -> None:
    assert verdict(NO_STARTTLS, dane_req()).outcome is Outcome.DEFER
    old = verdict(tls(GOOD_MX, "TLSv1.1"), dane_req(), dane_result=DaneStatus.USABLE_PASS)
    assert old.outcome is Outcome.DEFER and old.result_type is ResultType.VALIDATION_FAILURE


def test_coex4a_hybrid_dane_decides_certificate_pkix_reported() -> None:
    v = verdict(tls(SELF_SIGNED), dane_req(pol=enforce()), dane_result=DaneStatus.USABLE_PASS)
    assert v.outcome is Outcome.DELIVER_VERIFIED
    assert [e.result_type for e in v.report] == [ResultType.CERTIFICATE_NOT_TRUSTED]


def test_coex4b_hybrid_keeps_the_mx_allow_list() -> None:
    v = verdict(
        tls(GOOD_MX), dane_req(pol=enforce("mx2.example.com")), dane_result=DaneStatus.USABLE_PASS
    )
    assert v.outcome is Outcome.DEFER and v.failure_reason_code == MX_NOT_IN_POLICY


def test_amb24_literal_and_dane_precedence() -> None:
    literal = dane_req(pol=enforce(), coexistence=Coexistence.LITERAL)
    assert verdict(tls(SELF_SIGNED), literal, dane_result=DaneStatus.USABLE_PASS).outcome is (
        Outcome.DEFER
    )
    precedence = dane_req(pol=enforce("mx2.example.com"), coexistence=Coexistence.DANE_PRECEDENCE)
    v = verdict(tls(SELF_SIGNED), precedence, dane_result=DaneStatus.USABLE_PASS)
    assert v.outcome is Outcome.DELIVER_VERIFIED and v.report == ()


def test_opportunistic_fall_back_knob_judges_under_the_setting() -> None:
    req = dane_req(option=DaneOption.OPPORTUNISTIC, opportunistic_dane_fail_falls_back=True)
    v = verdict(tls(SELF_SIGNED), req, dane_result=DaneStatus.USABLE_FAIL)
    assert v.outcome is Outcome.DELIVER_UNVERIFIED  # Preferred: no certificate check
    strict = dane_req(option=DaneOption.OPPORTUNISTIC)
    assert verdict(tls(SELF_SIGNED), strict, dane_result=DaneStatus.USABLE_FAIL).outcome is (
        Outcome.DEFER
    )


def test_dane_check_without_a_result_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="dane_result"):
        verdict(tls(GOOD_MX), dane_req())


def test_dane_verdict_object_carries_its_failure_type_and_reason() -> None:
    passed = DaneVerdict(True, "leaf matches DANE-EE record 3 1 1")
    assert verdict(tls(SELF_SIGNED), dane_req(), dane_result=passed).outcome is (
        Outcome.DELIVER_VERIFIED
    )
    expired = DaneVerdict(False, "certificate expired", ResultType.CERTIFICATE_EXPIRED)
    v = verdict(tls(GOOD_MX), dane_req(), dane_result=expired)
    assert v.outcome is Outcome.DEFER and v.result_type is ResultType.CERTIFICATE_EXPIRED
    assert v.reason.endswith(": certificate expired") and v.policy_type is PolicyType.TLSA
