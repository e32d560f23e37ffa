"""Server-side TLS for the fake MX: certificates, SNI selection, version limits.

Theory of operation
-------------------
``TlsSetup`` turns plain inputs (PEM chain + PEM key per certificate, a
min/max protocol version) into ready ``ssl.SSLContext`` objects once, when the
MTA is built or a certificate is rotated -- never per connection.

SNI (RFC 6066 §3; CERT-10, DANE-33): every STARTTLS handshake starts on the
*front* context, which serves the default certificate. Its ``sni_callback``
runs on the ClientHello, notes the name the client sent (or None) against the
``SSLObject``, and when a certificate is configured for that name switches the
connection to that name's context. After the handshake (or after it failed)
the session asks ``handshake_facts`` which name was sent and which
certificate was served.

No shared cipher: :meth:`TlsSetup.null_cipher_context` serves the same default
certificate from a context limited to TLS 1.2 and NULL-encryption suites
(``eNULL``). No client offers those (OpenSSL's ``DEFAULT`` and Python's own list
exclude them), so the server answers every ClientHello with handshake_failure.
TLS 1.3 suites cannot be limited by ``set_ciphers``, hence the 1.2 ceiling.

Legacy versions: OpenSSL 3 refuses TLS 1.0/1.1 at the default security level
(their signature algorithms use SHA-1), so a context that may speak below
TLS 1.2 gets ``@SECLEVEL=0`` ciphers. Python 3.11 flags the TLSv1/TLSv1_1
members as deprecated when they are set; we mean to set them, so that warning
is silenced right there and nowhere else.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509

# The wire-level breaks live in their own module; re-exported here, where they were.
from harness.world.mta.handshake import break_handshake, is_tls_record

__all__ = ["ServerCert", "TlsSetup", "break_handshake", "describe_cert", "is_tls_record"]

_VERSION_SENTINELS = (ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.MAXIMUM_SUPPORTED)


@dataclass(frozen=True, slots=True)
class ServerCert:
    """A certificate the MX can serve.

    Attributes:
        chain_pem: the leaf certificate first, then any intermediates, as PEM.
        key_pem: the leaf's private key as PEM (unencrypted).
        label: how sessions name this certificate; by default ``describe_cert``
            of the leaf.
    """

    chain_pem: bytes
    key_pem: bytes
    label: str | None = None


def describe_cert(chain_pem: bytes) -> str:
    """Name a certificate the way sessions record it.

    Args:
        chain_pem: PEM text whose first certificate is the leaf.

    Returns:
        ``"SAN:a,b"`` for the leaf's SAN dNSNames, or its subject as RFC 4514
        text (``"CN=mx1.example.com"``) when it has none.

    Raises:
        ValueError: ``chain_pem`` holds no readable certificate.
    """
    leaf = x509.load_pem_x509_certificate(chain_pem)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names: list[str] = []
    else:
        names = san.value.get_values_for_type(x509.DNSName)
    if names:
        return "SAN:" + ",".join(names)
    return leaf.subject.rfc4514_string() or "(empty subject)"


def _normalise_version(version: ssl.TLSVersion | None) -> ssl.TLSVersion | None:
    return None if version in _VERSION_SENTINELS else version


def _load(ctx: ssl.SSLContext, cert: ServerCert) -> None:
    # load_cert_chain only reads files: write a private temporary file, load
    # it, delete it (trustme does the same).
    fd, path = tempfile.mkstemp(prefix="mta-cert-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert.key_pem.rstrip() + b"\n" + cert.chain_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


class TlsSetup:
    """The server contexts for one certificate configuration.

    Args:
        cert: the default certificate (served without SNI or for an unknown name).
        sni_certs: certificates chosen by the SNI name the client sends.
        tls_min: the lowest protocol version offered, or None for OpenSSL's.
        tls_max: the highest protocol version offered, or None for OpenSSL's.

    Raises:
        ValueError: a PEM input does not load, an SNI key is empty, or
            ``tls_min`` is above ``tls_max``.
    """

    def __init__(
        self,
        cert: ServerCert,
        sni_certs: Mapping[str, ServerCert] | None = None,
        *,
        tls_min: ssl.TLSVersion | None = None,
        tls_max: ssl.TLSVersion | None = None,
    ) -> None:
        self.tls_min = _normalise_version(tls_min)
        self.tls_max = _normalise_version(tls_max)
        if self.tls_min is not None and self.tls_max is not None and self.tls_min > self.tls_max:
            raise ValueError(f"tls_min {self.tls_min!r} is above tls_max {self.tls_max!r}")
        self._labels: dict[ssl.SSLContext, str] = {}
        self._sni_seen: weakref.WeakKeyDictionary[ssl.SSLObject, str | None] = (
            weakref.WeakKeyDictionary()
        )
        self.front = self._context(cert)
        self._by_name: dict[str, ssl.SSLContext] = {}
        for name, named_cert in (sni_certs or {}).items():
            key = name.rstrip(".").lower()
            if not key:
                raise ValueError(f"SNI certificate names must not be empty, got {name!r}")
            self._by_name[key] = self._context(named_cert)
        self.front.sni_callback = self._on_client_hello
        self._default = cert
        self._null: ssl.SSLContext | None = None

    def null_cipher_context(self) -> ssl.SSLContext:
        """A context for the ``no-shared-cipher`` mode (see the module docstring)."""
        if self._null is None:
            ctx = self._context(self._default)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            if ctx.minimum_version > ssl.TLSVersion.TLSv1_2:
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers("eNULL:@SECLEVEL=0")
            ctx.sni_callback = self._note_client_hello  # no switch to a full context
            self._null = ctx
        return self._null

    def _context(self, cert: ServerCert) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            _load(ctx, cert)
        except ssl.SSLError as error:
            raise ValueError(f"cannot load certificate {cert.label!r}: {error}") from error
        legacy = ssl.TLSVersion.TLSv1_2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.tls_max is not None and self.tls_max < legacy:
                ctx.minimum_version = self.tls_min or ssl.TLSVersion.TLSv1
            elif self.tls_min is not None:
                ctx.minimum_version = self.tls_min
            if self.tls_max is not None:
                ctx.maximum_version = self.tls_max
        if ctx.minimum_version < legacy:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        self._labels[ctx] = cert.label or describe_cert(cert.chain_pem)
        return ctx

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        # RFC 6066 §3: the HostName is sent without a trailing dot; compare
        # case-insensitively anyway, a sloppy client should still be recorded.
        name = server_name.lower() if server_name else None
        self._sni_seen[ssl_object] = name
        if name is not None and name in self._by_name:
            ssl_object.context = self._by_name[name]

    def _note_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        self._sni_seen[ssl_object] = server_name.lower() if server_name else None

    def handshake_facts(self, ssl_object: ssl.SSLObject) -> tuple[str | None, str | None]:
        """What the client asked for and what it got.

        Args:
            ssl_object: the connection's ``SSLObject``, during or after the handshake.

        Returns:
            ``(sni, cert_label)``: the SNI name the client sent (None if none),
            and the label of the certificate served (None if the ClientHello
            never arrived).
        """
        if ssl_object not in self._sni_seen:
            return None, None
        return self._sni_seen[ssl_object], self._labels.get(ssl_object.context)
