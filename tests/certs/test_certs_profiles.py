"""Each profile meets a real stdlib TLS client over loopback, with its controls.

Every rejection is checked for its stated reason (verify_code and message),
and paired with a control in which fixing that one defect makes the same
certificate pass, so a test cannot pass for the wrong reason (STYLE habit 13).
"""

from __future__ import annotations

import ssl

import pytest

from certs import (
    PROFILE_SPECS,
    WRONG_NAME,
    CertFactory,
    CertProfile,
    HandshakeResult,
    IssuedCert,
    client_context,
    loopback_handshake,
)

HOST = "mx1.example.com"
X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL x509_vfy.h; not exported by ssl

# profile -> (X509_V_ERR code, verify_message) a strict stdlib client rejects it with
REJECTIONS: dict[CertProfile, tuple[int, str]] = {
    CertProfile.EXPIRED: (10, "certificate has expired"),
    CertProfile.NOT_YET_VALID: (9, "certificate is not yet valid"),
    CertProfile.WRONG_NAME: (62, f"Hostname mismatch, certificate is not valid for '{HOST}'."),
    CertProfile.UNTRUSTED: (20, "unable to get local issuer certificate"),
    CertProfile.SELF_SIGNED: (18, "self-signed certificate"),
    CertProfile.MISSING_INTERMEDIATE: (20, "unable to get local issuer certificate"),
    CertProfile.CN_ONLY: (62, f"Hostname mismatch, certificate is not valid for '{HOST}'."),
    CertProfile.VIA_TWO_INTERMEDIATES_PATHLEN0: (25, "path length constraint exceeded"),
    CertProfile.LONG_CHAIN: (22, "certificate chain too long"),
}
ACCEPTED = [p for p in CertProfile if p not in REJECTIONS]


@pytest.fixture
def factory() -> CertFactory:
    return CertFactory()


def handshake(cert: IssuedCert, client: ssl.SSLContext, host: str | None = HOST) -> HandshakeResult:
    return loopback_handshake(cert.server_context(), client, host)


def assert_rejected(result: HandshakeResult, code: int, message: str) -> None:
    error = result.client_error
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    assert (error.verify_code, error.verify_message) == (code, message)
    assert result.server_error is not None  # the server saw the client's alert


def assert_accepted(result: HandshakeResult, cert: IssuedCert) -> None:
    assert result.client_error is None, repr(result.client_error)
    assert result.server_error is None, repr(result.server_error)
    assert result.peer_cert_der == cert.leaf_der


def test_every_profile_is_classified() -> None:
    assert set(REJECTIONS) | set(ACCEPTED) == set(CertProfile) == set(PROFILE_SPECS)
    for profile in CertProfile:
        assert (PROFILE_SPECS[profile].breaks is None) == (profile in ACCEPTED)


@pytest.mark.parametrize("profile", ACCEPTED, ids=str)
def test_profile_accepted_by_strict_client(factory: CertFactory, profile: CertProfile) -> None:
    cert = factory.issue(HOST, profile=profile)
    assert_accepted(handshake(cert, factory.client_context()), cert)


@pytest.mark.parametrize("profile", sorted(REJECTIONS), ids=str)
def test_profile_rejected_for_its_reason(factory: CertFactory, profile: CertProfile) -> None:
    cert = factory.issue(HOST, profile=profile)
    assert_rejected(handshake(cert, factory.client_context()), *REJECTIONS[profile])


# -- negative controls for the accepted profiles (trustme's end-to-end pattern) ------------


@pytest.mark.parametrize("profile", ACCEPTED, ids=str)
def test_accepted_profile_fails_bad_hostname(factory: CertFactory, profile: CertProfile) -> None:
    cert = factory.issue(HOST, profile=profile)
    result = handshake(cert, factory.client_context(), "other.example.net")
    assert_rejected(
        result, 62, "Hostname mismatch, certificate is not valid for 'other.example.net'."
    )


@pytest.mark.parametrize("profile", ACCEPTED, ids=str)
def test_accepted_profile_fails_bad_ca(factory: CertFactory, profile: CertProfile) -> None:
    cert = factory.issue(HOST, profile=profile)
    result = handshake(cert, factory.client_context("untrusted"))
    assert_rejected(result, 20, "unable to get local issuer certificate")


def test_wildcard_matches_one_label_only(factory: CertFactory) -> None:
    # CERT-8 (b): *.example.com does not cover a.b.example.com.
    cert = factory.issue(HOST, profile=CertProfile.WILDCARD)
    assert cert.san == ("*.example.com",)
    result = handshake(cert, factory.client_context(), "a.b.example.com")
    assert_rejected(
        result, 62, "Hostname mismatch, certificate is not valid for 'a.b.example.com'."
    )
    assert_accepted(handshake(cert, factory.client_context(), "mx2.example.com"), cert)


# -- positive controls: fix exactly the stated defect and the same certificate passes ------


@pytest.mark.parametrize("profile", [CertProfile.EXPIRED, CertProfile.NOT_YET_VALID], ids=str)
def test_time_profile_passes_without_time_check(factory: CertFactory, profile: CertProfile) -> None:
    cert = factory.issue(HOST, profile=profile)
    client = factory.client_context()
    client.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    assert_accepted(handshake(cert, client), cert)


def test_wrong_name_passes_for_the_name_it_carries(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.WRONG_NAME)
    assert cert.san == (WRONG_NAME,)
    assert_accepted(handshake(cert, factory.client_context(), WRONG_NAME), cert)


def test_untrusted_passes_when_its_root_is_trusted(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.UNTRUSTED)
    assert_accepted(handshake(cert, factory.client_context("untrusted")), cert)


def test_self_signed_passes_when_pinned_as_anchor(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.SELF_SIGNED)
    assert_accepted(handshake(cert, client_context(cert.leaf_pem.decode("ascii"))), cert)


def test_missing_intermediate_passes_when_client_has_it(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.MISSING_INTERMEDIATE)
    roots = factory.ca_bundle_pem + factory.intermediate_ca.cert_pem.bytes()
    assert_accepted(handshake(cert, client_context(roots.decode("ascii"))), cert)


def test_cn_only_passes_a_client_that_reads_the_cn(factory: CertFactory) -> None:
    # The stdlib default (hostname_checks_common_name=True) would accept it: this is the
    # CN fallback that RFC 8461 §4.2 forbids and the strict client turns off.
    cert = factory.issue(HOST, profile=CertProfile.CN_ONLY)
    assert cert.san == () and cert.common_name == HOST
    assert_accepted(handshake(cert, factory.client_context(check_common_name=True)), cert)


def test_pathlen0_chain_passes_when_anchored_below_the_constraint(factory: CertFactory) -> None:
    # Anchor at CA 1 (a partial chain): the pathlen-0 CA is no longer on the path.
    cert = factory.issue(HOST, profile=CertProfile.VIA_TWO_INTERMEDIATES_PATHLEN0)
    client = client_context(ssl.DER_cert_to_PEM_cert(cert.path_ders[2]))
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    assert_accepted(handshake(cert, client), cert)


def test_unverifying_client_accepts_anything(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.SELF_SIGNED)
    assert_accepted(handshake(cert, factory.client_context("none"), None), cert)


def test_rsa_leaf_accepted(factory: CertFactory) -> None:
    cert = factory.issue(HOST, key_type="rsa")
    assert_accepted(handshake(cert, factory.client_context()), cert)
    assert_rejected(
        handshake(cert, factory.client_context("untrusted")),
        20,
        "unable to get local issuer certificate",
    )


def test_rsa_factory_end_to_end() -> None:
    factory = CertFactory(key_type="rsa")
    cert = factory.issue(HOST, profile=CertProfile.VIA_INTERMEDIATE)
    assert_accepted(handshake(cert, factory.client_context()), cert)
