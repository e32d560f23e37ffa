"""``_mta-sts`` and ``_smtp._tls`` TXT record selection and parsing.

Strategy: selection works on the raw RRset, as the resolver hands it over: a
list of RRs, each a list of character-strings (bytes). Each RR's strings are
joined with nothing in between (RFC 8461 §3.1, DISC-8; RFC 8460 §3, RPT-4).
RRs whose joined bytes do not begin with the version tag are discarded
(DISC-4, RPT-3); exactly one must remain (DISC-5); only that one is decoded
and parsed. Decoding is strict US-ASCII (DISC-16), so a non-ASCII byte in an
unrelated record (an SPF or verification string) never spoils selection.

The parser splits the record on ``;`` after checking for the version tag, and
matches each field against one compiled regex per ABNF production. Every
field must match; unknown extensions are kept in order (DISC-10, RPT-5).

AMB-2 (erratum 6285), the decision taken here: a record *counts* as an STS
record when it begins with ``v=STSv1`` followed by ``;``, whitespace, or the
end of the record. So ``v=STSv1 ;id=x`` alone is valid (the ABNF allows WSP
before ``;``), and next to another STS record it makes the count two, hence
no policy (DISC-5). ``v=STSv10;...`` does not count: it is another tag. The
same rule applies to ``v=TLSRPTv1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.core.errors import TxtRecordError

__all__ = [
    "NoStsReason",
    "NoStsRecord",
    "NoTlsRptRecord",
    "StsRecord",
    "TlsRptRecord",
    "join_strings",
    "parse_sts_record",
    "parse_tlsrpt_record",
    "select_sts_record",
    "select_tlsrpt_record",
]

STS_VERSION = "v=STSv1"
TLSRPT_VERSION = "v=TLSRPTv1"

# RFC 8461 §3.1: sts-field-delim = *WSP ";" *WSP  (WSP = SP / HTAB)
_DELIM_RE = re.compile(r"[ \t]*;[ \t]*")
# RFC 8461 §3.1: sts-id = %s"id=" 1*32(ALPHA / DIGIT)
_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")
# RFC 8461 §3.1 / RFC 8460 §3: ext-name = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
#                              ext-value = 1*(%x21-3A / %x3C / %x3E-7E)  (no "=", ";", SP, CTL)
_EXT_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,31})=([\x21-\x3a\x3c\x3e-\x7e]+)")
# RFC 8460 §3: tlsrpt-uri = URI with ",", "!" and ";" percent-encoded; RFC 3986 §3.1 scheme.
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[\x21\x23-\x2b\x2d-\x3a\x3c\x3d\x3f-\x7e]+")
_URI_SPLIT_RE = re.compile(r"[ \t]*,[ \t]*")
_REPORT_SCHEMES = ("mailto", "https")


class NoStsReason(StrEnum):
    """Why an RRset yields no policy."""

    NO_RECORDS = "no-records"  # empty RRset
    NO_STS_RECORD = "no-sts-record"  # no RR begins with v=STSv1
    MULTIPLE = "multiple-records"  # more than one STS record (DISC-5)
    INVALID = "invalid-record"  # the one STS record breaks the ABNF (DISC-6)


@dataclass(frozen=True, slots=True)
class StsRecord:
    """A valid ``v=STSv1`` record: its ``id`` and any extension fields, in order."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NoStsRecord:
    """The RRset holds no usable record; ``reason`` says why, ``error`` gives the parse error."""

    reason: NoStsReason
    detail: str
    error: TxtRecordError | None = None


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """A valid ``v=TLSRPTv1`` record (RFC 8460 §3).

    Attributes:
        rua: every reporting URI, in record order (any scheme the URI syntax allows).
        extensions: unknown fields kept as (name, value), in order.
    """

    rua: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()

    def report_uris(self) -> tuple[str, ...]:
        """The URIs a report may be sent to: only ``mailto:`` and ``https:`` (RPT-7)."""
        return tuple(u for u in self.rua if u.partition(":")[0].lower() in _REPORT_SCHEMES)


@dataclass(frozen=True, slots=True)
class NoTlsRptRecord:
    """The ``_smtp._tls`` RRset holds no usable record (RPT-2, RPT-3)."""

    reason: NoStsReason
    detail: str
    error: TxtRecordError | None = None


def join_strings(rr: Sequence[bytes]) -> bytes:
    """Join one RR's character-strings with nothing between them (DISC-8, RPT-4)."""
    return b"".join(rr)


def _split_fields(
    text: str, version: str, rule: str, source: str | None, shape_rule: str
) -> list[str]:
    """Check the version tag and return the fields after it (trailing ``;`` allowed)."""
    if not text.isascii():
        # DISC-16: the record is US-ASCII.
        bad = next(c for c in text if not c.isascii())
        raise TxtRecordError(
            f"non-ASCII character {bad!r} in record", source=source, value=text, rule="DISC-16"
        )
    # RFC 8461 §3.1 / RFC 8460 §3: the version field comes first and is case-sensitive (%s).
    if not text.startswith(version):
        raise TxtRecordError(
            f"record does not begin with {version!r}",
            source=source,
            field="v",
            value=text[: len(version) + 2],
            rule=rule,
        )
    parts = _DELIM_RE.split(text[len(version) :])
    if parts[0]:
        # Something other than a delimiter follows the tag (``v=STSv10``, ``v=STSv1 x``).
        raise TxtRecordError(
            f"version must be exactly {version!r}",
            source=source,
            field="v",
            value=version + parts[0],
            rule=rule,
        )
    fields = parts[1:]
    # ABNF: version 1*(delim field) [delim]: one trailing delimiter leaves one empty part.
    if fields and not fields[-1]:
        fields.pop()
    if not fields:
        raise TxtRecordError(
            "record has no field after the version", source=source, rule=shape_rule
        )
    return fields


def _bad_field(field: str, source: str | None, rule: str) -> TxtRecordError:
    name, eq, value = field.partition("=")
    if not field:
        why = "empty field (two ';' in a row)"
    elif not eq:
        why = "field has no '='"
    elif not value:
        why = "empty field value"
    elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}", name):
        why = "field name must be 1-32 of letters, digits, '_', '-', '.', starting alphanumeric"
    else:
        why = "field value may not contain '=', ';', spaces or control characters"
    return TxtRecordError(why, source=source, field=name or None, value=field, rule=rule)


def parse_sts_record(text: str, *, source: str | None = None) -> StsRecord:
    """Parse one joined ``_mta-sts`` TXT record.

    Args:
        text: the record, its character-strings already joined (see :func:`join_strings`).
        source: the DNS owner name, for errors.

    Returns:
        The record's id and extension fields.

    Raises:
        TxtRecordError: the record breaks RFC 8461 §3.1 (rule ``DISC-3``, ``DISC-6``,
            ``DISC-7`` or ``DISC-16``).
    """
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for field in _split_fields(text, STS_VERSION, "DISC-3", source, "DISC-6"):
        if field.startswith("id="):
            value = field[3:]
            # RFC 8461 §3.1 / DISC-7: id is 1-32 ALPHA / DIGIT.
            if _ID_RE.fullmatch(value) is None:
                raise TxtRecordError(
                    "id must be 1 to 32 ASCII letters or digits",
                    source=source,
                    field="id",
                    value=value,
                    rule="DISC-7",
                )
            # Strict: a second id makes the version ambiguous, so the record is invalid.
            if record_id is not None:
                raise TxtRecordError(
                    "duplicate id field", source=source, field="id", value=value, rule="DISC-6"
                )
            record_id = value
            continue
        m = _EXT_RE.fullmatch(field)
        if m is None:
            raise _bad_field(field, source, "DISC-6")
        # RFC 8461 §3.1 / DISC-10: unknown extensions are accepted and ignored (kept here).
        extensions.append((m.group(1), m.group(2)))
    if record_id is None:
        # RFC 8461 §3.1: "id: (plain-text, required)".
        raise TxtRecordError("record has no id field", source=source, field="id", rule="DISC-6")
    return StsRecord(id=record_id, extensions=tuple(extensions))


def parse_tlsrpt_record(text: str, *, source: str | None = None) -> TlsRptRecord:
    """Parse one joined ``_smtp._tls`` TXT record (RFC 8460 §3).

    Args:
        text: the record, its character-strings already joined.
        source: the DNS owner name, for errors.

    Returns:
        The reporting URIs and extension fields.

    Raises:
        TxtRecordError: the record breaks RFC 8460 §3 (rule ``RPT-2`` or ``RPT-6``).
    """
    rua: tuple[str, ...] | None = None
    extensions: list[tuple[str, str]] = []
    for field in _split_fields(text, TLSRPT_VERSION, "RPT-2", source, "RPT-2"):
        if field.startswith("rua=") and rua is None:
            uris = tuple(_URI_SPLIT_RE.split(field[4:]))
            for uri in uris:
                # RFC 8460 §3: tlsrpt-uri = URI; ",", "!" and ";" must be percent-encoded.
                if _URI_RE.fullmatch(uri) is None:
                    raise TxtRecordError(
                        "rua must be a comma-separated list of URIs (scheme ':' ...)",
                        source=source,
                        field="rua",
                        value=uri,
                        rule="RPT-6",
                    )
            rua = uris
            continue
        if field.startswith("rua="):
            # Strict: two rua fields would make the destination ambiguous.
            raise TxtRecordError(
                "duplicate rua field", source=source, field="rua", value=field, rule="RPT-2"
            )
        m = _EXT_RE.fullmatch(field)
        if m is None:
            raise _bad_field(field, source, "RPT-5")
        # RFC 8460 §3 / RPT-5: unknown fields are ignored (kept here).
        extensions.append((m.group(1), m.group(2)))
    if rua is None:
        # RFC 8460 §3 / RPT-2: rua is required.
        raise TxtRecordError("record has no rua field", source=source, field="rua", rule="RPT-2")
    return TlsRptRecord(rua=rua, extensions=tuple(extensions))


def _counts(record: bytes, tag: bytes) -> bool:
    """AMB-2: the record begins with the tag, followed by ';', WSP or its end."""
    return record.startswith(tag) and record[len(tag) : len(tag) + 1] in (b"", b";", b" ", b"\t")


def _ascii(raw: bytes, source: str | None) -> TxtRecordError:
    # DISC-16: the record is US-ASCII; name the first offending byte.
    bad = next(i for i, b in enumerate(raw) if b > 0x7F)
    return TxtRecordError(
        f"non-ASCII byte 0x{raw[bad]:02x} at offset {bad}",
        source=source,
        value=raw.decode("ascii", errors="backslashreplace"),
        rule="DISC-16",
    )


def _select(
    rrset: Sequence[Sequence[bytes]], tag: str, rule: str, source: str | None
) -> tuple[NoStsReason, str] | str | bytes:
    """The one record that counts, as text, or as bytes when it is not ASCII."""
    if not rrset:
        return NoStsReason.NO_RECORDS, "the RRset is empty"
    tag_bytes = tag.encode("ascii")
    # DISC-8 / RPT-4: concatenate each RR's strings; DISC-4 / RPT-3: discard the others.
    kept = [r for r in map(join_strings, rrset) if _counts(r, tag_bytes)]
    if not kept:
        return NoStsReason.NO_STS_RECORD, f"no record begins with {tag + ';'!r}"
    if len(kept) > 1:
        # DISC-5 / RPT-3: the remaining count must be exactly one.
        return NoStsReason.MULTIPLE, f"{len(kept)} records begin with {tag!r} ({rule})"
    # DISC-16: decode strictly; a non-ASCII record goes back as bytes for the error.
    return kept[0].decode("ascii") if kept[0].isascii() else kept[0]


def select_sts_record(
    rrset: Sequence[Sequence[bytes]], *, source: str | None = None
) -> StsRecord | NoStsRecord:
    """Select and parse the STS record from an RRset (RFC 8461 §3.1).

    Args:
        rrset: the TXT RRs, each a sequence of character-strings.
        source: the DNS owner name, for errors.

    Returns:
        The parsed record, or :class:`NoStsRecord` saying why there is no policy.
    """
    chosen = _select(rrset, STS_VERSION, "DISC-5", source)
    if isinstance(chosen, tuple):
        return NoStsRecord(reason=chosen[0], detail=chosen[1])
    if isinstance(chosen, bytes):
        error = _ascii(chosen, source)
        return NoStsRecord(reason=NoStsReason.INVALID, detail=str(error), error=error)
    try:
        return parse_sts_record(chosen, source=source)
    except TxtRecordError as exc:
        return NoStsRecord(reason=NoStsReason.INVALID, detail=str(exc), error=exc)


def select_tlsrpt_record(
    rrset: Sequence[Sequence[bytes]], *, source: str | None = None
) -> TlsRptRecord | NoTlsRptRecord:
    """Select and parse the TLSRPT record from an RRset (RFC 8460 §3).

    Args:
        rrset: the TXT RRs at ``_smtp._tls.<domain>``, each a sequence of character-strings.
        source: the DNS owner name, for errors.

    Returns:
        The parsed record, or :class:`NoTlsRptRecord` saying why the domain has none.
    """
    chosen = _select(rrset, TLSRPT_VERSION, "RPT-3", source)
    if isinstance(chosen, tuple):
        return NoTlsRptRecord(reason=chosen[0], detail=chosen[1])
    if isinstance(chosen, bytes):
        error = _ascii(chosen, source)
        return NoTlsRptRecord(reason=NoStsReason.INVALID, detail=str(error), error=error)
    try:
        return parse_tlsrpt_record(chosen, source=source)
    except TxtRecordError as exc:
        return NoTlsRptRecord(reason=NoStsReason.INVALID, detail=str(exc), error=exc)
