"""Certificate judgement at the engine's clock: chain trust and name matching.

Theory of operation
-------------------
Two separate questions, answered by separate pure functions:

1. *Is the chain trusted at ``now``?* :func:`verify_chain` builds a path from
   the peer's leaf, through the intermediates it sent, to one of our roots,
   with ``cryptography.x509.verification``, at a time the caller passes in (the
   engine's clock, so a scenario that advances time sees certificates expire).
2. *Does the certificate name the right host?* Three matchers, one per rule
   set: :func:`rfc6125_match` (RFC 8461 §4.2: SAN DNS-IDs against the MX host),
   :func:`cisco_verify_match` and :func:`cisco_hosted_verify_match` (the two
   appliance algorithms of ``spec/docs/gateway-behaviour.md`` §1.2).

Why a *client* verifier. ``build_server_verifier(subject)`` also matches the
subject against the SAN extension, and the web-PKI end-entity profile requires
a SAN. Both are wrong here: the Cisco algorithms consider the CN of a
certificate without SANs (so a CN-only leaf must still chain), and the name
rules differ per TLS setting. ``build_client_verifier()`` builds and checks the
path without any name check; we give it an end-entity extension policy that
(a) lets the SAN be absent, or present with either criticality (trustme marks
it critical), and (b) replaces the client-auth EKU requirement with our own
validator: when an EKU extension is present it must allow ``serverAuth`` (or
``anyExtendedKeyUsage``), as OpenSSL's ``X509_PURPOSE_SSL_SERVER`` does.

Why the diagnosis. The verifier's error text is not an OpenSSL verify string
and, for a missing path, says only "candidates exhausted". Reports need a
``result-type`` and a ``failure-reason-code`` (docs/requirements.md §1.11), so on
failure we re-run the verifier at a probe time at which every presented
certificate is valid: if it then passes, the failure was a date
(``certificate-expired`` / not yet valid); if not, we walk the issuer links
ourselves to name the trust problem the way OpenSSL would.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from engine.core.errors import MxPatternError
from engine.core.events import ResultType
from engine.core.mx import normalize_host

__all__ = [
    "ChainVerdict",
    "cisco_hosted_verify_match",
    "cisco_verify_match",
    "common_name",
    "dns_names",
    "host_mismatch_reason",
    "load_certificate",
    "peer_mismatch_reason",
    "rfc6125_match",
    "verify_chain",
]

# OpenSSL X509_verify_cert_error_string() texts, used as failure-reason-codes.
EXPIRED = "certificate has expired"
NOT_YET_VALID = "certificate is not yet valid"
NO_LOCAL_ISSUER = "unable to get local issuer certificate"
SELF_SIGNED = "self-signed certificate"
SELF_SIGNED_IN_CHAIN = "self-signed certificate in certificate chain"
BAD_SIGNATURE = "certificate signature failure"


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """The outcome of :func:`verify_chain`.

    Attributes:
        ok: the chain reaches a trusted root and every certificate is valid at ``now``.
        result_type: on failure, the RFC 8460 result type; None when ``ok``.
        reason: on failure, an OpenSSL-style verify string (the ``failure-reason-code``).
        chain: on success, the built path, leaf first, root last.
    """

    ok: bool
    result_type: ResultType | None = None
    reason: str | None = None
    chain: tuple[x509.Certificate, ...] = ()


def load_certificate(cert: x509.Certificate | bytes) -> x509.Certificate:
    """A certificate object from DER bytes (or the object itself).

    Raises:
        ValueError: the bytes are not a DER certificate.
    """
    if isinstance(cert, x509.Certificate):
        return cert
    return _parse_der(bytes(cert))


@functools.lru_cache(maxsize=4096)
def _parse_der(der: bytes) -> x509.Certificate:
    # Every verification reads all the trust anchors again, so they are parsed once per
    # process (they are touched by every verification and so never evicted); the
    # agent's load_roots parses them first, silencing cryptography's warning about
    # roots with a serial number of 0 there (engine/delivery/agent.py).
    return x509.load_der_x509_certificate(der)


def _as_utc(now: dt.datetime | float) -> dt.datetime:
    if isinstance(now, dt.datetime):
        return now.astimezone(dt.UTC) if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(now, dt.UTC)


def _check_server_eku(_policy: Policy, _cert: x509.Certificate, eku: object) -> None:
    # RFC 5280 §4.2.1.12: when present, the EKU must allow TLS server use.
    if isinstance(eku, x509.ExtendedKeyUsage) and not (
        ExtendedKeyUsageOID.SERVER_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    ):
        raise ValueError("extended key usage does not permit serverAuth")


def _ee_policy() -> ExtensionPolicy:
    # See the module comment: SAN optional (CN-only leaves), server EKU instead of client EKU.
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _check_server_eku)
    )


def _verify_at(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    store: Store,
    when: dt.datetime,
) -> list[x509.Certificate]:
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(when)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_ee_policy())
        .build_client_verifier()
    )
    return verifier.verify(leaf, intermediates).chain


def verify_chain(
    chain_der: Sequence[bytes],
    roots: Sequence[x509.Certificate | bytes],
    now: dt.datetime | float,
) -> ChainVerdict:
    """Judge a peer chain against trusted roots at ``now``.

    Args:
        chain_der: the peer's certificates as sent, leaf first (DER).
        roots: the trust anchors (objects or DER).
        now: the engine's clock, an aware datetime or POSIX seconds.

    Returns:
        ``ok``, or the failure: ``certificate-expired`` (RFC 8461 §4.2, CERT-4);
        ``certificate-not-trusted`` with "unable to get local issuer certificate",
        "self-signed certificate", "self-signed certificate in certificate chain",
        "certificate is not yet valid" (CERT-3, CERT-5); or ``validation-failure``
        for anything else (a CA as leaf, a wrong EKU, an unparsable certificate).
    """
    if not chain_der:
        return _fail(ResultType.VALIDATION_FAILURE, "no peer certificate")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain_der]
        anchors = [load_certificate(r) for r in roots]
    except ValueError as exc:
        return _fail(ResultType.VALIDATION_FAILURE, f"certificate parse error: {exc}")
    when = _as_utc(now)
    leaf, intermediates = certs[0], certs[1:]
    if not anchors:
        return _fail(ResultType.CERTIFICATE_NOT_TRUSTED, _trust_problem(certs, []))
    store = Store(anchors)
    try:
        return ChainVerdict(ok=True, chain=tuple(_verify_at(leaf, intermediates, store, when)))
    except VerificationError as exc:
        first_error = str(exc)
    probe = _probe_time(certs)
    if probe is not None:
        try:
            built = _verify_at(leaf, intermediates, store, probe)
        except VerificationError:
            pass
        else:
            return _date_problem(built, when)
    return _diagnose(certs, anchors, first_error)


def _fail(result_type: ResultType, reason: str) -> ChainVerdict:
    return ChainVerdict(ok=False, result_type=result_type, reason=reason)


def _probe_time(certs: Sequence[x509.Certificate]) -> dt.datetime | None:
    # A moment inside every presented certificate's validity window, if one exists.
    start = max(c.not_valid_before_utc for c in certs)
    end = min(c.not_valid_after_utc for c in certs)
    return start if start <= end else None


def _date_problem(built: Sequence[x509.Certificate], when: dt.datetime) -> ChainVerdict:
    # The path exists; only the dates at ``now`` are wrong. The leaf-most fault wins.
    for cert in built:
        if when > cert.not_valid_after_utc:
            # RFC 8460 §4.3.1: "certificate-expired" (CERT-4).
            return _fail(ResultType.CERTIFICATE_EXPIRED, EXPIRED)
        if when < cert.not_valid_before_utc:
            # CERT-5: not-yet-valid is reported as untrusted, with a reason code.
            return _fail(ResultType.CERTIFICATE_NOT_TRUSTED, NOT_YET_VALID)
    return _fail(ResultType.VALIDATION_FAILURE, "certificate validity window rejected")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return _issued_by(cert, cert)


def _trust_problem(certs: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]) -> str:
    # Walk issuer links the way OpenSSL's chain builder reports them.
    current, pool = certs[0], list(certs[1:])
    depth = 0
    while True:
        if current in anchors or any(_issued_by(current, a) for a in anchors):
            return ""  # anchored: the path exists, the verifier objected to something else
        if _self_signed(current):
            return SELF_SIGNED if depth == 0 else SELF_SIGNED_IN_CHAIN
        if any(current.issuer == a.subject for a in anchors):
            return BAD_SIGNATURE
        parent = next((p for p in pool if _issued_by(current, p)), None)
        if parent is None:
            return NO_LOCAL_ISSUER
        pool.remove(parent)
        current, depth = parent, depth + 1


def _diagnose(
    certs: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], error: str
) -> ChainVerdict:
    problem = _trust_problem(certs, anchors)
    if problem:
        # RFC 8460 §4.3.1: "certificate-not-trusted" with a failure-reason-code (CERT-3).
        return _fail(ResultType.CERTIFICATE_NOT_TRUSTED, problem)
    # RFC 8460 §4.3.3: the catch-all, with the verifier's own words as the reason.
    return _fail(ResultType.VALIDATION_FAILURE, error.removeprefix("validation failed: "))


# --- names ---------------------------------------------------------------------------


def dns_names(cert: x509.Certificate) -> list[str]:
    """The SAN dNSName values, lower-cased (empty when there is no usable SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def common_name(cert: x509.Certificate) -> str | None:
    """The most specific (last) subject CN, lower-cased, or None."""
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    values = [a.value for a in attrs if isinstance(a.value, str)]
    return values[-1].lower() if values else None


def _reference(host: str | None) -> str | None:
    if not host:
        return None
    try:
        return normalize_host(host)
    except MxPatternError:
        return None


def _name_matches(presented: str | None, reference: str | None) -> bool:
    """RFC 6125 §6.4: case-insensitive; ``*`` only as the whole left-most label, one label."""
    if not presented or not reference:
        return False
    presented = presented.rstrip(".").lower()
    if "*" not in presented:
        return presented == reference
    first, _, rest = presented.partition(".")
    # RFC 6125 §6.4.3 / CERT-8 / FETCH-4: "*" must be the whole label; no partial wildcards,
    # and at least two labels after it (no "*.com").
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    ref_first, dot, ref_rest = reference.partition(".")
    return bool(ref_first) and bool(dot) and ref_rest == rest


def rfc6125_match(cert: x509.Certificate, host: str) -> bool:
    """RFC 8461 §4.2: does a SAN DNS-ID name ``host`` (the MX host)?

    The CN is never consulted (CERT-7); a wildcard covers exactly one left-most
    label (CERT-8).

    Args:
        cert: the peer's leaf certificate.
        host: the reference identifier, the MX host name.

    Returns:
        True when some SAN dNSName matches.
    """
    ref = _reference(host)
    return any(_name_matches(name, ref) for name in dns_names(cert))


def cisco_verify_match(
    cert: x509.Certificate, rcpt_domain: str, ptr_host: str | None = None
) -> bool:
    """The appliance's **Verify** algorithm (docs/gateway-behaviour.md §1.2).

    Used by Preferred-Verify, Required-Verify and ``tlsverify``. MX host names are
    deliberately *not* accepted: that is why a hosted domain fails with "peer cert
    does not match domain <rcpt>" (seed troubleshooting).

    Args:
        cert: the peer's leaf certificate.
        rcpt_domain: the recipient's email domain.
        ptr_host: the PTR name of the address connected to ("receiving machine's
            DNS name", [INF]), or None when unknown.

    Returns:
        True when the CN matches the domain or the PTR name, or a SAN matches the domain.
    """
    domain, ptr, cn = _reference(rcpt_domain), _reference(ptr_host), common_name(cert)
    # CISCO 8.5 UG p.21-9: CN vs destination domain or receiving host; SAN vs destination domain.
    return (
        _name_matches(cn, domain)
        or _name_matches(cn, ptr)
        or any(_name_matches(name, domain) for name in dns_names(cert))
    )


def cisco_hosted_verify_match(
    cert: x509.Certificate, rcpt_domain: str, mx_host: str, route_host: str | None = None
) -> bool:
    """The appliance's **Hosted Verify** algorithm (docs/gateway-behaviour.md §1.2).

    Used by Required-Verify Hosted Domains.

    Args:
        cert: the peer's leaf certificate.
        rcpt_domain: the recipient's email domain.
        mx_host: the MX host connected to.
        route_host: the SMTP route host when the domain is routed; it stands in for
            the MX host ([INF], docs/gateway-behaviour.md §6 item 6).

    Returns:
        True when a presented name matches the domain, or the MX (route) host.
    """
    # CISCO 200537 step 1: SANs only when present; the CN only when there are none.
    cn = common_name(cert)
    names = dns_names(cert) or ([cn] if cn else [])
    # CISCO 200537 step 2, then [INF] step 3: the email domain, then the MX or route host.
    refs = [_reference(rcpt_domain), _reference(route_host or mx_host)]
    return any(_name_matches(n, r) for n in names for r in refs)


def peer_mismatch_reason(rcpt_domain: str) -> str:
    """The seed's verify-error text for the Cisco algorithms."""
    return f"peer cert does not match domain {rcpt_domain}"


def host_mismatch_reason(mx_host: str) -> str:
    """The verify-error text for an RFC 8461 §4.2 MX-host name failure."""
    return f"peer cert does not match MX host {mx_host}"
