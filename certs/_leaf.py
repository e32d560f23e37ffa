"""Leaf certificates, built with ``cryptography``: keys, names, extensions, signing.

Private to :mod:`certs`; :class:`certs.factory.CertFactory` is the only caller.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertError
from certs.profiles import WRONG_NAME, KeyType, NameRule

__all__ = [
    "PrivateKey",
    "Signer",
    "as_datetime",
    "build_ca",
    "build_leaf",
    "carried_names",
    "leaf_key",
    "signer",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_ORG = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mta-sts-harness")


class _RsaPool:
    """RSA-2048 keys, generated once per process and handed out by position."""

    def __init__(self) -> None:
        self._keys: list[rsa.RSAPrivateKey] = []
        self._lock = threading.Lock()

    def get(self, index: int) -> rsa.RSAPrivateKey:
        with self._lock:
            while len(self._keys) <= index:
                self._keys.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
            return self._keys[index]


_RSA_POOL = _RsaPool()


@dataclass(frozen=True, slots=True)
class Signer:
    """A CA that signs leaves: its certificate, its key, its path up to the root (DER)."""

    cert: x509.Certificate
    key: PrivateKey
    path_ders: tuple[bytes, ...]  # this CA up to its root


def signer(ca: trustme.CA, below: Signer | None = None) -> Signer:
    """Load a trustme CA (through its public PEM accessors); ``below`` is its parent."""
    cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey), type(key)
    der = cert.public_bytes(serialization.Encoding.DER)
    return Signer(cert, key, (der, *(below.path_ders if below else ())))


# The window of the CAs built here, as trustme draws its own: wide enough for any clock.
_CA_NOT_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
_CA_NOT_AFTER = datetime(3000, 1, 1, tzinfo=UTC)


def build_ca(by: Signer, name: str, *, path_length: int | None) -> Signer:
    """A CA certificate signed by ``by``, with its own fresh ECDSA P-256 key.

    trustme cannot make these: it refuses a child below a CA whose path length is 0
    (which is what a pathLenConstraint test needs), so they are built here.

    Args:
        by: the issuing CA.
        name: the subject's organizational unit (tells the CAs of one chain apart).
        path_length: the basicConstraints pathLenConstraint (None: unlimited).

    Returns:
        The new CA as a :class:`Signer` whose path runs up through ``by``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([_ORG, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(by.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                by.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(by.key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Signer(cert, key, (der, *by.path_ders))


def as_datetime(now: float | datetime) -> datetime:
    """POSIX seconds or a datetime (naive = UTC) as an aware UTC datetime, whole seconds."""
    if isinstance(now, datetime):
        when = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    else:
        when = datetime.fromtimestamp(now, UTC)
    return when.replace(microsecond=0)  # X.509 times have whole seconds


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or name.startswith(".") or ".." in name or name.endswith("."):
        raise CertError(f"not a host name: {name!r}", value=name)
    try:  # cryptography wants A-labels; keep a leading "*" label as is
        labels = [
            lab if lab == "*" or lab.isascii() else lab.encode("idna").decode("ascii")
            for lab in name.split(".")
        ]
    except UnicodeError as exc:
        raise CertError(f"cannot encode {name!r} as an A-label name: {exc}", value=name) from None
    return x509.DNSName(".".join(labels))


def _wildcard(name: str) -> str:
    # RFC 6125 §6.4.3: the wildcard is the whole left-most label of the name's parent.
    _, _, parent = name.partition(".")
    if "." not in parent:
        raise CertError(f"no wildcard parent with two or more labels for {name!r}", value=name)
    return f"*.{parent}"


def carried_names(rule: NameRule, names: tuple[str, ...]) -> tuple[str, ...]:
    """The names a leaf carries under ``rule``, given the names asked for."""
    match rule:
        case NameRule.REQUESTED:
            return names
        case NameRule.WRONG:
            return (WRONG_NAME,)
        case NameRule.WILDCARD:
            return tuple(dict.fromkeys(_wildcard(n) for n in names))
        case NameRule.CN_ONLY:
            return ()
    raise RuntimeError(f"no name rule {rule!r}")


def leaf_key(key_type: KeyType, index: int) -> PrivateKey:
    """A fresh ECDSA P-256 key, or the ``index``-th RSA-2048 key of the process pool."""
    if key_type is KeyType.ECDSA:
        return ec.generate_private_key(ec.SECP256R1())
    return _RSA_POOL.get(index)


def build_leaf(
    *,
    key: PrivateKey,
    by: Signer | None,
    common_name: str,
    san: tuple[str, ...],
    not_before: datetime,
    not_after: datetime,
) -> tuple[x509.Certificate, tuple[str, ...]]:
    """Sign a server leaf (``by=None``: self-signed); no SAN extension when ``san`` is empty.

    Returns:
        The certificate and its SAN entries as encoded (A-labels, IP text).

    Raises:
        CertError: a name that is neither a host name nor an IP address.
    """
    general_names = [_general_name(n) for n in (san or (common_name,))]
    _general_name(common_name)  # the CN must be a host name or address too
    subject = x509.Name([_ORG, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if by is None else by.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if san:  # CN_ONLY: no subjectAltName extension at all (CERT-7)
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    if by is not None:
        # A self-signed leaf carries no keyUsage: with one lacking keyCertSign, OpenSSL
        # would not see it as self-issued and would report a missing issuer instead.
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                by.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    cert = builder.sign(key if by is None else by.key, hashes.SHA256())
    return cert, tuple(str(g.value) for g in general_names) if san else ()
