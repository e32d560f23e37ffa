"""Certificate profiles: the situations a sender's certificate checks must tell apart.

Theory of operation
-------------------
Each :class:`CertProfile` is one row of :data:`PROFILE_SPECS`, which says
*who signs* the leaf, *which names* it carries, *when* it is valid (relative
to a ``now`` the caller passes, so a fake clock works), and *what the server
sends*. :class:`certs.factory.CertFactory` reads only this table; adding a
profile is adding a row.

The rows map to docs/requirements.md: FETCH-2..6 (policy host) and CERT-3..8
(MX host) name the failures, DANE-20..31 reuse the same certificates with
TLSA data on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType

from certs.errors import CertError

__all__ = [
    "LONG_CHAIN_CAS",
    "PROFILE_SPECS",
    "WRONG_NAME",
    "CertProfile",
    "IssuerKind",
    "KeyType",
    "NameRule",
    "ProfileSpec",
    "Validity",
]

# RFC 2606 §2: ".invalid" can never be a real name, so it never matches by accident.
WRONG_NAME = "wrong-name.invalid"


class CertProfile(StrEnum):
    """What kind of certificate a host serves."""

    VALID = "valid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WRONG_NAME = "wrong-name"
    UNTRUSTED = "untrusted"
    SELF_SIGNED = "self-signed"
    VIA_INTERMEDIATE = "via-intermediate"
    MISSING_INTERMEDIATE = "missing-intermediate"
    WILDCARD = "wildcard"
    CN_ONLY = "cn-only"
    # DANE-30: leaf <- CA 2 <- CA 1 <- a CA with pathLenConstraint 0 <- trusted root; the
    # whole chain below the root is sent. Two CAs below a pathlen-0 CA break RFC 5280
    # §4.2.1.9, for PKIX and for a DANE-TA record naming the constrained CA.
    VIA_TWO_INTERMEDIATES_PATHLEN0 = "via-two-intermediates-pathlen0"
    # Transport faults (issue 12): leaf <- LONG_CHAIN_CAS CAs, unconstrained, <- trusted
    # root, the whole chain sent (~48 KB, under OpenSSL's 100 KB certificate-list cap).
    # RFC 5280 sets no depth limit, but every verifier has one: OpenSSL's default verify
    # depth is 100 ("certificate chain too long"), Postfix's smtp_tls_scert_verifydepth 9,
    # cryptography's max_chain_depth 8. One CA more than OpenSSL's allows.
    LONG_CHAIN = "long-chain"


#: The number of CAs between the trusted root and a ``long-chain`` leaf.
LONG_CHAIN_CAS = 101


class KeyType(StrEnum):
    """Key algorithm of a certificate (ECDSA P-256 or RSA 2048, as trustme makes them)."""

    ECDSA = "ecdsa"
    RSA = "rsa"


class IssuerKind(StrEnum):
    """Who signs the leaf."""

    TRUSTED_ROOT = "trusted-root"
    UNTRUSTED_ROOT = "untrusted-root"
    INTERMEDIATE = "intermediate"  # a child of the trusted root
    SELF = "self"
    # the second of two CAs below a pathLenConstraint-0 CA that the trusted root signed
    BELOW_PATHLEN0 = "below-pathlen0"
    # the last of LONG_CHAIN_CAS CAs in a row below the trusted root (101: beyond depth 100)
    LONG_CHAIN = "long-chain"


class NameRule(StrEnum):
    """Which names the leaf carries, given the names asked for."""

    REQUESTED = "requested"  # SAN = the names, CN = the first
    WRONG = "wrong"  # SAN and CN = WRONG_NAME only
    WILDCARD = "wildcard"  # SAN = "*.<parent>" of each name
    CN_ONLY = "cn-only"  # CN = the first name, no SAN extension at all


@dataclass(frozen=True, slots=True)
class Validity:
    """A validity window relative to ``now``: [now + start, now + end].

    Attributes:
        start: offset of notBefore from ``now`` (negative: in the past).
        end: offset of notAfter from ``now``.

    Raises:
        CertError: ``end`` is not after ``start``.
    """

    start: timedelta
    end: timedelta

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise CertError(
                f"validity ends ({self.end!r}) before it starts ({self.start!r})", value=self
            )


_DAY = timedelta(days=1)
# Ten years either way: a "valid" certificate stays valid however far a scenario
# moves the fake clock, and also at the real wall time OpenSSL checks against.
_CURRENT = Validity(start=-_DAY, end=3650 * _DAY)
_EXPIRED = Validity(start=-730 * _DAY, end=-_DAY)  # CERT-4: expired yesterday
_NOT_YET_VALID = Validity(start=_DAY, end=3650 * _DAY)  # CERT-5: valid from tomorrow


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """How to build a profile.

    Attributes:
        issuer: who signs the leaf.
        names: which names the leaf carries.
        validity: the default window, relative to ``now``.
        sends_intermediate: whether the server sends the intermediates after the leaf
            (every CA of the path but the root).
        breaks: what a strict sender rejects it for (None: it is acceptable).
    """

    issuer: IssuerKind
    names: NameRule
    validity: Validity
    sends_intermediate: bool
    breaks: str | None


_P = CertProfile
_I = IssuerKind
_N = NameRule
PROFILE_SPECS: MappingProxyType[CertProfile, ProfileSpec] = MappingProxyType(
    {
        _P.VALID: ProfileSpec(_I.TRUSTED_ROOT, _N.REQUESTED, _CURRENT, False, None),
        _P.EXPIRED: ProfileSpec(_I.TRUSTED_ROOT, _N.REQUESTED, _EXPIRED, False, "CERT-4, FETCH-6"),
        _P.NOT_YET_VALID: ProfileSpec(
            _I.TRUSTED_ROOT, _N.REQUESTED, _NOT_YET_VALID, False, "CERT-5, FETCH-6"
        ),
        _P.WRONG_NAME: ProfileSpec(_I.TRUSTED_ROOT, _N.WRONG, _CURRENT, False, "CERT-6, FETCH-2"),
        _P.UNTRUSTED: ProfileSpec(
            _I.UNTRUSTED_ROOT, _N.REQUESTED, _CURRENT, False, "CERT-3, FETCH-5"
        ),
        _P.SELF_SIGNED: ProfileSpec(_I.SELF, _N.REQUESTED, _CURRENT, False, "CERT-3, FETCH-5"),
        _P.VIA_INTERMEDIATE: ProfileSpec(_I.INTERMEDIATE, _N.REQUESTED, _CURRENT, True, None),
        _P.MISSING_INTERMEDIATE: ProfileSpec(
            _I.INTERMEDIATE, _N.REQUESTED, _CURRENT, False, "CERT-3, FETCH-5"
        ),
        _P.WILDCARD: ProfileSpec(_I.TRUSTED_ROOT, _N.WILDCARD, _CURRENT, False, None),
        _P.CN_ONLY: ProfileSpec(_I.TRUSTED_ROOT, _N.CN_ONLY, _CURRENT, False, "CERT-7, FETCH-3"),
        _P.VIA_TWO_INTERMEDIATES_PATHLEN0: ProfileSpec(
            _I.BELOW_PATHLEN0, _N.REQUESTED, _CURRENT, True, "DANE-30"
        ),
        _P.LONG_CHAIN: ProfileSpec(
            _I.LONG_CHAIN, _N.REQUESTED, _CURRENT, True, "chain beyond verification depth"
        ),
    }
)
