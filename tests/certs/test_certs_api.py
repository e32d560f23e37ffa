"""The certs package's public API, pinned (STYLE habit 17)."""

from __future__ import annotations

import importlib

import certs

MODULES = ["bundle", "errors", "factory", "issued", "loopback", "profiles", "tls"]


def test_package_exports() -> None:
    assert sorted(certs.__all__) == sorted(
        [
            "BundlePaths",
            "CertError",
            "CertFactory",
            "CertProfile",
            "HandshakeResult",
            "HostFiles",
            "IssuedCert",
            "IssuerKind",
            "KeyType",
            "LEGACY_CIPHERS",
            "LONG_CHAIN_CAS",
            "MODERN_CIPHERS",
            "NameRule",
            "PROFILE_SPECS",
            "ProfileSpec",
            "TlsProbe",
            "Trust",
            "Validity",
            "WRONG_NAME",
            "client_context",
            "loopback_handshake",
            "probe_tls_versions",
            "server_context",
            "supported_tls_versions",
            "write_bundle",
        ]
    )


def test_every_module_export_is_reexported() -> None:
    for name in MODULES:
        module = importlib.import_module(f"certs.{name}")
        for member in module.__all__:
            assert getattr(certs, member) is getattr(module, member), f"certs.{name}.{member}"


def test_profile_values() -> None:
    assert [str(p) for p in certs.CertProfile] == [
        "valid",
        "expired",
        "not-yet-valid",
        "wrong-name",
        "untrusted",
        "self-signed",
        "via-intermediate",
        "missing-intermediate",
        "wildcard",
        "cn-only",
        "via-two-intermediates-pathlen0",
        "long-chain",
    ]
