"""DANE for SMTP: TLSA codecs, usability, digest agility and chain authentication.

Tests are named after the requirement rows of ``docs/requirements.md`` §1.9.
Certificates are minted at run time (trustme for ordinary PKI; :func:`mint`
for shapes trustme does not make: self-signed, CN-only, odd SANs, constrained
or expired CAs). Every positive case sits beside a negative control.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from engine.core.dane import DaneVerdict, dane_reference_ids, dane_verify
from engine.core.errors import TlsaError
from engine.core.events import ResultType
from engine.core.tlsa import (
    MatchingType,
    RrsetStatus,
    Selector,
    Tlsa,
    Usage,
    apply_digest_agility,
    classify_rrset,
    parse_tlsa,
    spki_der,
    tlsa_from_wire,
    tlsa_rdata_for,
    unusable_reason,
    usable_records,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MX1 = ("mx1.example.com",)
OK = None  # expected result_type of a passing verdict


# --- certificate helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its key (enough to issue further certificates)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)


def from_trustme(ca: trustme.CA) -> Issued:
    key = load_pem_private_key(ca.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issued(x509.load_pem_x509_certificate(ca.cert_pem.bytes()), key)


def ca_der(ca: trustme.CA) -> bytes:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(Encoding.DER)


def chain_of(leaf: trustme.LeafCert, *extra: bytes) -> list[bytes]:
    """The chain a server configured with ``leaf`` sends, plus ``extra`` certificates."""
    pems = [p.bytes() for p in leaf.cert_chain_pems]
    return [x509.load_pem_x509_certificate(p).public_bytes(Encoding.DER) for p in pems] + list(
        extra
    )


def mint(
    *,
    issuer: Issued | None = None,
    cn: str | None = "Test cert",
    sans: Sequence[str] = (),
    ca: bool = False,
    path_len: int | None = None,
    permitted: Sequence[str] | None = None,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=30),
) -> Issued:
    """A certificate trustme would not make; self-signed when ``issuer`` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"mint {id(key)}"))
    name = x509.Name(attrs)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    if permitted is not None:
        builder = builder.add_extension(
            x509.NameConstraints([x509.DNSName(p) for p in permitted], None), critical=True
        )
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def verify(
    chain: Sequence[bytes],
    *records: Tlsa,
    refs: Sequence[str] = MX1,
    now: datetime | float = NOW,
) -> DaneVerdict:
    return dane_verify(chain, records, reference_ids=refs, now=now)


def assert_verdict(verdict: DaneVerdict, expected: ResultType | None) -> None:
    if expected is OK:
        assert verdict.ok, verdict.reason
        assert verdict.result_type is None
    else:
        assert not verdict.ok
        assert verdict.result_type == expected, verdict.reason


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def intermediate(root: trustme.CA) -> trustme.CA:
    return root.create_child_ca()


@pytest.fixture(scope="module")
def mx1_via_intermediate(intermediate: trustme.CA) -> trustme.LeafCert:
    """Server chain leaf + intermediate; the root is not sent."""
    return intermediate.issue_cert("mx1.example.com")


# --- TLSA codecs --------------------------------------------------------------------------

TEXT_CASES = [
    # (presentation text as found, canonical to_text(), record)
    ("3 1 1 abcd", "3 1 1 ABCD", Tlsa(3, 1, 1, b"\xab\xcd")),
    ("  2 0 0 AB CD\n EF\t", "2 0 0 ABCDEF", Tlsa(2, 0, 0, b"\xab\xcd\xef")),
    ("255 255 255 00", "255 255 255 00", Tlsa(255, 255, 255, b"\x00")),
    ("003 001 001 Ff", "3 1 1 FF", Tlsa(3, 1, 1, b"\xff")),
]


@pytest.mark.parametrize(("text", "canonical", "record"), TEXT_CASES)
def test_tlsa_text_both_directions(text: str, canonical: str, record: Tlsa) -> None:
    assert parse_tlsa(text) == record
    assert record.to_text() == canonical  # upper-case hex, no inner spaces (RFC 8460 §4.5)
    assert str(record) == canonical
    assert parse_tlsa(canonical) == record


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3 1 1",
        "3 1 1 abc",  # odd number of hex digits
        "3 1 1 zz",
        "3 1 1 0x12",
        "256 1 1 ab",
        "-1 1 1 ab",
        "+3 1 1 ab",
        "1_0 1 1 ab",
        "\uff13 1 1 ab",  # a full-width digit that int() would take
        "3\u20031 1 ab",  # non-ASCII whitespace is not a separator
        "3 1 1 ab\u00a0cd",
        "0003 1 1 ab",
    ],
)
def test_parse_tlsa_rejects(text: str) -> None:
    with pytest.raises(TlsaError) as info:
        parse_tlsa(text, source="_25._tcp.mx1.example.com")
    assert info.value.source == "_25._tcp.mx1.example.com"


def test_tlsa_wire_both_directions() -> None:
    record = Tlsa(3, 1, 1, bytes(range(32)))
    assert record.to_wire() == b"\x03\x01\x01" + bytes(range(32))
    assert tlsa_from_wire(record.to_wire()) == record
    with pytest.raises(TlsaError):
        tlsa_from_wire(b"\x03\x01\x01")  # no association data


@pytest.mark.parametrize(
    "fields", [(256, 1, 1, b"\x00"), (3, -1, 1, b"\x00"), (3, 1, 1, b""), (3, 1, 1, "ab")]
)
def test_tlsa_constructor_validates(fields: tuple[int, int, int, bytes]) -> None:
    with pytest.raises(TlsaError):
        Tlsa(*fields)


tlsa_records = st.builds(
    Tlsa,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=96),
)
near_tlsa_text = st.from_regex(
    r"[ \t]?[0-9+\-]{0,4}[ \t\n]{1,2}[0-9]{0,4} [0-9]{1,3} [0-9a-fA-FxX \t\u00a0]{0,12}",
    fullmatch=True,
)


@given(tlsa_records)
def test_tlsa_text_and_wire_round_trip(record: Tlsa) -> None:
    assert parse_tlsa(record.to_text()) == record
    assert tlsa_from_wire(record.to_wire()) == record


@given(st.one_of(st.text(), near_tlsa_text))
def test_parse_tlsa_raises_only_tlsa_error(text: str) -> None:
    try:
        record = parse_tlsa(text)
    except TlsaError:
        return
    assert parse_tlsa(record.to_text()) == record


@given(st.lists(st.binary(max_size=64), max_size=4), tlsa_records)
def test_dane_verify_never_crashes_on_garbage_chains(chain: list[bytes], record: Tlsa) -> None:
    verdict = verify(chain, record)
    assert verdict.ok == (verdict.result_type is None)


# --- usability, digest agility ------------------------------------------------------------

D32, D64 = b"\x11" * 32, b"\x22" * 64


@pytest.mark.parametrize(
    "record",
    [
        Tlsa(4, 1, 1, D32),  # unknown usage
        Tlsa(3, 2, 1, D32),  # unknown selector
        Tlsa(3, 1, 3, D32),  # unknown matching type
        Tlsa(3, 1, 1, D32[:31]),  # SHA-256 digest one octet short
        Tlsa(2, 0, 2, D32),  # SHA-512 type with a SHA-256-sized digest
        Tlsa(0, 0, 1, D32),  # AMB-29: PKIX-TA treated as unusable
        Tlsa(1, 1, 1, D32),  # AMB-29 / DANE-32: PKIX-EE treated as unusable
    ],
    ids=str,
)
def test_dane_7_unusable_records(record: Tlsa, root: trustme.CA) -> None:
    assert unusable_reason(record) is not None
    assert classify_rrset([record]) is RrsetStatus.UNUSABLE  # TLS mandatory, no auth (DANE-19)
    assert usable_records([record]) == []
    leaf = root.issue_cert("mx1.example.com")
    assert_verdict(verify(chain_of(leaf), record), ResultType.TLSA_INVALID)
    # Negative control: one usable record beside it makes the RRset usable.
    good = Tlsa(3, 1, 1, D32)
    assert unusable_reason(good) is None
    assert classify_rrset([record, good]) is RrsetStatus.USABLE
    assert classify_rrset([]) is RrsetStatus.EMPTY


@pytest.mark.parametrize(
    ("rrset", "kept"),
    [
        ([Tlsa(3, 1, 1, D32), Tlsa(3, 1, 2, D64)], [Tlsa(3, 1, 2, D64)]),
        ([Tlsa(3, 1, 2, D64), Tlsa(3, 1, 1, D32)], [Tlsa(3, 1, 2, D64)]),
        ([Tlsa(3, 1, 1, D32), Tlsa(3, 1, 0, b"k")], [Tlsa(3, 1, 1, D32), Tlsa(3, 1, 0, b"k")]),
        (  # per usage+selector: a SHA-512 3 0 x does not prune a SHA-256 3 1 x
            [Tlsa(3, 1, 1, D32), Tlsa(3, 0, 2, D64), Tlsa(2, 1, 1, D32)],
            [Tlsa(3, 1, 1, D32), Tlsa(3, 0, 2, D64), Tlsa(2, 1, 1, D32)],
        ),
    ],
)
def test_dane_23_digest_agility_table(rrset: list[Tlsa], kept: list[Tlsa]) -> None:
    assert apply_digest_agility(rrset) == kept


def test_dane_23_digest_agility(root: trustme.CA) -> None:
    leaf = root.issue_cert("mx1.example.com")
    chain = chain_of(leaf)
    good256 = tlsa_rdata_for(chain[0], 3, 1, 1)
    good512 = tlsa_rdata_for(chain[0], 3, 1, 2)
    wrong512 = Tlsa(3, 1, 2, D64)
    # The weaker SHA-256 match is ignored when a SHA-512 record is present.
    assert_verdict(verify(chain, good256, wrong512), ResultType.TLSA_INVALID)
    # Negative controls: correct SHA-512 passes; a malformed SHA-512 (dropped first) prunes nothing.
    assert_verdict(verify(chain, good256, good512), OK)
    assert_verdict(verify(chain, good256, Tlsa(3, 1, 2, D32)), OK)
    # Full(0) records survive agility.
    assert_verdict(verify(chain, tlsa_rdata_for(chain[0], 3, 1, 0), wrong512), OK)


# --- DANE-EE ------------------------------------------------------------------------------


def test_dane_20_ee_ignores_names_and_expiry(root: trustme.CA) -> None:
    stale = mint(
        sans=["unrelated.invalid"],
        not_before=NOW - timedelta(days=1100),
        not_after=NOW - timedelta(days=730),
    )
    for selector in Selector:
        for mtype in MatchingType:
            record = tlsa_rdata_for(stale.der, Usage.DANE_EE, selector, mtype)
            verdict = verify([stale.der], record, refs=MX1)
            assert_verdict(verdict, OK)
            assert (verdict.record, verdict.depth) == (record, 0)
    # Negative controls: another key, and a record matching a certificate other than the leaf.
    other = mint(sans=["mx1.example.com"])
    assert_verdict(verify([stale.der], tlsa_rdata_for(other.der, 3, 1, 1)), ResultType.TLSA_INVALID)
    leaf = root.issue_cert("mx1.example.com")
    ee_on_root = tlsa_rdata_for(ca_der(root), 3, 1, 1)
    assert_verdict(verify(chain_of(leaf, ca_der(root)), ee_on_root), ResultType.TLSA_INVALID)


def test_dane_21_selectors(root: trustme.CA) -> None:
    chain = chain_of(root.issue_cert("mx1.example.com"))
    cert = x509.load_der_x509_certificate(chain[0])
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert spki_der(chain[0]) == spki  # the DER walker cuts out the right bytes
    cert_digest, spki_digest = hashlib.sha256(chain[0]).digest(), hashlib.sha256(spki).digest()
    assert_verdict(verify(chain, Tlsa(3, 0, 1, cert_digest)), OK)
    assert_verdict(verify(chain, Tlsa(3, 1, 1, spki_digest)), OK)
    # Negative controls: the digests swapped between selectors.
    assert_verdict(verify(chain, Tlsa(3, 0, 1, spki_digest)), ResultType.TLSA_INVALID)
    assert_verdict(verify(chain, Tlsa(3, 1, 1, cert_digest)), ResultType.TLSA_INVALID)


def test_dane_22_matching_types(root: trustme.CA) -> None:
    chain = chain_of(root.issue_cert("mx1.example.com"))
    spki = spki_der(chain[0])
    cases = [
        (Tlsa(3, 1, 0, spki), OK),
        (Tlsa(3, 1, 1, hashlib.sha256(spki).digest()), OK),
        (Tlsa(3, 1, 2, hashlib.sha512(spki).digest()), OK),
        (Tlsa(3, 0, 0, chain[0]), OK),
        (Tlsa(3, 1, 0, spki[:-1] + b"\x00"), ResultType.TLSA_INVALID),
        (Tlsa(3, 1, 1, hashlib.sha256(spki + b"x").digest()), ResultType.TLSA_INVALID),
        (Tlsa(3, 1, 2, hashlib.sha512(spki + b"x").digest()), ResultType.TLSA_INVALID),
        (Tlsa(3, 1, 2, hashlib.sha256(spki).digest()), ResultType.TLSA_INVALID),  # unusable
    ]
    for record, expected in cases:
        assert_verdict(verify(chain, record), expected)


def test_tlsa_rdata_for_rejects_unsupported_parameters(root: trustme.CA) -> None:
    der = ca_der(root)
    assert tlsa_rdata_for(der, 2, 0, 0) == Tlsa(2, 0, 0, der)
    for selector, mtype in ((2, 1), (0, 3)):
        with pytest.raises(TlsaError):
            tlsa_rdata_for(der, 3, selector, mtype)
    with pytest.raises(TlsaError):
        tlsa_rdata_for(b"\x30\x03\x02\x01\x01", 3, 1, 1)  # DER, but not a certificate


# --- DANE-TA ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("san", "refs", "expected"),
    [
        ("mx1.example.com", ("mx1.example.com", "example.com"), OK),
        ("example.com", ("mx1.example.com", "example.com"), OK),
        ("MX1.Example.COM", ("mx1.example.com.",), OK),  # case and root dot ignored
        ("other.example", ("mx1.example.com", "example.com"), ResultType.CERTIFICATE_HOST_MISMATCH),
        ("example.com", ("mx1.example.com",), ResultType.CERTIFICATE_HOST_MISMATCH),  # DANE-10
        ("mx1.example.com", (), ResultType.CERTIFICATE_HOST_MISMATCH),
    ],
)
def test_dane_24_ta_name_checks(
    root: trustme.CA, san: str, refs: tuple[str, ...], expected: ResultType | None
) -> None:
    chain = chain_of(root.issue_cert(san), ca_der(root))
    verdict = verify(chain, tlsa_rdata_for(ca_der(root), 2, 0, 1), refs=refs)
    assert_verdict(verdict, expected)
    if verdict.ok:
        assert verdict.depth == 1


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        # Secure MX: base, next-hop domain, its expansion (DANE-24).
        (("mx1.example.com", "example.com", None), ["mx1.example.com", "example.com"]),
        (
            ("MX.Hoster.Example.", "Example.COM", "alias.example.net"),
            ["mx.hoster.example", "example.com", "alias.example.net"],
        ),
        # Non-MX destination whose base is the CNAME expansion (DANE-25).
        (
            ("host.example.net", "example.com", "host.example.net"),
            ["host.example.net", "example.com"],
        ),
        # Insecure MX: the MX host alone (DANE-10).
        (("mx.hoster.example", None, None), ["mx.hoster.example"]),
    ],
)
def test_dane_24_25_reference_ids(args: tuple[str, str | None, str | None], ids: list[str]) -> None:
    assert dane_reference_ids(*args) == ids


def test_dane_25_original_next_hop_is_accepted(root: trustme.CA) -> None:
    chain = chain_of(root.issue_cert("example.com"), ca_der(root))
    record = tlsa_rdata_for(ca_der(root), 2, 0, 1)
    refs = dane_reference_ids("host.example.net", "example.com", "host.example.net")
    assert_verdict(verify(chain, record, refs=refs), OK)
    refs_without = dane_reference_ids("host.example.net", None, None)
    assert_verdict(verify(chain, record, refs=refs_without), ResultType.CERTIFICATE_HOST_MISMATCH)
    with pytest.raises(ValueError):
        dane_reference_ids(".", None, None)


WILD_NEGATIVE_REFS = ("a.mx1.example.com", "example.com")


@pytest.mark.parametrize(
    ("cn", "sans", "refs", "expected"),
    [
        ("Test cert", ["*.example.com"], MX1, OK),
        ("Test cert", ["www.example.com", "mx1.EXAMPLE.com."], MX1, OK),
        ("mx1.example.com", [], MX1, OK),  # CN only when there are no DNS-IDs
        ("*.example.com", [], MX1, OK),
        ("mx1.example.com", ["www.example.com"], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        # A wildcard stands for exactly one label: never two, never the bare parent.
        ("Test cert", ["*.example.com"], WILD_NEGATIVE_REFS, ResultType.CERTIFICATE_HOST_MISMATCH),
        ("Test cert", ["*.com"], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        ("Test cert", ["*.mx1.example.com"], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        ("Test cert", ["*.*.com"], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        # '*' only as the whole left-most label.
        ("Test cert", ["mx*.example.com"], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        ("Test cert", ["*x1.example.com"], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        ("other.example", [], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
        (None, [], MX1, ResultType.CERTIFICATE_HOST_MISMATCH),
    ],
)
def test_dane_26_dns_id_and_cn_rules(
    root: trustme.CA,
    cn: str | None,
    sans: list[str],
    refs: tuple[str, ...],
    expected: ResultType | None,
) -> None:
    ta = from_trustme(root)
    leaf = mint(issuer=ta, cn=cn, sans=sans)
    assert_verdict(verify([leaf.der, ta.der], tlsa_rdata_for(ta.der, 2, 1, 1), refs=refs), expected)


def test_dane_27_full_ta_cert_absent_from_chain(
    root: trustme.CA, other_root: trustme.CA, mx1_via_intermediate: trustme.LeafCert
) -> None:
    chain = chain_of(mx1_via_intermediate)
    assert ca_der(root) not in chain
    verdict = verify(chain, Tlsa(2, 0, 0, ca_der(root)))
    assert_verdict(verdict, OK)
    assert verdict.depth is None  # the anchor came from DNS
    # Negative control: a full certificate of a CA that signed nothing here.
    assert_verdict(
        verify(chain, Tlsa(2, 0, 0, ca_der(other_root))), ResultType.CERTIFICATE_NOT_TRUSTED
    )
    # And 2 0 0 still works when the TA is sent.
    assert_verdict(verify([*chain, ca_der(root)], Tlsa(2, 0, 0, ca_der(root))), OK)


@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (0, 2), (1, 2)])
def test_dane_28_digest_ta_absent_from_chain(
    root: trustme.CA, mx1_via_intermediate: trustme.LeafCert, selector: int, mtype: int
) -> None:
    record = tlsa_rdata_for(ca_der(root), 2, selector, mtype)
    chain = chain_of(mx1_via_intermediate)
    assert_verdict(verify(chain, record), ResultType.TLSA_INVALID)
    # Negative control: the same record once the server sends the TA.
    assert_verdict(verify([*chain, ca_der(root)], record), OK)


@pytest.mark.parametrize("key_type", [trustme.KeyType.ECDSA, trustme.KeyType.RSA])
def test_dane_29_full_ta_spki_absent_from_chain(
    other_root: trustme.CA, key_type: trustme.KeyType
) -> None:
    ta = trustme.CA(key_type=key_type)
    chain = chain_of(ta.create_child_ca(key_type=key_type).issue_cert("mx1.example.com"))
    assert_verdict(verify(chain, tlsa_rdata_for(ca_der(ta), 2, 1, 0)), OK)
    # Negative control: a key that signed nothing here.
    stranger = tlsa_rdata_for(ca_der(other_root), 2, 1, 0)
    assert_verdict(verify(chain, stranger), ResultType.CERTIFICATE_NOT_TRUSTED)


def test_dane_30_ta_path_length() -> None:
    ta = trustme.CA(path_length=0)
    lower = trustme.CA(parent_cert=trustme.CA(parent_cert=ta))  # two intermediates below the TA
    chain = chain_of(lower.issue_cert("mx1.example.com"), ca_der(ta))
    assert_verdict(
        verify(chain, tlsa_rdata_for(ca_der(ta), 2, 0, 1)), ResultType.VALIDATION_FAILURE
    )
    # Also when the constrained TA comes from DNS (2 0 0) and is not sent.
    assert_verdict(verify(chain[:-1], Tlsa(2, 0, 0, ca_der(ta))), ResultType.VALIDATION_FAILURE)
    # Negative controls: a TA allowing two intermediates; a key-only (2 1 x) TA has no constraints.
    roomy = trustme.CA(path_length=2)
    ok_chain = chain_of(trustme.CA(parent_cert=trustme.CA(parent_cert=roomy)).issue_cert(*MX1))
    assert_verdict(verify([*ok_chain, ca_der(roomy)], tlsa_rdata_for(ca_der(roomy), 2, 0, 1)), OK)
    assert_verdict(verify(chain, tlsa_rdata_for(ca_der(ta), 2, 1, 1)), OK)


def test_dane_30_intermediate_constraints_always_apply() -> None:
    ta = mint(cn="TA", ca=True)
    tight = mint(issuer=ta, cn="Tight", ca=True, path_len=0)
    lower = mint(issuer=tight, cn="Lower", ca=True)
    leaf = mint(issuer=lower, sans=MX1)
    record = tlsa_rdata_for(ta.der, 2, 1, 1)
    assert_verdict(
        verify([leaf.der, lower.der, tight.der, ta.der], record), ResultType.VALIDATION_FAILURE
    )
    # An end-entity certificate cannot issue.
    not_ca = mint(issuer=ta, cn="Not a CA", sans=["ee.example"])
    leaf2 = mint(issuer=not_ca, sans=MX1)
    assert_verdict(verify([leaf2.der, not_ca.der, ta.der], record), ResultType.VALIDATION_FAILURE)
    # Negative control: a well-formed CA in the same position.
    good = mint(issuer=ta, cn="Good", ca=True, path_len=0)
    leaf3 = mint(issuer=good, sans=MX1)
    assert_verdict(verify([leaf3.der, good.der, ta.der], record), OK)


@pytest.mark.parametrize(
    ("permitted", "expected"),
    [(["example.com"], OK), (["example.net"], ResultType.VALIDATION_FAILURE)],
)
def test_dane_30_ta_name_constraints(permitted: list[str], expected: ResultType | None) -> None:
    ta = mint(cn="Constrained TA", ca=True, permitted=permitted)
    leaf = mint(issuer=ta, sans=MX1)
    assert_verdict(verify([leaf.der, ta.der], tlsa_rdata_for(ta.der, 2, 0, 1)), expected)


def test_dane_31_ta_expired_leaf(root: trustme.CA) -> None:
    expired = root.issue_cert(*MX1, not_after=NOW - timedelta(days=1))
    chain = chain_of(expired, ca_der(root))
    assert_verdict(
        verify(chain, tlsa_rdata_for(ca_der(root), 2, 0, 1)), ResultType.CERTIFICATE_EXPIRED
    )
    # Negative controls: the same leaf under DANE-EE passes; a current leaf under DANE-TA passes.
    assert_verdict(verify(chain, tlsa_rdata_for(chain[0], 3, 1, 1)), OK)
    current = chain_of(root.issue_cert(*MX1), ca_der(root))
    assert_verdict(verify(current, tlsa_rdata_for(ca_der(root), 2, 0, 1)), OK)
    # Time may arrive as POSIX seconds too.
    assert_verdict(
        verify(chain, tlsa_rdata_for(ca_der(root), 2, 0, 1), now=NOW.timestamp()),
        ResultType.CERTIFICATE_EXPIRED,
    )


def test_dane_31_dates_below_the_ta_only() -> None:
    stale_ta = mint(cn="Old TA", ca=True, not_after=NOW - timedelta(days=1))
    leaf = mint(issuer=stale_ta, sans=MX1)
    record = tlsa_rdata_for(stale_ta.der, 2, 0, 1)
    assert_verdict(verify([leaf.der, stale_ta.der], record), OK)  # DNS vouches for the TA
    ta = mint(cn="TA", ca=True)
    stale_mid = mint(issuer=ta, cn="Old mid", ca=True, not_after=NOW - timedelta(days=1))
    leaf2 = mint(issuer=stale_mid, sans=MX1)
    chain = [leaf2.der, stale_mid.der, ta.der]
    assert_verdict(verify(chain, tlsa_rdata_for(ta.der, 2, 0, 1)), ResultType.CERTIFICATE_EXPIRED)
    early = mint(issuer=ta, sans=MX1, not_before=NOW + timedelta(days=1))
    assert_verdict(
        verify([early.der, ta.der], tlsa_rdata_for(ta.der, 2, 0, 1)), ResultType.VALIDATION_FAILURE
    )


def test_dane_ta_chain_out_of_order_with_extras(
    root: trustme.CA,
    other_root: trustme.CA,
    intermediate: trustme.CA,
    mx1_via_intermediate: trustme.LeafCert,
) -> None:
    leaf_der, mid_der = chain_of(mx1_via_intermediate)
    shuffled = [leaf_der, ca_der(root), ca_der(other_root), leaf_der, mid_der]
    record = tlsa_rdata_for(ca_der(root), 2, 0, 1)
    verdict = verify(shuffled, record)
    assert_verdict(verdict, OK)
    assert verdict.depth == 1
    # Negative controls: the link certificate missing; a TA record that only matches the leaf.
    assert_verdict(verify([leaf_der, ca_der(root)], record), ResultType.CERTIFICATE_NOT_TRUSTED)
    on_leaf = tlsa_rdata_for(leaf_der, 2, 0, 1)
    assert_verdict(verify([leaf_der, mid_der, ca_der(root)], on_leaf), ResultType.TLSA_INVALID)
    # The intermediate itself may be the TA.
    on_mid = tlsa_rdata_for(ca_der(intermediate), 2, 1, 1)
    assert_verdict(verify([leaf_der, mid_der], on_mid), OK)


def test_dane_verify_reports_the_furthest_failure(root: trustme.CA) -> None:
    chain = chain_of(root.issue_cert("other.example"), ca_der(root))
    verdict = verify(chain, Tlsa(3, 1, 1, D32), tlsa_rdata_for(ca_der(root), 2, 0, 1))
    assert_verdict(verdict, ResultType.CERTIFICATE_HOST_MISMATCH)
    assert verdict.record == tlsa_rdata_for(ca_der(root), 2, 0, 1)
    assert "other.example" in verdict.reason
    # Negative control: any one authenticating record is enough.
    verdict = verify(chain, Tlsa(3, 1, 1, D32), tlsa_rdata_for(chain[0], 3, 0, 1))
    assert_verdict(verdict, OK)


def test_dane_verify_degenerate_inputs(root: trustme.CA) -> None:
    record = tlsa_rdata_for(ca_der(root), 2, 0, 1)
    assert_verdict(verify([], record), ResultType.VALIDATION_FAILURE)
    assert_verdict(verify(chain_of(root.issue_cert(*MX1))), ResultType.TLSA_INVALID)  # no records
    garbage = b"not a certificate"
    assert_verdict(verify([garbage, ca_der(root)], record), ResultType.VALIDATION_FAILURE)
    # DANE-EE 3 0 x compares the bytes as sent, parseable or not.
    assert_verdict(verify([garbage], Tlsa(3, 0, 1, hashlib.sha256(garbage).digest())), OK)
    assert_verdict(
        verify([garbage], Tlsa(3, 1, 1, hashlib.sha256(garbage).digest())), ResultType.TLSA_INVALID
    )
