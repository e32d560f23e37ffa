"""SSL contexts for the harness's servers and test clients, and TLS version probing.

Theory of operation
-------------------
Python 3.11's ``ssl`` loads a certificate chain only from a file, so
:func:`server_context` writes key and chain to a private temporary file,
loads it and deletes it at once. Under OpenSSL 3 a context costs about
0.7 ms, most of it the PEM key decoder inside ``load_cert_chain``; callers
that need many identical contexts should keep the one they got.

TLS 1.0 and 1.1 (CERT-12): OpenSSL 3 at its default security level 1 has no
cipher suite left for them (they sign with SHA-1/MD5-SHA1), and the handshake
fails with ``NO_CIPHERS_AVAILABLE``. Any context whose version range reaches
below TLS 1.2 therefore gets ``DEFAULT:@SECLEVEL=0`` on both ends. Whether the
local OpenSSL can still do a version at all is a fact about the machine, so it
is probed, not assumed (STYLE habit 20): :func:`probe_tls_versions` runs one
in-memory handshake per version and keeps the exact error of those that fail.

Every other context gets the same baseline whatever the interpreter's defaults: a TLS
1.2 floor and :data:`MODERN_CIPHERS`, CPython's own default cipher string. Upstream
CPython sets both on every new context; Debian 12's stock ``python3`` (3.11.2) is built
to leave them to OpenSSL (no floor, OpenSSL's DEFAULT list), so there a "strict" test
client offered TLS 1.0 and a "modern" server listed the legacy suites, and the tests
that compare them failed.
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
import warnings
from dataclasses import dataclass
from enum import StrEnum

import trustme

from certs.errors import CertError

__all__ = [
    "LEGACY_CIPHERS",
    "MODERN_CIPHERS",
    "TlsProbe",
    "Trust",
    "client_context",
    "probe_tls_versions",
    "server_context",
    "supported_tls_versions",
]

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
MODERN_CIPHERS = (
    "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
)
_TLS_VERSIONS = (
    ssl.TLSVersion.TLSv1,
    ssl.TLSVersion.TLSv1_1,
    ssl.TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_3,
)
# What SSLSocket.version() reports for each.
_WIRE_NAMES = dict(zip(_TLS_VERSIONS, ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"), strict=True))


class Trust(StrEnum):
    """Which roots a test client trusts."""

    TRUSTED = "trusted"  # the factory's trusted root only
    UNTRUSTED = "untrusted"  # the root the engine must not trust, only
    NONE = "none"  # verify nothing (the DANE-EE style "encrypt only" client)


def _is_legacy(version: ssl.TLSVersion | None) -> bool:
    return version is not None and version < ssl.TLSVersion.TLSv1_2


def _limit_versions(
    ctx: ssl.SSLContext, min_version: ssl.TLSVersion | None, max_version: ssl.TLSVersion | None
) -> None:
    if min_version is not None and max_version is not None and min_version > max_version:
        raise CertError(
            f"min_version {min_version!r} is above max_version {max_version!r}",
            value=(min_version, max_version),
        )
    if _is_legacy(max_version) and min_version is None:
        min_version = ssl.TLSVersion.MINIMUM_SUPPORTED  # else the 1.2 floor empties it
    if _is_legacy(min_version) or _is_legacy(max_version):
        ctx.set_ciphers(LEGACY_CIPHERS)
    else:  # the baseline, not the interpreter's defaults (see the module docstring)
        ctx.set_ciphers(MODERN_CIPHERS)
        if min_version is None:
            min_version = ssl.TLSVersion.TLSv1_2
    # Python warns (DeprecationWarning) on setting TLSv1/TLSv1_1; asking for them is the point.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version


def server_context(
    key_and_chain_pem: bytes,
    *,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A server-side context presenting a key and chain.

    Args:
        key_and_chain_pem: the private key PEM followed by the chain PEM (leaf first).
        min_version: lowest TLS version offered, or None.
        max_version: highest TLS version offered, or None.

    Returns:
        A new ``PROTOCOL_TLS_SERVER`` context.

    Raises:
        CertError: ``min_version`` above ``max_version``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fd, path = tempfile.mkstemp(prefix="certs-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_and_chain_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    _limit_versions(ctx, min_version, max_version)
    return ctx


def client_context(
    cadata: str | None,
    *,
    check_common_name: bool = False,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A verifying client context that trusts exactly ``cadata`` (no system roots).

    Args:
        cadata: PEM of the roots to trust; None turns verification off entirely.
        check_common_name: fall back to the subject CN when there is no SAN. Off by
            default: RFC 8461 §4.2 and RFC 6125 accept DNS-IDs only (CERT-7, FETCH-3).
        min_version: lowest TLS version to accept, or None.
        max_version: highest TLS version to offer, or None.

    Returns:
        A new ``PROTOCOL_TLS_CLIENT`` context.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=cadata)
        ctx.hostname_checks_common_name = check_common_name
    _limit_versions(ctx, min_version, max_version)
    return ctx


@dataclass(frozen=True, slots=True)
class TlsProbe:
    """Whether this machine's OpenSSL completed a handshake pinned to one version.

    Attributes:
        version: the TLS version tried (both ends pinned to it).
        error: None when it worked, else the exact error text.
    """

    version: ssl.TLSVersion
    error: str | None

    @property
    def supported(self) -> bool:
        """True when the handshake completed at this version."""
        return self.error is None


def _pump(
    client: ssl.SSLObject,
    server: ssl.SSLObject,
    c2s: ssl.MemoryBIO,
    s2c: ssl.MemoryBIO,
    c_in: ssl.MemoryBIO,
    s_in: ssl.MemoryBIO,
) -> None:
    # Drive both ends until both report a finished handshake; bounded, never spins.
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c2s.read())
        c_in.write(s2c.read())
        if all(done.values()):
            return
    raise RuntimeError("in-memory TLS probe handshake did not finish in 20 rounds")


def _probe(version: ssl.TLSVersion, ca: trustme.CA, leaf: trustme.LeafCert) -> TlsProbe:
    flag = {
        ssl.TLSVersion.TLSv1: ssl.HAS_TLSv1,
        ssl.TLSVersion.TLSv1_1: ssl.HAS_TLSv1_1,
        ssl.TLSVersion.TLSv1_2: ssl.HAS_TLSv1_2,
        ssl.TLSVersion.TLSv1_3: ssl.HAS_TLSv1_3,
    }[version]
    if not flag:
        return TlsProbe(version, f"OpenSSL was built without {version.name} (ssl.HAS_* is False)")
    try:
        server_ctx = server_context(
            leaf.private_key_and_cert_chain_pem.bytes(), min_version=version, max_version=version
        )
        client_ctx = client_context(
            ca.cert_pem.bytes().decode("ascii"), min_version=version, max_version=version
        )
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="probe.invalid")
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        _pump(client, server, c_out, s_out, c_in, s_in)
        got = client.version()
    except ssl.SSLError as exc:
        return TlsProbe(version, str(exc))
    if got != _WIRE_NAMES[version]:
        return TlsProbe(version, f"negotiated {got!r} instead")
    return TlsProbe(version, None)


@functools.cache
def probe_tls_versions() -> tuple[TlsProbe, ...]:
    """Try one in-memory handshake per TLS version, both ends pinned to it (cached).

    Legacy versions are tried the way :func:`server_context` offers them
    (``@SECLEVEL=0``), so a failure here means the local OpenSSL cannot do the
    version at all.

    Returns:
        One :class:`TlsProbe` per version, TLS 1.0 first.
    """
    ca = trustme.CA()
    leaf = ca.issue_cert("probe.invalid")
    return tuple(_probe(version, ca, leaf) for version in _TLS_VERSIONS)


def supported_tls_versions() -> frozenset[ssl.TLSVersion]:
    """The TLS versions this machine's OpenSSL can complete a handshake at.

    Returns:
        The versions whose :func:`probe_tls_versions` handshake succeeded.
    """
    return frozenset(p.version for p in probe_tls_versions() if p.supported)
