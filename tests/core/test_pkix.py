"""engine.core.pkix: chain trust at the engine's clock, and the three name algorithms.

Certificates are minted at run time (trustme CAs, cryptography leaves); every
positive case has a negative control beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.core.events import ResultType
from engine.core.pkix import (
    ChainVerdict,
    cisco_hosted_verify_match,
    cisco_verify_match,
    common_name,
    dns_names,
    host_mismatch_reason,
    peer_mismatch_reason,
    rfc6125_match,
    verify_chain,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DER = serialization.Encoding.DER


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _issuer(ca: trustme.CA) -> Issuer:
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return Issuer(x509.load_pem_x509_certificate(ca.cert_pem.bytes()), key)


def mint(
    issuer: Issuer | None,
    *,
    cn: str | None = None,
    sans: Sequence[str] = (),
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=60),
    eku: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.SERVER_AUTH,
) -> x509.Certificate:
    """A leaf signed by ``issuer`` (or self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=not cn
        )
    return builder.sign(signer_key, hashes.SHA256())


@dataclass
class Pki:
    root_ca: trustme.CA
    root: x509.Certificate
    inter: Issuer
    other_root: x509.Certificate
    other_inter: Issuer

    def chain(self, leaf: x509.Certificate, *extra: x509.Certificate) -> list[bytes]:
        return [c.public_bytes(DER) for c in (leaf, self.inter.cert, *extra)]


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_ca = trustme.CA()
    other = trustme.CA()
    return Pki(
        root_ca=root_ca,
        root=x509.load_pem_x509_certificate(root_ca.cert_pem.bytes()),
        inter=_issuer(root_ca.create_child_ca()),
        other_root=x509.load_pem_x509_certificate(other.cert_pem.bytes()),
        other_inter=_issuer(other.create_child_ca()),
    )


def _fails(verdict: ChainVerdict, result: ResultType, reason: str) -> None:
    assert not verdict.ok
    assert verdict.result_type is result
    assert verdict.reason == reason


# --- chains -----------------------------------------------------------------------


def test_valid_chain_ok_and_untrusted_root_control(pki: Pki) -> None:
    chain = pki.chain(mint(pki.inter, sans=["mx1.example.com"]))
    ok = verify_chain(chain, [pki.root], NOW)
    assert ok.ok and ok.result_type is None and len(ok.chain) == 3
    # CERT-3 variant "unknown CA": the same chain against someone else's root.
    bad = verify_chain(chain, [pki.other_root], NOW)
    _fails(bad, ResultType.CERTIFICATE_NOT_TRUSTED, "unable to get local issuer certificate")


def test_roots_may_be_der_and_now_may_be_posix_seconds(pki: Pki) -> None:
    chain = pki.chain(mint(pki.inter, sans=["mx1.example.com"]))
    assert verify_chain(chain, [pki.root.public_bytes(DER)], NOW.timestamp()).ok


def test_trustme_leaf_with_critical_san_and_empty_subject_ok(pki: Pki) -> None:
    leaf = pki.root_ca.issue_cert("mx1.example.com")
    ders = [
        x509.load_pem_x509_certificate(p.bytes()).public_bytes(DER) for p in leaf.cert_chain_pems
    ]
    assert verify_chain(ders, [pki.root], NOW).ok


def test_cert4_expired_relative_to_given_now(pki: Pki) -> None:
    leaf = mint(pki.inter, sans=["mx1.example.com"], not_after=NOW + timedelta(days=1))
    chain = pki.chain(leaf)
    assert verify_chain(chain, [pki.root], NOW).ok  # control: still valid today
    later = verify_chain(chain, [pki.root], NOW + timedelta(days=2))
    _fails(later, ResultType.CERTIFICATE_EXPIRED, "certificate has expired")


def test_cert5_not_yet_valid(pki: Pki) -> None:
    leaf = mint(pki.inter, sans=["mx1.example.com"], not_before=NOW + timedelta(days=1))
    chain = pki.chain(leaf)
    _fails(
        verify_chain(chain, [pki.root], NOW),
        ResultType.CERTIFICATE_NOT_TRUSTED,
        "certificate is not yet valid",
    )
    assert verify_chain(chain, [pki.root], NOW + timedelta(days=2)).ok  # control


def test_cert3_self_signed_leaf(pki: Pki) -> None:
    leaf = mint(None, cn="mx1.example.com", sans=["mx1.example.com"])
    verdict = verify_chain([leaf.public_bytes(DER)], [pki.root], NOW)
    _fails(verdict, ResultType.CERTIFICATE_NOT_TRUSTED, "self-signed certificate")


def test_cert3_untrusted_root_sent_in_chain(pki: Pki) -> None:
    leaf = mint(pki.other_inter, sans=["mx1.example.com"])
    chain = [c.public_bytes(DER) for c in (leaf, pki.other_inter.cert, pki.other_root)]
    _fails(
        verify_chain(chain, [pki.root], NOW),
        ResultType.CERTIFICATE_NOT_TRUSTED,
        "self-signed certificate in certificate chain",
    )
    assert verify_chain(chain, [pki.other_root], NOW).ok  # control


def test_cert3_missing_intermediate(pki: Pki) -> None:
    leaf = mint(pki.inter, sans=["mx1.example.com"])
    _fails(
        verify_chain([leaf.public_bytes(DER)], [pki.root], NOW),
        ResultType.CERTIFICATE_NOT_TRUSTED,
        "unable to get local issuer certificate",
    )
    assert verify_chain(pki.chain(leaf), [pki.root], NOW).ok  # control


def test_cn_only_leaf_still_chains(pki: Pki) -> None:
    # The Cisco algorithms read the CN, so a SAN-less leaf must get past chain building.
    leaf = mint(pki.inter, cn="mx1.example.com")
    assert dns_names(leaf) == []
    assert verify_chain(pki.chain(leaf), [pki.root], NOW).ok


def test_expired_intermediate_is_expired(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Short-lived CA")])
    short = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(pki.inter.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.inter.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(pki.inter.key, hashes.SHA256())
    )
    leaf = mint(Issuer(short, key), sans=["mx1.example.com"])
    chain = [c.public_bytes(DER) for c in (leaf, short, pki.inter.cert)]
    assert verify_chain(chain, [pki.root], NOW).ok
    _fails(
        verify_chain(chain, [pki.root], NOW + timedelta(days=3)),
        ResultType.CERTIFICATE_EXPIRED,
        "certificate has expired",
    )


def test_ca_certificate_as_leaf_is_validation_failure(pki: Pki) -> None:
    verdict = verify_chain([pki.inter.cert.public_bytes(DER)], [pki.root], NOW)
    assert not verdict.ok and verdict.result_type is ResultType.VALIDATION_FAILURE
    assert verdict.reason and "basicConstraints" in verdict.reason


def test_client_auth_only_eku_rejected_server_auth_accepted(pki: Pki) -> None:
    client = mint(pki.inter, sans=["mx1.example.com"], eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    verdict = verify_chain(pki.chain(client), [pki.root], NOW)
    assert verdict.result_type is ResultType.VALIDATION_FAILURE
    assert verdict.reason and "serverAuth" in verdict.reason
    no_eku = mint(pki.inter, sans=["mx1.example.com"], eku=None)
    assert verify_chain(pki.chain(no_eku), [pki.root], NOW).ok


def test_empty_and_garbage_chains_are_validation_failures(pki: Pki) -> None:
    _fails(verify_chain([], [pki.root], NOW), ResultType.VALIDATION_FAILURE, "no peer certificate")
    garbage = verify_chain([b"\x30\x03\x02\x01\x00"], [pki.root], NOW)
    assert garbage.result_type is ResultType.VALIDATION_FAILURE
    assert garbage.reason and garbage.reason.startswith("certificate parse error")


def test_no_roots_means_untrusted(pki: Pki) -> None:
    chain = pki.chain(mint(pki.inter, sans=["mx1.example.com"]))
    _fails(
        verify_chain(chain, [], NOW),
        ResultType.CERTIFICATE_NOT_TRUSTED,
        "unable to get local issuer certificate",
    )


# --- RFC 6125 (MTA-STS, RFC 8461 §4.2) ----------------------------------------------


@pytest.mark.parametrize(
    ("sans", "host", "expected"),
    [
        (["mx1.example.com"], "mx1.example.com", True),
        (["MX1.Example.COM"], "mx1.example.com.", True),  # MX-2: case, root dot
        (["*.example.com"], "mx1.example.com", True),  # CERT-8 (a)
        (["*.example.com"], "a.b.example.com", False),  # CERT-8 (b)
        (["*.example.com"], "example.com", False),
        (["mx*.example.com"], "mx1.example.com", False),  # FETCH-4: whole label only
        (["*mx.example.com"], "amx.example.com", False),
        (["*.com"], "example.com", False),
        (["example.com"], "mx1.example.com", False),  # CERT-6 (a)
        (["mx2.example.com"], "mx1.example.com", False),  # CERT-6 (b)
        (["xn--bcher-kva.example"], "bücher.example", True),  # A-label comparison
    ],
)
def test_rfc6125_match(pki: Pki, sans: list[str], host: str, expected: bool) -> None:
    assert rfc6125_match(mint(pki.inter, sans=sans), host) is expected


def test_cert7_cn_only_never_matches_rfc6125(pki: Pki) -> None:
    leaf = mint(pki.inter, cn="mx1.example.com")
    assert common_name(leaf) == "mx1.example.com"
    assert not rfc6125_match(leaf, "mx1.example.com")
    assert rfc6125_match(mint(pki.inter, cn="x", sans=["mx1.example.com"]), "mx1.example.com")


# --- Cisco Verify / Hosted Verify (docs/gateway-behaviour.md §1.2) -----------------------------


@pytest.mark.parametrize(
    ("cn", "sans", "ptr", "expected"),
    [
        (None, ["example.com"], None, True),  # SAN vs email domain
        (None, ["*.example.com"], None, False),  # wildcard never covers the bare domain
        (None, ["mx1.example.com"], None, False),  # MX names are not accepted (seed)
        ("example.com", [], None, True),  # CN vs email domain
        ("mx1.example.com", [], "mx1.example.com", True),  # CN vs PTR name
        ("mx1.example.com", [], None, False),  # ... negative control: no PTR
        ("example.com", ["mx.hoster.example"], None, True),  # Verify reads the CN anyway
        ("mx.hoster.example", ["mx.hoster.example"], "other.example", False),
    ],
)
def test_cisco_verify_match(
    pki: Pki, cn: str | None, sans: list[str], ptr: str | None, expected: bool
) -> None:
    leaf = mint(pki.inter, cn=cn, sans=sans)
    assert cisco_verify_match(leaf, "Example.COM", ptr) is expected


@pytest.mark.parametrize(
    ("cn", "sans", "route", "expected"),
    [
        (None, ["aspmx.l.google.com"], None, True),  # the hosted MX name
        (None, ["example.com"], None, True),  # the email domain
        (None, ["*.l.google.com"], None, True),
        ("aspmx.l.google.com", ["other.example"], None, False),  # CN ignored when SANs exist
        ("aspmx.l.google.com", [], None, True),  # CN used when there are no SANs
        (None, ["relay.example.net"], "relay.example.net", True),  # route host stands in
        (None, ["aspmx.l.google.com"], "relay.example.net", False),  # ... for the MX host
        (None, ["unrelated.example"], None, False),
    ],
)
def test_cisco_hosted_verify_match(
    pki: Pki, cn: str | None, sans: list[str], route: str | None, expected: bool
) -> None:
    leaf = mint(pki.inter, cn=cn, sans=sans)
    assert cisco_hosted_verify_match(leaf, "example.com", "aspmx.l.google.com", route) is expected


def test_mismatch_reasons_use_the_seed_text() -> None:
    assert peer_mismatch_reason("example.com") == "peer cert does not match domain example.com"
    assert "mx1.example.com" in host_mismatch_reason("mx1.example.com")
