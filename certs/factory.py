"""CertFactory: mints every certificate a world needs, cheaply.

Theory of operation
-------------------
The certificate authorities are trustme CAs, made on first use: a trusted
root (the one the engine under test trusts), an untrusted root, and one
intermediate below the trusted root. One chain trustme cannot make is built
with ``cryptography`` (:func:`certs._leaf.build_ca`): a CA with pathLenConstraint
0 below the trusted root, and two CAs below it (DANE-30). Leaves are built by :mod:`certs._leaf`
with ``cryptography`` and signed with the CA's key, because the profiles need
shapes trustme does not make (no SAN at all, self-signed leaves) and because
trustme draws a new key per certificate.

Cost: an ECDSA P-256 key takes ~15 µs to generate, an RSA-2048 key ~45 ms.
ECDSA leaves get a fresh key each. RSA leaves take keys from a process-wide
pool by position (a factory's n-th RSA leaf gets the pool's n-th key), so a
test session generates each RSA key once however many factories it makes.
Keys are distinct within one factory, which is what DANE tests rely on
(``3 1 1`` of one host never matches another's); two factories in one
process may share RSA keys.

Every issued certificate is cached by everything that shapes it (profile,
names, key type, ``now``, validity, include_root), so a world asking again for
``mx1.example.com``/valid gets the same object back. ``now`` defaults to the
factory's reference time, fixed when the factory is made.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import time
import weakref
from datetime import datetime
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

from certs._leaf import (
    Signer,
    as_datetime,
    build_ca,
    build_leaf,
    carried_names,
    leaf_key,
    signer,
)
from certs.errors import CertError
from certs.issued import IssuedCert
from certs.profiles import (
    LONG_CHAIN_CAS,
    PROFILE_SPECS,
    CertProfile,
    IssuerKind,
    KeyType,
    Validity,
)
from certs.tls import Trust, client_context

__all__ = ["CertFactory"]


class CertFactory:
    """Mints certificates for hosts, by profile, relative to a (possibly fake) time.

    Args:
        key_type: key algorithm of the CAs and, unless ``issue`` says otherwise, leaves.
        now: the reference time ``issue`` uses when given none: POSIX seconds or a
            datetime (naive means UTC). Default: the wall clock at construction.
    """

    def __init__(
        self, *, key_type: KeyType | str = KeyType.ECDSA, now: float | datetime | None = None
    ) -> None:
        self.key_type = KeyType(key_type)
        self.now = as_datetime(time.time() if now is None else now)
        self._cas: dict[IssuerKind, trustme.CA] = {}
        self._signers: dict[IssuerKind, Signer] = {}
        self._cache: dict[tuple[object, ...], IssuedCert] = {}
        self._rsa_drawn = 0
        self._tmpdir: Path | None = None
        self._finalizer: weakref.finalize[[str, bool], CertFactory] | None = None

    # -- certificate authorities ---------------------------------------------------------

    def _ca(self, kind: IssuerKind) -> trustme.CA:
        if kind not in self._cas:
            trustme_key = trustme.KeyType[self.key_type.name]
            if kind is IssuerKind.INTERMEDIATE:
                self._cas[kind] = self.trusted_ca.create_child_ca(key_type=trustme_key)
            elif kind in (IssuerKind.TRUSTED_ROOT, IssuerKind.UNTRUSTED_ROOT):
                org = f"mta-sts-harness {kind.value} CA"
                self._cas[kind] = trustme.CA(organization_name=org, key_type=trustme_key)
            else:
                raise RuntimeError(f"no CA for issuer kind {kind!r}")
        return self._cas[kind]

    def _signer(self, kind: IssuerKind) -> Signer:
        if kind is IssuerKind.BELOW_PATHLEN0 and kind not in self._signers:
            # RFC 5280 §4.2.1.9: pathLenConstraint 0 allows no CA below; here are two.
            top = build_ca(self._signer(IssuerKind.TRUSTED_ROOT), "pathlen-0 CA", path_length=0)
            first = build_ca(top, "CA 1 below pathlen-0", path_length=None)
            self._signers[kind] = build_ca(first, "CA 2 below pathlen-0", path_length=None)
        if kind is IssuerKind.LONG_CHAIN and kind not in self._signers:
            current = self._signer(IssuerKind.TRUSTED_ROOT)
            for depth in range(1, LONG_CHAIN_CAS + 1):
                current = build_ca(current, f"long chain CA {depth}", path_length=None)
            self._signers[kind] = current
        if kind not in self._signers:
            below = (
                self._signer(IssuerKind.TRUSTED_ROOT) if kind is IssuerKind.INTERMEDIATE else None
            )
            self._signers[kind] = signer(self._ca(kind), below)
        return self._signers[kind]

    @property
    def trusted_ca(self) -> trustme.CA:
        """The root the engine under test trusts (made on first use)."""
        return self._ca(IssuerKind.TRUSTED_ROOT)

    @property
    def untrusted_ca(self) -> trustme.CA:
        """A second root that the engine does not trust (made on first use)."""
        return self._ca(IssuerKind.UNTRUSTED_ROOT)

    @property
    def intermediate_ca(self) -> trustme.CA:
        """The intermediate below the trusted root (made on first use)."""
        return self._ca(IssuerKind.INTERMEDIATE)

    # -- trust, client side --------------------------------------------------------------

    @property
    def ca_bundle_pem(self) -> bytes:
        """The trusted root, PEM: the whole trust store a sender under test needs."""
        return self.trusted_ca.cert_pem.bytes()

    def trust_store_path(self) -> Path:
        """A file holding :attr:`ca_bundle_pem`, written once, removed by :meth:`close`."""
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="certs-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._tmpdir), True)
        path = self._tmpdir / "trusted-root.pem"
        if not path.exists():
            path.write_bytes(self.ca_bundle_pem)
        return path

    def close(self) -> None:
        """Remove the files :meth:`trust_store_path` wrote (also done at garbage collection)."""
        if self._finalizer is not None:
            self._finalizer()
        self._tmpdir = None

    def client_context(
        self,
        trust: Trust | str = Trust.TRUSTED,
        *,
        check_common_name: bool = False,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A stdlib client context for tests, trusting one of this factory's roots.

        Args:
            trust: ``"trusted"``, ``"untrusted"`` (the other root only) or ``"none"``.
            check_common_name: accept a CN when there is no SAN (off: DNS-IDs only).
            min_version: lowest TLS version to accept (below 1.2 lowers the seclevel).
            max_version: highest TLS version to offer.

        Returns:
            A new verifying (unless ``trust="none"``) ``PROTOCOL_TLS_CLIENT`` context.

        Raises:
            ValueError: ``trust`` is not a :class:`certs.tls.Trust` value.
        """
        trust = Trust(trust)
        cadata: str | None = None
        if trust is Trust.TRUSTED:
            cadata = self.trusted_ca.cert_pem.bytes().decode("ascii")
        elif trust is Trust.UNTRUSTED:
            cadata = self.untrusted_ca.cert_pem.bytes().decode("ascii")
        return client_context(
            cadata,
            check_common_name=check_common_name,
            min_version=min_version,
            max_version=max_version,
        )

    # -- leaves --------------------------------------------------------------------------

    def issue(
        self,
        *names: str,
        profile: CertProfile | str = CertProfile.VALID,
        now: float | datetime | None = None,
        key_type: KeyType | str | None = None,
        validity: Validity | None = None,
        include_root: bool = False,
        common_name: str | None = None,
    ) -> IssuedCert:
        """Mint (or return the cached) certificate for ``names`` under ``profile``.

        Args:
            names: the host names (or IP addresses) the certificate is for; the first is
                the subject CN. Profiles decide what the certificate actually carries.
            profile: see :class:`certs.profiles.CertProfile` and ``PROFILE_SPECS``.
            now: the time validity is relative to (POSIX seconds or datetime); default
                :attr:`now`. Pass the fake clock's time in scenarios.
            key_type: leaf key algorithm; default the factory's.
            validity: override the profile's window (e.g. expired two years ago).
            include_root: also send the root after the chain (DANE-TA tests).
            common_name: the subject CN instead of the first carried name, e.g. a CN
                that differs from every SAN entry (DANE-26: a CN is ignored when the
                certificate has DNS-IDs, RFC 6125 §6.4.4).

        Returns:
            The :class:`certs.issued.IssuedCert`.

        Raises:
            CertError: no names, a name (or ``common_name``) that is not a host name or
                IP address, or a wildcard profile for a name without a two-label parent.
        """
        if not names:
            raise CertError("issue() needs at least one name", value=names)
        profile = CertProfile(profile)
        spec = PROFILE_SPECS[profile]
        leaf_key_type = self.key_type if key_type is None else KeyType(key_type)
        when = self.now if now is None else as_datetime(now)
        window = spec.validity if validity is None else validity
        cache_key = (profile, names, leaf_key_type, when, window, include_root, common_name)
        cached = self._cache.get(cache_key)
        if cached is None:
            cached = self._build(
                profile, names, leaf_key_type, when, window, include_root, common_name
            )
            self._cache[cache_key] = cached
        return cached

    def _build(
        self,
        profile: CertProfile,
        names: tuple[str, ...],
        key_type: KeyType,
        when: datetime,
        window: Validity,
        include_root: bool,
        common_name: str | None,
    ) -> IssuedCert:
        spec = PROFILE_SPECS[profile]
        carried = carried_names(spec.names, names)
        cn = common_name if common_name is not None else (carried or names)[0]
        by = None if spec.issuer is IssuerKind.SELF else self._signer(spec.issuer)
        key = leaf_key(key_type, self._rsa_drawn)
        if key_type is KeyType.RSA:
            self._rsa_drawn += 1
        cert, san = build_leaf(
            key=key,
            by=by,
            common_name=cn,
            san=carried,
            not_before=when + window.start,
            not_after=when + window.end,
        )
        leaf_der = cert.public_bytes(serialization.Encoding.DER)
        path = (leaf_der, *(by.path_ders if by else ()))
        sent = path[:-1] if spec.sends_intermediate and len(path) > 1 else path[:1]
        if include_root and len(path) > len(sent):
            sent = (*sent, path[-1])
        return IssuedCert(
            profile=profile,
            names=names,
            san=san,
            common_name=cn,
            key_type=key_type,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            leaf_der=leaf_der,
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            chain_ders=sent,
            path_ders=path,
            trusted_root_pem=self.ca_bundle_pem,
        )
