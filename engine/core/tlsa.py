"""TLSA records: the value, its two encodings, usability for SMTP, and matching.

Theory of operation
-------------------
A :class:`Tlsa` is the four RDATA fields of RFC 6698 §2.1 and nothing else; the
fields are plain ``int`` so that records with unknown parameters can still be
represented, rendered and reported. Two codecs:

* presentation form (RFC 6698 §2.2): ``"3 1 1 <hex>"``. :func:`parse_tlsa`
  accepts ASCII whitespace anywhere inside the hex (zone files split long
  digests) and hex in either case. :meth:`Tlsa.to_text` renders the RFC 8460
  §4.5 ``policy-string`` form: single spaces, the hex as one **upper-case**
  run with no inner whitespace (upper case is what BIND and ``dig`` print, and
  the choice is pinned by a test). ``parse_tlsa(t.to_text()) == t`` always.
* wire form (RFC 6698 §2.1): three octets and the association data.

The RRset pipeline the sender runs before looking at a certificate:

1. :func:`unusable_reason` decides per record whether SMTP can use it
   (RFC 7672 §3.1; AMB-28/AMB-29, see the comment on :func:`unusable_reason`).
2. :func:`usable_records` drops the unusable records, then applies digest
   agility (RFC 7671 §9): per (usage, selector) keep Full(0) records and only
   the records of the strongest digest present.
3. :func:`classify_rrset` names the outcome: ``usable`` (DANE authentication
   required), ``unusable`` (non-empty but nothing usable: TLS mandatory,
   no authentication; RFC 7672 §2.2 (2), DANE-7, DANE-19) or ``empty``.

Matching (RFC 6698 §2.1.2, §2.1.3): selector 0 takes the certificate DER as
sent, selector 1 the SubjectPublicKeyInfo DER *as it appears inside that
certificate* (cut out by a small DER walker rather than re-encoded by a
library, so the bytes hashed are the bytes the zone operator hashed).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from engine.core.errors import TlsaError

__all__ = [
    "MatchingType",
    "RrsetStatus",
    "Selector",
    "Tlsa",
    "Usage",
    "apply_digest_agility",
    "association_data",
    "classify_rrset",
    "parse_tlsa",
    "record_matches",
    "spki_der",
    "tlsa_from_wire",
    "tlsa_rdata_for",
    "unusable_reason",
    "usable_records",
]


class Usage(IntEnum):
    """Certificate usage (RFC 6698 §2.1.1, acronyms from RFC 7218)."""

    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    """Selector (RFC 6698 §2.1.2)."""

    CERT = 0
    SPKI = 1


class MatchingType(IntEnum):
    """Matching type (RFC 6698 §2.1.3)."""

    FULL = 0
    SHA2_256 = 1
    SHA2_512 = 2


class RrsetStatus(StrEnum):
    """What a secure TLSA RRset means for delivery (RFC 7672 §2.2)."""

    USABLE = "usable"  # at least one usable record: TLS + DANE authentication
    UNUSABLE = "unusable"  # non-empty, nothing usable: TLS mandatory, no authentication
    EMPTY = "empty"  # no records: DANE does not apply


# RFC 7671 §9: digest strength (higher wins); Full(0) has none and is never pruned.
_DIGEST_LEN: dict[int, int] = {MatchingType.SHA2_256: 32, MatchingType.SHA2_512: 64}
_STRENGTH: dict[int, int] = {MatchingType.SHA2_256: 1, MatchingType.SHA2_512: 2}

_WS = re.compile(r"[ \t\r\n]+")
_FIELD = re.compile(r"[0-9]{1,3}", re.ASCII)
_HEX = re.compile(r"[0-9A-Fa-f]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class Tlsa:
    """One TLSA record's RDATA.

    Attributes:
        usage: certificate usage, 0..255 (see :class:`Usage`).
        selector: 0..255 (see :class:`Selector`).
        mtype: matching type, 0..255 (see :class:`MatchingType`).
        data: certificate association data (non-empty).

    Raises:
        TlsaError: a field outside 0..255 or empty data.
    """

    usage: int
    selector: int
    mtype: int
    data: bytes

    def __post_init__(self) -> None:
        for name in ("usage", "selector", "mtype"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise TlsaError(
                    "must be an integer 0..255", field=name, value=repr(value), rule="RFC 6698 §2.1"
                )
        if not isinstance(self.data, bytes) or not self.data:
            raise TlsaError(
                "association data must be non-empty bytes", field="data", rule="RFC 6698 §2.1.4"
            )

    def to_text(self) -> str:
        """Presentation form, e.g. ``"3 1 1 0C72AC70..."`` (hex upper case, no spaces)."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex().upper()}"

    def to_wire(self) -> bytes:
        """RDATA in wire form (RFC 6698 §2.1)."""
        return bytes((self.usage, self.selector, self.mtype)) + self.data

    def __str__(self) -> str:
        return self.to_text()


def parse_tlsa(text: str, *, source: str | None = None) -> Tlsa:
    """Parse the presentation form ``usage selector mtype hex``.

    Args:
        text: the RDATA text; the hex may be split by ASCII whitespace.
        source: where the text came from (a DNS owner name), for error messages.

    Returns:
        The record.

    Raises:
        TlsaError: anything that is not four decimal fields 0..255 and even-length hex.
    """
    parts = _WS.split(text.strip(" \t\r\n"))
    if len(parts) < 4:
        raise TlsaError(
            "expected 'usage selector mtype hex'", source=source, value=text, rule="RFC 6698 §2.2"
        )
    fields: list[int] = []
    for name, part in zip(("usage", "selector", "mtype"), parts[:3], strict=True):
        # Decimal digits only: int() alone would take '+1', '1_0' and non-ASCII digits.
        if not _FIELD.fullmatch(part) or int(part) > 255:
            raise TlsaError(
                "must be a decimal integer 0..255",
                source=source,
                field=name,
                value=part,
                rule="RFC 6698 §2.2",
            )
        fields.append(int(part))
    hexdata = "".join(parts[3:])
    if not _HEX.fullmatch(hexdata) or len(hexdata) % 2:
        raise TlsaError(
            "association data must be an even number of hex digits",
            source=source,
            field="data",
            value=hexdata,
            rule="RFC 6698 §2.2",
        )
    return Tlsa(fields[0], fields[1], fields[2], bytes.fromhex(hexdata))


def tlsa_from_wire(rdata: bytes, *, source: str | None = None) -> Tlsa:
    """Decode wire-form RDATA.

    Raises:
        TlsaError: fewer than four octets (three fields and at least one data octet).
    """
    if len(rdata) < 4:
        raise TlsaError(
            "RDATA shorter than 4 octets", source=source, value=rdata.hex(), rule="RFC 6698 §2.1"
        )
    return Tlsa(rdata[0], rdata[1], rdata[2], bytes(rdata[3:]))


def unusable_reason(record: Tlsa) -> str | None:
    """Why SMTP cannot use ``record``, or None when it is usable.

    AMB-29: PKIX-TA(0) and PKIX-EE(1) are treated as unusable. RFC 7672 §3.1.3
    permits this, and it keeps the outcome strict and simple: an RRset of only
    PKIX records makes TLS mandatory without authentication (DANE-7, DANE-32);
    it never allows cleartext and never adds a WebPKI dependency to DANE.
    """
    if record.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
        return f"usage {record.usage} (PKIX) is not used for SMTP"  # RFC 7672 §3.1.3; AMB-29
    if record.usage not in (Usage.DANE_TA, Usage.DANE_EE):
        return f"unknown usage {record.usage}"  # RFC 7672 §2.2 (2)
    if record.selector not in (Selector.CERT, Selector.SPKI):
        return f"unknown selector {record.selector}"
    if record.mtype not in (MatchingType.FULL, *_DIGEST_LEN):
        return f"unknown matching type {record.mtype}"
    want = _DIGEST_LEN.get(record.mtype)
    if want is not None and len(record.data) != want:
        # RFC 7671 §9: a malformed digest is dropped before digest agility.
        return f"digest length {len(record.data)} for matching type {record.mtype}, want {want}"
    return None


def apply_digest_agility(records: Iterable[Tlsa]) -> list[Tlsa]:
    """RFC 7671 §9: per (usage, selector) keep Full(0) plus only the strongest digest present.

    Expects usable records (call after dropping unusable ones); order is preserved.
    """
    recs = list(records)
    strongest: dict[tuple[int, int], int] = {}
    for r in recs:
        key = (r.usage, r.selector)
        if _STRENGTH.get(r.mtype, 0) > _STRENGTH.get(strongest.get(key, -1), 0):
            strongest[key] = r.mtype
    return [
        r
        for r in recs
        if r.mtype == MatchingType.FULL or strongest.get((r.usage, r.selector)) == r.mtype
    ]


def usable_records(rrset: Iterable[Tlsa]) -> list[Tlsa]:
    """The records DANE authentication uses: usable ones, after digest agility.

    Args:
        rrset: the secure TLSA RRset.

    Returns:
        Usable records in RRset order (RFC 7672 §3.1, RFC 7671 §9).
    """
    return apply_digest_agility(r for r in rrset if unusable_reason(r) is None)


def classify_rrset(rrset: Sequence[Tlsa]) -> RrsetStatus:
    """Classify a secure TLSA RRset (RFC 7672 §2.2; DANE-6, DANE-7, DANE-19; AMB-28).

    Returns:
        ``EMPTY`` for no records, ``USABLE`` when any record is usable,
        otherwise ``UNUSABLE`` (TLS is still mandatory: never cleartext).
    """
    if not rrset:
        return RrsetStatus.EMPTY
    return RrsetStatus.USABLE if usable_records(rrset) else RrsetStatus.UNUSABLE


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """One DER TLV at ``pos``: (tag, content start, end). Raises ValueError."""
    if pos + 2 > len(buf):
        raise ValueError("truncated DER")
    tag, length = buf[pos], buf[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tag")
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4 or pos + n > len(buf):
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def spki_der(cert_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER exactly as embedded in ``cert_der``.

    Raises:
        TlsaError: ``cert_der`` is not a DER X.509 certificate.
    """
    try:
        tag, start, _ = _tlv(cert_der, 0)  # Certificate ::= SEQUENCE
        if tag != 0x30:
            raise ValueError("not a SEQUENCE")
        tag, pos, _ = _tlv(cert_der, start)  # tbsCertificate ::= SEQUENCE
        if tag != 0x30:
            raise ValueError("no tbsCertificate")
        tag, _, end = _tlv(cert_der, pos)
        if tag == 0xA0:  # [0] EXPLICIT version
            pos = end
        # serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
        for want in (0x02, 0x30, 0x30, 0x30, 0x30):
            tag, _, end = _tlv(cert_der, pos)
            if tag != want:
                raise ValueError(f"unexpected tag {tag:#x}")
            pos = end
        tag, _, end = _tlv(cert_der, pos)
        if tag != 0x30:
            raise ValueError("no subjectPublicKeyInfo")
    except ValueError as exc:
        raise TlsaError(f"not a DER certificate: {exc}", field="cert_der") from None
    return bytes(cert_der[pos:end])


def association_data(cert_der: bytes, selector: int, mtype: int) -> bytes:
    """The association data a record with ``selector``/``mtype`` holds for this certificate.

    Raises:
        TlsaError: unsupported selector or matching type, or ``cert_der`` not DER.
    """
    if selector == Selector.CERT:
        selected = cert_der  # RFC 6698 §2.1.2: the full certificate, as sent
    elif selector == Selector.SPKI:
        selected = spki_der(cert_der)  # RFC 6698 §2.1.2: SubjectPublicKeyInfo DER
    else:
        raise TlsaError("unsupported selector", field="selector", value=str(selector))
    if mtype == MatchingType.FULL:
        return selected
    if mtype == MatchingType.SHA2_256:
        return hashlib.sha256(selected).digest()
    if mtype == MatchingType.SHA2_512:
        return hashlib.sha512(selected).digest()
    raise TlsaError("unsupported matching type", field="mtype", value=str(mtype))


def tlsa_rdata_for(cert_der: bytes, usage: int, selector: int, mtype: int) -> Tlsa:
    """The TLSA record that publishes ``cert_der`` (for certificate factories and zones).

    Args:
        cert_der: the certificate, DER.
        usage: the usage to publish (copied, not interpreted).
        selector: 0 full certificate, 1 SubjectPublicKeyInfo.
        mtype: 0 exact, 1 SHA-256, 2 SHA-512.

    Raises:
        TlsaError: unsupported selector/matching type, or ``cert_der`` not DER.
    """
    return Tlsa(usage, selector, mtype, association_data(cert_der, selector, mtype))


def record_matches(record: Tlsa, cert_der: bytes) -> bool:
    """Whether ``record``'s association data matches ``cert_der`` (usage is not considered)."""
    try:
        return association_data(cert_der, record.selector, record.mtype) == record.data
    except TlsaError:
        return False
