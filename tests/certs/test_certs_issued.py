"""IssuedCert: PEM/DER views and TLSA data, checked against cryptography as the oracle."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs import CertError, CertFactory, CertProfile, IssuedCert

HOST = "mx1.example.com"


@pytest.fixture
def factory() -> CertFactory:
    return CertFactory()


def spki(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_dane_ee_spki_sha256(factory: CertFactory, key_type: str) -> None:
    cert = factory.issue(HOST, key_type=key_type)
    record = cert.tlsa(3, 1, 1)
    assert (record.usage, record.selector, record.mtype) == (3, 1, 1)
    assert record.data == hashlib.sha256(spki(cert.leaf_der)).digest()


@pytest.mark.parametrize(
    ("selector", "mtype", "expected"),
    [
        (0, 0, lambda der: der),
        (0, 1, lambda der: hashlib.sha256(der).digest()),
        (0, 2, lambda der: hashlib.sha512(der).digest()),
        (1, 0, spki),
        (1, 2, lambda der: hashlib.sha512(spki(der)).digest()),
    ],
)
def test_dane_ee_selectors_and_matching_types(
    factory: CertFactory, selector: int, mtype: int, expected
) -> None:
    cert = factory.issue(HOST)
    assert cert.tlsa(3, selector, mtype).data == expected(cert.leaf_der)


def test_swapped_selector_differs(factory: CertFactory) -> None:
    # DANE-21: "3 0 1 sha256(SPKI)" is a wrong record, not an alias.
    cert = factory.issue(HOST)
    assert cert.tlsa(3, 0, 1).data != cert.tlsa(3, 1, 1).data


def test_dane_ta_defaults_to_the_issuing_ca(factory: CertFactory) -> None:
    valid = factory.issue(HOST)
    via = factory.issue(HOST, profile=CertProfile.VIA_INTERMEDIATE)
    root_der = x509.load_pem_x509_certificate(factory.trusted_ca.cert_pem.bytes()).public_bytes(
        serialization.Encoding.DER
    )
    inter_der = x509.load_pem_x509_certificate(
        factory.intermediate_ca.cert_pem.bytes()
    ).public_bytes(serialization.Encoding.DER)
    assert valid.tlsa(2, 0, 1).data == hashlib.sha256(root_der).digest()
    assert via.tlsa(2, 0, 1).data == hashlib.sha256(inter_der).digest()
    assert via.tlsa(2, 0, 0, depth=-1).data == root_der  # DANE-27: the root, not sent
    assert via.tlsa(2, 1, 0, depth=-1).data == spki(root_der)  # DANE-29


def test_self_signed_ta_is_the_leaf(factory: CertFactory) -> None:
    cert = factory.issue(HOST, profile=CertProfile.SELF_SIGNED)
    assert (
        cert.tlsa(2, 0, 1).data == cert.tlsa(3, 0, 1).data == hashlib.sha256(cert.leaf_der).digest()
    )


def test_tlsa_presentation_form(factory: CertFactory) -> None:
    cert = factory.issue(HOST)
    text = cert.tlsa(3, 1, 1).to_text()
    assert text == "3 1 1 " + hashlib.sha256(spki(cert.leaf_der)).hexdigest().upper()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((4, 1, 1), {}, "usage 4"),
        ((3, 2, 1), {}, "3 2 1"),
        ((3, 1, 3), {}, "3 1 3"),
        ((2, 0, 1), {"depth": 5}, "depth 5"),
    ],
)
def test_bad_tlsa_request_raises(factory: CertFactory, args, kwargs, match: str) -> None:
    with pytest.raises(CertError, match=match):
        factory.issue(HOST).tlsa(*args, **kwargs)


def test_pem_and_der_views_agree(factory: CertFactory) -> None:
    cert: IssuedCert = factory.issue(HOST, profile=CertProfile.VIA_INTERMEDIATE)
    assert cert.leaf_pem == cert.chain_pems[0]
    assert [
        x509.load_pem_x509_certificate(p).public_bytes(serialization.Encoding.DER)
        for p in cert.chain_pems
    ] == list(cert.chain_ders)
    assert cert.chain_pem == b"".join(cert.chain_pems)
    assert cert.issuer_der == cert.chain_ders[1]
    assert cert.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
