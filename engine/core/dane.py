"""DANE authentication of an SMTP server's certificate chain (RFC 7672 §3, RFC 7671 §5).

Theory of operation
-------------------
:func:`dane_verify` takes what the handshake captured (the DER chain, leaf
first, exactly as the server sent it), the secure TLSA RRset, the reference
identifiers and the engine's ``now``; it returns a :class:`DaneVerdict`. It
reads no clock and opens nothing.

1. The RRset is reduced to its usable records after digest agility
   (:func:`engine.core.tlsa.usable_records`). Each record is one attempt; the
   first attempt that authenticates wins.
2. DANE-EE(3): the leaf alone is matched. No name checks, no validity dates
   (RFC 7672 §3.1.1, §3.2.1; DANE-20, AMB-27).
3. DANE-TA(2): paths are built depth-first from the leaf through the other
   certificates the server sent (in any order, extras ignored), each step
   proven by ``verify_directly_issued_by``. A path ends at a trust anchor:
   a certificate above the leaf that matches the record, or, for ``2 0 0``
   and ``2 1 0`` records that carry the whole certificate or key, an anchor
   taken from DNS that signed the path's top (RFC 7671 §5.2.2, §5.2.3;
   DANE-27, DANE-29). A digest record has nothing to anchor on unless the
   server sent the TA (DANE-28). On each path, in order: CA constraints of
   every issuer (and of the TA itself when the selector is Cert(0); DANE-30),
   validity dates of every certificate below the TA (DANE-31; the TA's own
   dates are not checked, DNS vouches for it), then the leaf's names against
   the reference identifiers (RFC 7672 §3.2.2, §3.2.3; DANE-24, DANE-26).
4. When nothing authenticates, the attempt that got furthest is reported:
   no match (``tlsa-invalid``) < anchor found but no signature path
   (``certificate-not-trusted``) < CA constraints (``validation-failure``) <
   dates (``certificate-expired``; not-yet-valid is ``validation-failure``)
   < names (``certificate-host-mismatch``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key
from cryptography.x509.oid import NameOID

from engine.core.events import ResultType
from engine.core.tlsa import MatchingType, Selector, Tlsa, Usage, record_matches, usable_records

__all__ = ["DaneVerdict", "dane_reference_ids", "dane_verify"]

_MAX_DEPTH = 8  # certificates on one path, leaf included
_MAX_STEPS = 256  # path-building work bound for hostile chains


class _Stage(IntEnum):
    """How far a failed attempt got; the furthest one is reported."""

    NO_MATCH = 0
    NO_PATH = 1
    CONSTRAINTS = 2
    DATES = 3
    NAMES = 4


@dataclass(frozen=True, slots=True)
class DaneVerdict:
    """The outcome of DANE authentication.

    Attributes:
        ok: True when some usable record authenticated the server.
        reason: one human sentence (what matched, or what failed and why).
        result_type: the RFC 8460 §4.3 result type of a failure; None when ok.
        record: the record that authenticated, or (on failure) the record whose
            attempt got furthest; None when there was no usable record.
        depth: chain position of the certificate that matched (0 is the leaf);
            None for a trust anchor taken from DNS, or on failure.
    """

    ok: bool
    reason: str
    result_type: ResultType | None = None
    record: Tlsa | None = None
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class _Cert:
    index: int
    der: bytes
    cert: x509.Certificate | None  # None: not parseable (usable only for 3 0 x matching)


@dataclass(frozen=True, slots=True)
class _Anchor:
    cert: x509.Certificate | None  # whose constraints apply (selector Cert(0) only)
    depth: int | None  # chain index, or None when the anchor came from DNS


@dataclass(frozen=True, slots=True)
class _RecordFailure:
    """Why one TLSA record did not authenticate the chain, and how far it got."""

    stage: _Stage
    result_type: ResultType
    reason: str
    record: Tlsa


def dane_verify(
    chain: Sequence[bytes],
    rrset: Sequence[Tlsa],
    *,
    reference_ids: Sequence[str],
    now: datetime | float,
) -> DaneVerdict:
    """Authenticate a server chain against a secure TLSA RRset (RFC 7672 §3).

    Callers classify the RRset first (:func:`engine.core.tlsa.classify_rrset`):
    with no usable record there is nothing to authenticate and this returns a
    ``tlsa-invalid`` failure.

    Args:
        chain: DER certificates, leaf first, as the server sent them.
        rrset: the secure TLSA RRset (unusable records are ignored here).
        reference_ids: names the leaf must match under DANE-TA
            (see :func:`dane_reference_ids`); unused under DANE-EE.
        now: the engine's time, an aware datetime or POSIX seconds (a naive
            datetime is taken as UTC).

    Returns:
        The verdict.
    """
    records = sorted(usable_records(rrset), key=lambda r: r.usage != Usage.DANE_EE)
    if not records:
        return DaneVerdict(False, "no usable TLSA records", ResultType.TLSA_INVALID)
    if not chain:
        return DaneVerdict(False, "server sent no certificate", ResultType.VALIDATION_FAILURE)
    when = _as_utc(now)
    certs = [_load(i, der) for i, der in enumerate(chain)]
    refs = [n for n in (_norm(r) for r in reference_ids) if n]
    best: _RecordFailure | None = None
    for rec in records:
        outcome: DaneVerdict | _RecordFailure
        if rec.usage == Usage.DANE_EE:
            # RFC 7672 §3.1.1: the leaf must match; names and expiry are not checked (AMB-27).
            if record_matches(rec, certs[0].der):
                return DaneVerdict(
                    True, f"leaf matches DANE-EE record {_short(rec)}", record=rec, depth=0
                )
            outcome = _RecordFailure(
                _Stage.NO_MATCH, ResultType.TLSA_INVALID, f"leaf does not match {_short(rec)}", rec
            )
        else:
            outcome = _verify_ta(certs, rec, refs, when)
        if isinstance(outcome, DaneVerdict):
            return outcome
        if best is None or outcome.stage > best.stage:
            best = outcome
    assert best is not None
    return DaneVerdict(False, best.reason, best.result_type, best.record)


def dane_reference_ids(
    tlsa_base: str, next_hop: str | None, next_hop_expanded: str | None
) -> list[str]:
    """The DANE-TA reference identifiers, primary first (RFC 7672 §3.2.2).

    Args:
        tlsa_base: the TLSA base domain (the MX host, or its secure CNAME
            expansion where the TLSA records were found): always the primary ID.
        next_hop: the original next-hop domain when it counts: with a secure MX
            RRset (DANE-24), or for a non-MX destination whose base domain is its
            CNAME expansion (DANE-25). Pass None for an insecure MX RRset, where
            the MX host name alone is the reference ID (DANE-10).
        next_hop_expanded: the secure CNAME expansion of ``next_hop``, if any.

    Returns:
        Lower-case names without a root dot, duplicates removed. Names are
        compared as given, so pass A-labels.

    Raises:
        ValueError: ``tlsa_base`` is empty.
    """
    primary = _norm(tlsa_base)
    if not primary:
        raise ValueError(f"empty TLSA base domain {tlsa_base!r}")
    out = [primary]
    for name in (next_hop, next_hop_expanded):
        norm = _norm(name) if name is not None else ""
        if norm and norm not in out:
            out.append(norm)
    return out


def _verify_ta(
    certs: list[_Cert], rec: Tlsa, refs: list[str], when: datetime
) -> DaneVerdict | _RecordFailure:
    if certs[0].cert is None:
        return _RecordFailure(
            _Stage.NO_PATH, ResultType.VALIDATION_FAILURE, "leaf certificate is not valid DER", rec
        )
    external = _dns_anchor(rec)
    # RFC 7672 §3.1.2: a DANE-TA record must match an issuer, not the leaf (DANE-28).
    why = f"no certificate above the leaf matches DANE-TA record {_short(rec)}"
    best = _RecordFailure(_Stage.NO_MATCH, ResultType.TLSA_INVALID, why, rec)
    if external is not None or any(record_matches(rec, c.der) for c in certs[1:]):
        why = f"no signature path from the leaf to the trust anchor of {_short(rec)}"
        best = _RecordFailure(_Stage.NO_PATH, ResultType.CERTIFICATE_NOT_TRUSTED, why, rec)
    for below, anchor in _paths(certs, rec, external):
        failure = _check_path(below, anchor, rec, refs, when)
        if failure is None:
            where = "DNS" if anchor.depth is None else f"chain[{anchor.depth}]"
            return DaneVerdict(
                True,
                f"DANE-TA record {_short(rec)}: {len(below)} cert(s) chain to the TA in {where}",
                record=rec,
                depth=anchor.depth,
            )
        if failure.stage > best.stage:
            best = failure
    return best


def _paths(
    certs: list[_Cert], rec: Tlsa, external: x509.Certificate | PublicKeyTypes | None
) -> Iterator[tuple[list[_Cert], _Anchor]]:
    """Yield (certificates below the TA, leaf first; the TA) for each path found."""
    steps = 0
    own_constraints = rec.selector == Selector.CERT  # RFC 7671 §5.2.1 (DANE-30)

    def walk(path: list[_Cert]) -> Iterator[tuple[list[_Cert], _Anchor]]:
        nonlocal steps
        steps += 1
        top = path[-1]
        assert top.cert is not None
        if len(path) > 1 and record_matches(rec, top.der):
            # RFC 7672 §3.1.2: the TA is a certificate the server sent, above the leaf.
            yield path[:-1], _Anchor(top.cert if own_constraints else None, top.index)
            return
        if external is not None and _signed_by(top.cert, external):
            # RFC 7671 §5.2.2, §5.2.3: a TA published in full need not be sent (DANE-27, -29).
            anchor_cert = external if isinstance(external, x509.Certificate) else None
            yield path, _Anchor(anchor_cert, None)
        if len(path) >= _MAX_DEPTH:
            return
        seen = {c.der for c in path}
        for cand in certs[1:]:
            if steps > _MAX_STEPS:
                return
            if cand.cert is not None and cand.der not in seen and _issued_by(top.cert, cand.cert):
                yield from walk([*path, cand])

    yield from walk([certs[0]])


def _check_path(
    below: list[_Cert], anchor: _Anchor, rec: Tlsa, refs: list[str], when: datetime
) -> _RecordFailure | None:
    leaf = below[0].cert
    assert leaf is not None
    presented = _presented_ids(leaf)
    # (certificate, intermediates between it and the leaf, label) for every issuer.
    issuers: list[tuple[x509.Certificate, int, str]] = [
        (c.cert, k - 1, f"chain[{c.index}]") for k, c in enumerate(below) if k and c.cert
    ]
    if anchor.cert is not None:
        issuers.append((anchor.cert, len(below) - 1, "trust anchor"))
    for cert, under, label in issuers:
        problem = _ca_problem(cert, under, presented)
        if problem is not None:
            return _RecordFailure(
                _Stage.CONSTRAINTS, ResultType.VALIDATION_FAILURE, f"{label}: {problem}", rec
            )
    for c in below:
        assert c.cert is not None
        # DANE-31: below the TA the usual validity dates apply (unlike DANE-EE).
        if when > c.cert.not_valid_after_utc:
            why = f"chain[{c.index}] expired at {c.cert.not_valid_after_utc.isoformat()}"
            return _RecordFailure(_Stage.DATES, ResultType.CERTIFICATE_EXPIRED, why, rec)
        if when < c.cert.not_valid_before_utc:
            why = f"chain[{c.index}] not valid before {c.cert.not_valid_before_utc.isoformat()}"
            return _RecordFailure(_Stage.DATES, ResultType.VALIDATION_FAILURE, why, rec)
    if not any(_name_matches(p, r) for p in presented for r in refs):
        why = f"leaf names {presented!r} match none of the reference IDs {refs!r}"
        return _RecordFailure(_Stage.NAMES, ResultType.CERTIFICATE_HOST_MISMATCH, why, rec)
    return None


def _ca_problem(cert: x509.Certificate, under: int, presented: list[str]) -> str | None:
    """Why ``cert`` may not issue this path, or None (RFC 5280 §4.2.1.3, .9, .10)."""
    ext = cert.extensions
    try:
        bc = ext.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "not a CA (no basicConstraints)"
    if not bc.ca:
        return "not a CA (basicConstraints cA is false)"
    if bc.path_length is not None and under > bc.path_length:
        return f"pathLenConstraint {bc.path_length} exceeded by {under} intermediate(s)"
    try:
        if not ext.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            return "keyUsage lacks keyCertSign"
    except x509.ExtensionNotFound:
        pass
    try:
        nc = ext.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    permitted = [_norm(s.value) for s in nc.permitted_subtrees or () if isinstance(s, x509.DNSName)]
    excluded = [_norm(s.value) for s in nc.excluded_subtrees or () if isinstance(s, x509.DNSName)]
    for name in presented:
        base = name.removeprefix("*.")
        if any(_within(base, e) for e in excluded):
            return f"name {name!r} is excluded by nameConstraints"
        if permitted and not any(_within(base, p) for p in permitted):
            return f"name {name!r} is outside the permitted nameConstraints"
    return None


def _within(name: str, subtree: str) -> bool:
    if not subtree:
        return True
    return name == subtree or name.endswith("." + subtree)


def _presented_ids(leaf: x509.Certificate) -> list[str]:
    """The leaf's identifiers as RFC 7672 §3.2.3 uses them."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_ids = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_ids = []
    if dns_ids:
        return [_norm(n) for n in dns_ids]  # RFC 7672 §3.2.3: DNS-IDs only, when any exist
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [_norm(v if isinstance(v, str) else v.decode("latin-1")) for v in (a.value for a in cns)]


def _name_matches(presented: str, ref: str) -> bool:
    if presented == ref:
        return True
    rest = presented.removeprefix("*.")
    if rest == presented or "*" in rest or "." not in rest:
        return False
    # RFC 7672 §3.2.3: '*' only as the whole left-most label, standing for exactly one label.
    label, dot, tail = ref.partition(".")
    return bool(label and dot) and tail == rest


def _short(rec: Tlsa) -> str:
    text = rec.to_text()
    return text if len(text) <= 80 else f"{text[:72]}… ({len(rec.data)} octets)"


def _norm(name: str) -> str:
    # Case-insensitive, root dot ignored (RFC 7672 §3.2.3, RFC 6125 §6.4.1).
    return name.strip().rstrip(".").lower()


def _as_utc(now: datetime | float) -> datetime:
    if isinstance(now, datetime):
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return datetime.fromtimestamp(now, UTC)


def _load(index: int, der: bytes) -> _Cert:
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.extensions  # noqa: B018 - malformed extensions make the certificate unusable
    except ValueError:
        return _Cert(index, der, None)
    return _Cert(index, der, cert)


def _dns_anchor(rec: Tlsa) -> x509.Certificate | PublicKeyTypes | None:
    """The TA itself when the record carries it whole (``2 0 0`` / ``2 1 0``)."""
    if rec.mtype != MatchingType.FULL:
        return None  # RFC 7672 §3.1.2: a digest can only match a TA the server sent (DANE-28)
    try:
        if rec.selector == Selector.CERT:
            return x509.load_der_x509_certificate(rec.data)
        return load_der_public_key(rec.data)
    except (ValueError, UnsupportedAlgorithm):
        return None


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)  # issuer name and signature
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _signed_by(cert: x509.Certificate, anchor: x509.Certificate | PublicKeyTypes) -> bool:
    if isinstance(anchor, x509.Certificate):
        return _issued_by(cert, anchor)
    # RFC 7671 §5.2.3: a bare TA key; check the signature on the top certificate.
    try:
        sig, tbs = cert.signature, cert.tbs_certificate_bytes
        params = cert.signature_algorithm_parameters
        digest = cert.signature_hash_algorithm
        if isinstance(anchor, rsa.RSAPublicKey):
            if not isinstance(params, padding.PKCS1v15 | padding.PSS) or digest is None:
                return False
            anchor.verify(sig, tbs, params, digest)
        elif isinstance(anchor, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            anchor.verify(sig, tbs, params)
        elif isinstance(anchor, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            anchor.verify(sig, tbs)
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True
