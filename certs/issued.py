"""An issued certificate: the bytes a server needs, and the data a zone publishes about it.

An :class:`IssuedCert` is a value. It holds DER only (PEM is derived), the
private key, the chain the server *sends* (``chain_ders``) and, apart from
that, the chain the certificate *verifies* through (``path_ders``: leaf up to
and including its root). The two differ on purpose for some profiles
(missing-intermediate sends less than the path; ``include_root`` sends more).
TLSA data is computed by the engine's own :func:`engine.core.tlsa.tlsa_rdata_for`,
so the harness publishes exactly what the engine will match against.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime

from certs.errors import CertError
from certs.profiles import CertProfile, KeyType
from engine.core.errors import TlsaError
from engine.core.tlsa import Tlsa, Usage, tlsa_rdata_for

__all__ = ["IssuedCert"]

# RFC 6698 §2.1.1: usages 1 and 3 name the end entity, 0 and 2 a trust anchor.
_EE_USAGES = frozenset({Usage.PKIX_EE, Usage.DANE_EE})
_TA_USAGES = frozenset({Usage.PKIX_TA, Usage.DANE_TA})


def _pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate minted by :class:`certs.factory.CertFactory`.

    Attributes:
        profile: the profile it was made for.
        names: the names it was asked for (not necessarily the names it carries).
        san: the subjectAltName entries it carries (DNS names and IP addresses, as text).
        common_name: the subject CN, or None.
        key_type: the leaf key's algorithm.
        not_before: notBefore, timezone-aware UTC, as encoded.
        not_after: notAfter, timezone-aware UTC, as encoded.
        leaf_der: the leaf certificate, DER.
        private_key_pem: the leaf's private key, PEM (PKCS#8, unencrypted).
        chain_ders: what the server sends, leaf first.
        path_ders: the verification path, leaf first, ending at its root (self-signed: the leaf).
        trusted_root_pem: the root a sender is meant to trust (the issuing factory's).
    """

    profile: CertProfile
    names: tuple[str, ...]
    san: tuple[str, ...]
    common_name: str | None
    key_type: KeyType
    not_before: datetime
    not_after: datetime
    leaf_der: bytes
    private_key_pem: bytes
    chain_ders: tuple[bytes, ...]
    path_ders: tuple[bytes, ...]
    trusted_root_pem: bytes

    @property
    def leaf_pem(self) -> bytes:
        """The leaf certificate, PEM."""
        return _pem(self.leaf_der)

    @property
    def chain_pems(self) -> tuple[bytes, ...]:
        """What the server sends, leaf first, PEM."""
        return tuple(_pem(der) for der in self.chain_ders)

    @property
    def chain_pem(self) -> bytes:
        """The sent chain as one PEM file, leaf first (as servers and ``harness.world`` take it)."""
        return b"".join(self.chain_pems)

    @property
    def anchor_der(self) -> bytes:
        """The root at the end of :attr:`path_ders` (the leaf itself when self-signed)."""
        return self.path_ders[-1]

    @property
    def issuer_der(self) -> bytes:
        """The certificate that signed the leaf (the leaf itself when self-signed)."""
        return self.path_ders[1] if len(self.path_ders) > 1 else self.path_ders[0]

    def server_context(
        self,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A fresh server-side context that presents this certificate and chain.

        Args:
            min_version: lowest TLS version offered (None: the default, or TLS 1.0 when
                ``max_version`` is below TLS 1.2).
            max_version: highest TLS version offered (None: the default). Below TLS 1.2
                the cipher list drops to ``@SECLEVEL=0``, without which OpenSSL 3 has
                no usable cipher suite for TLS 1.0/1.1.

        Returns:
            A new ``ssl.SSLContext`` (``PROTOCOL_TLS_SERVER``); the caller owns it.
        """
        from certs.tls import server_context  # certs.tls imports this module for typing

        return server_context(
            self.private_key_pem + self.chain_pem,
            min_version=min_version,
            max_version=max_version,
        )

    def tlsa(self, usage: int, selector: int, mtype: int, *, depth: int | None = None) -> Tlsa:
        """The TLSA RDATA that publishes this certificate (RFC 6698 §2.1).

        Args:
            usage: 3 DANE-EE or 1 PKIX-EE (the leaf), 2 DANE-TA or 0 PKIX-TA (a CA).
            selector: 0 full certificate, 1 SubjectPublicKeyInfo.
            mtype: 0 exact, 1 SHA-256, 2 SHA-512.
            depth: which certificate of :attr:`path_ders` to publish (0 leaf, 1 its
                issuer, ..., -1 the root). Default: the leaf for usages 1 and 3; the
                issuing CA for usages 0 and 2 (the leaf itself when self-signed).

        Returns:
            The engine's :class:`engine.core.tlsa.Tlsa` value.

        Raises:
            CertError: an unknown usage, selector or matching type, or ``depth``
                outside the path.
        """
        if usage not in _EE_USAGES | _TA_USAGES:
            raise CertError(f"TLSA usage {usage!r} is not 0..3", value=usage)
        if depth is None:
            depth = 0 if usage in _EE_USAGES else min(1, len(self.path_ders) - 1)
        try:
            cert_der = self.path_ders[depth]
        except IndexError:
            raise CertError(
                f"depth {depth!r} is outside the {len(self.path_ders)}-certificate path",
                value=depth,
            ) from None
        try:
            return tlsa_rdata_for(cert_der, usage, selector, mtype)
        except TlsaError as exc:
            raise CertError(
                f"cannot publish TLSA {usage} {selector} {mtype}: {exc}",
                value=(usage, selector, mtype),
            ) from exc
