"""Certificates for the harness: profiles, a factory, SSL contexts, TLSA data, bundles.

See docs/architecture.md. Everything public is re-exported here::

    from certs import CertFactory, CertProfile

    factory = CertFactory(now=clock.now())
    mx1 = factory.issue("mx1.example.com", profile=CertProfile.EXPIRED)
    server_ctx = mx1.server_context()
    record = mx1.tlsa(3, 1, 1)
"""

from __future__ import annotations

from certs.bundle import BundlePaths, HostFiles, write_bundle
from certs.errors import CertError
from certs.factory import CertFactory
from certs.issued import IssuedCert
from certs.loopback import HandshakeResult, loopback_handshake
from certs.profiles import (
    LONG_CHAIN_CAS,
    PROFILE_SPECS,
    WRONG_NAME,
    CertProfile,
    IssuerKind,
    KeyType,
    NameRule,
    ProfileSpec,
    Validity,
)
from certs.tls import (
    LEGACY_CIPHERS,
    MODERN_CIPHERS,
    TlsProbe,
    Trust,
    client_context,
    probe_tls_versions,
    server_context,
    supported_tls_versions,
)

__all__ = [
    "LEGACY_CIPHERS",
    "LONG_CHAIN_CAS",
    "MODERN_CIPHERS",
    "PROFILE_SPECS",
    "WRONG_NAME",
    "BundlePaths",
    "CertError",
    "CertFactory",
    "CertProfile",
    "HandshakeResult",
    "HostFiles",
    "IssuedCert",
    "IssuerKind",
    "KeyType",
    "NameRule",
    "ProfileSpec",
    "TlsProbe",
    "Trust",
    "Validity",
    "client_context",
    "loopback_handshake",
    "probe_tls_versions",
    "server_context",
    "supported_tls_versions",
    "write_bundle",
]
