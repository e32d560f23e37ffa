"""``_mta-sts`` TXT record selection and parsing (RFC 8461 §3.1).

STUB: interface fixed; implementation being written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.core.errors import TxtRecordError

__all__ = ["NoStsRecord", "NoStsReason", "StsRecord", "parse_sts_record", "select_sts_record"]


@dataclass(frozen=True, slots=True)
class StsRecord:
    """A valid ``v=STSv1`` record: its ``id`` and any extension fields, in order."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()


class NoStsReason(StrEnum):
    """Why an RRset yields no policy."""

    NO_RECORDS = "no-records"  # empty RRset
    NO_STS_RECORD = "no-sts-record"  # no RR begins with v=STSv1
    MULTIPLE = "multiple-records"  # more than one STS record (DISC-5)
    INVALID = "invalid-record"  # the one STS record breaks the ABNF (DISC-6)


@dataclass(frozen=True, slots=True)
class NoStsRecord:
    """The RRset holds no usable record; ``reason`` says why, ``error`` gives the parse error."""

    reason: NoStsReason
    detail: str
    error: TxtRecordError | None = None


def parse_sts_record(text: str, *, source: str | None = None) -> StsRecord:
    """Parse one joined TXT record; raises TxtRecordError."""
    raise NotImplementedError


def select_sts_record(
    rrset: Sequence[Sequence[bytes]], *, source: str | None = None
) -> StsRecord | NoStsRecord:
    """Select and parse from an RRset given as RRs of character-strings."""
    raise NotImplementedError
