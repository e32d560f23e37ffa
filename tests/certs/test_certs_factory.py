"""CertFactory: validity relative to `now`, names, chain shapes, caching, trust helpers."""

from __future__ import annotations

import itertools
import re
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs import CertError, CertFactory, CertProfile, KeyType, Validity
from engine.core.clock import ManualClock

HOST = "mx1.example.com"
DAY = timedelta(days=1)
CLOCK_START = datetime.fromtimestamp(ManualClock().now(), UTC)


@pytest.fixture
def factory() -> CertFactory:
    return CertFactory()


def load(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def dns_names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


# -- validity windows follow the `now` passed in (the fake clock) ---------------------------


def test_expired_ends_one_day_before_now(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.EXPIRED, now=ManualClock().now())
    assert cert.not_after == CLOCK_START - DAY
    assert load(cert.leaf_der).not_valid_after_utc == cert.not_after


def test_not_yet_valid_starts_one_day_after_now(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.NOT_YET_VALID, now=CLOCK_START)
    assert cert.not_before == CLOCK_START + DAY


def test_valid_window_contains_now(factory: CertFactory) -> None:
    cert = factory.issue(HOST, now=CLOCK_START)
    assert cert.not_before < CLOCK_START < cert.not_after


def test_naive_datetime_now_is_utc(factory: CertFactory) -> None:
    naive = CLOCK_START.replace(tzinfo=None)
    assert factory.issue(HOST, now=naive) is factory.issue(HOST, now=CLOCK_START)


def test_default_now_is_the_factory_reference_time() -> None:
    factory = CertFactory(now=CLOCK_START)
    assert factory.issue(HOST).not_before == CLOCK_START - DAY


def test_validity_override(factory: CertFactory) -> None:
    # DANE-20: expired two years ago.
    window = Validity(start=-3 * 365 * DAY, end=-2 * 365 * DAY)
    cert = factory.issue(HOST, profile=CertProfile.SELF_SIGNED, now=CLOCK_START, validity=window)
    assert cert.not_after == CLOCK_START - 2 * 365 * DAY


def test_validity_must_end_after_it_starts() -> None:
    with pytest.raises(CertError, match="before it starts"):
        Validity(start=DAY, end=-DAY)


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "san", "cn"),
    [
        (CertProfile.VALID, [HOST, "mx.example.net"], HOST),
        (CertProfile.WRONG_NAME, ["wrong-name.invalid"], "wrong-name.invalid"),
        (CertProfile.WILDCARD, ["*.example.com", "*.example.net"], "*.example.com"),
    ],
    ids=str,
)
def test_names_carried(factory: CertFactory, profile: CertProfile, san: list[str], cn: str) -> None:
    cert = factory.issue(HOST, "mx.example.net", profile=profile)
    assert dns_names(load(cert.leaf_der)) == san == list(cert.san)
    assert cert.common_name == cn
    assert cert.names == (HOST, "mx.example.net")


def test_cn_only_has_no_san_extension(factory: CertFactory) -> None:
    leaf = load(factory.issue(HOST, profile=CertProfile.CN_ONLY).leaf_der)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == HOST


def test_common_name_differs_from_san(factory: CertFactory) -> None:
    # DANE-26: DNS-IDs present, CN naming another host (RFC 6125 §6.4.4 ignores it).
    cert = factory.issue("www.example.com", profile=CertProfile.VIA_INTERMEDIATE, common_name=HOST)
    leaf = load(cert.leaf_der)
    assert dns_names(leaf) == ["www.example.com"] == list(cert.san)
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == HOST
    assert cert.common_name == HOST
    assert cert is not factory.issue("www.example.com", profile=CertProfile.VIA_INTERMEDIATE)


def test_common_name_must_be_a_host_name(factory: CertFactory) -> None:
    with pytest.raises(CertError, match="not a host name"):
        factory.issue(HOST, common_name="bad..name")


def test_ip_and_idn_names(factory: CertFactory) -> None:
    cert = factory.issue("127.0.0.7", "bücher.example")
    assert cert.san == ("127.0.0.7", "xn--bcher-kva.example")


def test_explicit_wildcard_name_under_valid(factory: CertFactory) -> None:
    # FETCH-4 variants are plain names under the valid profile.
    assert factory.issue("*.mta-sts.example.com").san == ("*.mta-sts.example.com",)


@pytest.mark.parametrize("bad", ["", ".example.com", "a..b", "example.com."])
def test_bad_name_raises(factory: CertFactory, bad: str) -> None:
    with pytest.raises(CertError, match="not a host name") as info:
        factory.issue(bad)
    assert info.value.value == bad


def test_no_names_raises(factory: CertFactory) -> None:
    with pytest.raises(CertError, match="at least one name"):
        factory.issue()


def test_wildcard_needs_a_two_label_parent(factory: CertFactory) -> None:
    with pytest.raises(CertError, match=re.escape("'example.com'")):
        factory.issue("example.com", profile=CertProfile.WILDCARD)


def test_unknown_profile_raises(factory: CertFactory) -> None:
    with pytest.raises(ValueError, match="'bogus'"):
        factory.issue(HOST, profile="bogus")


# -- who signs, what is sent ----------------------------------------------------------------


def test_chain_shapes(factory: CertFactory) -> None:
    root = factory.trusted_ca.cert_pem.bytes()
    inter = factory.intermediate_ca.cert_pem.bytes()
    valid = factory.issue(HOST)
    via = factory.issue(HOST, profile=CertProfile.VIA_INTERMEDIATE)
    missing = factory.issue(HOST, profile=CertProfile.MISSING_INTERMEDIATE)
    selfsigned = factory.issue(HOST, profile=CertProfile.SELF_SIGNED)
    assert valid.chain_pems == (valid.leaf_pem,)
    assert via.chain_pems == (via.leaf_pem, inter)
    assert missing.chain_pems == (missing.leaf_pem,)
    assert len(missing.path_ders) == 3 and missing.path_ders[1:] == via.path_ders[1:]
    assert ssl.DER_cert_to_PEM_cert(via.anchor_der).encode() == root
    assert selfsigned.path_ders == selfsigned.chain_ders == (selfsigned.leaf_der,)
    leaf = load(selfsigned.leaf_der)
    assert leaf.issuer == leaf.subject


def test_pathlen0_chain_shape(factory: CertFactory) -> None:
    # DANE-30: leaf <- CA 2 <- CA 1 <- CA (pathLenConstraint 0) <- trusted root.
    cert = factory.issue(HOST, profile=CertProfile.VIA_TWO_INTERMEDIATES_PATHLEN0)
    path = [load(der) for der in cert.path_ders]
    assert len(path) == 5 and cert.chain_ders == cert.path_ders[:4]
    constraints = [
        c.extensions.get_extension_for_class(x509.BasicConstraints).value for c in path[1:4]
    ]
    assert [(b.ca, b.path_length) for b in constraints] == [(True, None), (True, None), (True, 0)]
    for child, parent in itertools.pairwise(path):
        assert child.issuer == parent.subject
        child.verify_directly_issued_by(parent)
    assert ssl.DER_cert_to_PEM_cert(cert.anchor_der).encode() == factory.ca_bundle_pem
    # computed TLSA can name the constrained CA itself (depth 3)
    assert cert.tlsa(2, 0, 0, depth=3).data == cert.path_ders[3]


def test_include_root_sends_the_root(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.VIA_INTERMEDIATE, include_root=True)
    assert cert.chain_ders == cert.path_ders and len(cert.chain_ders) == 3


def test_untrusted_is_signed_by_the_other_root(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.UNTRUSTED)
    untrusted = x509.load_pem_x509_certificate(factory.untrusted_ca.cert_pem.bytes())
    assert load(cert.leaf_der).issuer == untrusted.subject
    assert cert.trusted_root_pem == factory.ca_bundle_pem != factory.untrusted_ca.cert_pem.bytes()


def test_key_types(factory: CertFactory) -> None:
    ecdsa = load(factory.issue(HOST).leaf_der).public_key()
    assert isinstance(ecdsa, ec.EllipticCurvePublicKey)
    assert isinstance(
        load(factory.issue(HOST, key_type=KeyType.RSA).leaf_der).public_key(), rsa.RSAPublicKey
    )
    rsa_factory = CertFactory(key_type="rsa")
    assert rsa_factory.issue(HOST).key_type is KeyType.RSA
    assert isinstance(load(rsa_factory.issue(HOST).leaf_der).public_key(), rsa.RSAPublicKey)


def test_private_key_matches_leaf(factory: CertFactory) -> None:
    cert = factory.issue(HOST)
    key = serialization.load_pem_private_key(cert.private_key_pem, password=None)
    assert key.public_key() == load(cert.leaf_der).public_key()


# -- caching and laziness -------------------------------------------------------------------


def test_issue_is_cached_per_shape(factory: CertFactory) -> None:
    first = factory.issue(HOST)
    assert factory.issue(HOST) is first
    assert factory.issue(HOST, profile=CertProfile.EXPIRED) is not first
    assert factory.issue(HOST, "mx.example.net") is not first
    assert factory.issue(HOST, key_type="rsa") is not first
    assert factory.issue(HOST, now=CLOCK_START) is not first


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_keys_are_distinct_within_a_factory(factory: CertFactory, key_type: KeyType) -> None:
    # DANE: one host's 3 1 1 record must never match another host's certificate.
    certs = [factory.issue(f"mx{i}.example.com", key_type=key_type) for i in range(3)]
    assert len({c.tlsa(3, 1, 1) for c in certs}) == 3


def test_cas_are_lazy_and_stable() -> None:
    factory = CertFactory()
    assert factory._cas == {}  # nothing minted until asked
    factory.issue(HOST)
    assert set(factory._cas) == {"trusted-root"}
    assert factory.trusted_ca is factory.trusted_ca
    assert factory.untrusted_ca.cert_pem.bytes() != factory.trusted_ca.cert_pem.bytes()


def test_factories_do_not_share_roots() -> None:
    assert CertFactory().ca_bundle_pem != CertFactory().ca_bundle_pem


# -- client-side helpers --------------------------------------------------------------------


def test_trust_store_path(factory: CertFactory) -> None:
    path = factory.trust_store_path()
    assert path.read_bytes() == factory.ca_bundle_pem
    assert factory.trust_store_path() == path
    ctx = ssl.create_default_context(cafile=str(path))
    assert len(ctx.get_ca_certs()) == 1
    factory.close()
    assert not path.exists()
    factory.close()  # idempotent


@pytest.mark.parametrize("trust", ["trusted", "untrusted"])
def test_client_context_trusts_one_root(factory: CertFactory, trust: str) -> None:
    ctx = factory.client_context(trust)
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert not ctx.hostname_checks_common_name
    ca = factory.trusted_ca if trust == "trusted" else factory.untrusted_ca
    expected = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert ctx.get_ca_certs(binary_form=True) == [expected]


def test_client_context_rejects_unknown_trust(factory: CertFactory) -> None:
    with pytest.raises(ValueError, match="'system'"):
        factory.client_context("system")
