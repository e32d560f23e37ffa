"""A lean DNS wire codec for the one exchange the engine repeats most: a TXT lookup.

Why this exists next to dnspython: every delivery to a domain with a cached
MTA-STS policy re-checks ``_mta-sts.<domain>`` TXT (RFC 8461 §5.1), and building
and reading dnspython's general message objects was about 60% of that warm path
(``bench/bench_resolve.py``). This module writes the query with plain
``bytes`` operations and reads only the simple, common reply: a NOERROR or
NXDOMAIN answer that echoes our question and holds nothing but TXT records owned
by the name asked. Anything else (truncation, a CNAME, another rcode, an
extended rcode, a compression pointer it does not expect, a malformed record)
makes :func:`read_txt_reply` return None, and the caller decodes the same bytes
with dnspython as before. dnspython therefore stays the codec for everything
but that one shape; property tests hold both codecs to the same answers.

Both functions are pure: no sockets, no clocks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "TxtRdata",
    "TxtReply",
    "qname_wire",
    "query_question",
    "query_wire",
    "read_txt_reply",
    "txt_presentation",
]

# RFC 1035 §3.2.2 / RFC 6895 §3.1: the types the engine asks for.
_TYPE_CODES = {"A": 1, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}
_OPT = 41  # RFC 6891 §6.1.1
_NOERROR, _NXDOMAIN = 0, 3
# RFC 1035 §4.1.1: ID, flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
_HEADER = struct.Struct("!6H")
# RFC 1035 §4.1.1 header flags: RD, and AD (RFC 6840 §5.7: set in a query to ask for it).
_QUERY_FLAGS = b"\x01\x20"
# RFC 6891 §6.1.2 OPT RR: root owner, type 41, class = UDP payload 1232, TTL carries
# the DO bit (RFC 3225 §3), no options.
_OPT_RR = (
    b"\x00" + _OPT.to_bytes(2, "big") + (1232).to_bytes(2, "big") + b"\x00\x00\x80\x00\x00\x00"
)
# The octets a name may have here: lower-case LDH labels, and "_" (``_mta-sts``).
_NAME_OCTETS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class TxtRdata:
    """One TXT record's character-strings (RFC 1035 §3.3.14), as dnspython's ``strings``."""

    strings: tuple[bytes, ...]

    def to_text(self) -> str:
        """The presentation form, exactly as dnspython writes it."""
        return txt_presentation(self.strings)


@dataclass(frozen=True, slots=True)
class TxtReply:
    """What :func:`read_txt_reply` found: rcode, the AD bit and the TXT records."""

    nxdomain: bool
    authentic_data: bool
    records: tuple[TxtRdata, ...]


def qname_wire(qname: str) -> bytes | None:
    """``qname`` (lower-case, no root dot) as wire labels; None if not plain LDH/underscore.

    Only names the engine builds itself take this path (``_mta-sts.<domain>`` in
    A-labels); anything dnspython would have to escape or reject goes to dnspython.
    """
    if not qname or not qname.isascii():
        return None
    raw = qname.encode("ascii")
    if not _NAME_OCTETS.issuperset(raw.replace(b".", b"")):
        return None
    out = bytearray()
    for label in raw.split(b"."):
        # RFC 1035 §2.3.4: labels are 1 to 63 octets.
        if not 0 < len(label) <= 63:
            return None
        out.append(len(label))
        out += label
    out.append(0)
    # RFC 1035 §2.3.4: a name is at most 255 octets on the wire.
    return bytes(out) if len(out) <= 255 else None


# The same few names are asked again on every delivery (``_mta-sts.<domain>``, the MX
# hosts); the bytes of their queries are kept rather than rebuilt.
@lru_cache(maxsize=4096)
def query_wire(qname: str, rdtype: str) -> bytes | None:
    """The query dnspython's ``make_query(qname, rdtype, want_dnssec=True, payload=1232)``
    with AD set would write, with message ID 0; None when this codec does not cover it.
    """
    code = _TYPE_CODES.get(rdtype)
    name = qname_wire(qname)
    if code is None or name is None:
        return None
    # RFC 1035 §4.1.1: ID, flags, QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT=1 (the OPT RR).
    header = b"\x00\x00" + _QUERY_FLAGS + b"\x00\x01\x00\x00\x00\x00\x00\x01"
    return header + name + code.to_bytes(2, "big") + b"\x00\x01" + _OPT_RR


def query_question(query: bytes) -> bytes:
    """The question section (name, type, class) of a query :func:`query_wire` wrote."""
    return query[12 : -len(_OPT_RR)]


def read_txt_reply(wire: bytes, question: bytes) -> TxtReply | None:
    """Read a reply to a TXT query whose question section (name, type, class) is ``question``.

    Returns:
        The rcode, AD bit and TXT records, or None whenever the reply is not the simple
        shape described in the module docstring (the caller then uses dnspython).
    """
    if len(wire) < 12:
        return None
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    # RFC 1035 §4.1.1: QR=1, opcode QUERY, TC=0 (a truncated reply is retried over TCP).
    if flags & 0xFA00 != 0x8000:
        return None
    rcode = flags & 0x000F
    # Only an OPT RR may follow the answers: anything in the authority section (an SOA,
    # NSEC, ...) or any other additional record is dnspython's to read and judge.
    if rcode not in (_NOERROR, _NXDOMAIN) or qdcount != 1 or nscount or arcount > 1:
        return None
    end = 12 + len(question)
    # The reply must echo our question (names compare case-insensitively, RFC 4343).
    # bytes.lower() touches only 0x41-0x5A: never a label length (at most 63) nor our
    # question's type and class octets, so only the letters of the name are folded.
    if wire[12:end].lower() != question:
        return None
    owner = question[:-4]
    records: list[TxtRdata] = []
    pos = end
    for _ in range(ancount):
        if wire[pos : pos + 2] == b"\xc0\x0c":  # RFC 1035 §4.1.4: pointer to the question
            pos += 2
        elif wire[pos : pos + len(owner)].lower() == owner:
            pos += len(owner)
        else:
            return None  # another owner: a CNAME chain, left to dnspython
        fixed = wire[pos : pos + 10]
        if len(fixed) < 10 or fixed[0:4] != b"\x00\x10\x00\x01":  # TXT, IN
            return None
        size = int.from_bytes(fixed[8:10], "big")
        pos += 10
        rdata = wire[pos : pos + size]
        pos += size
        strings = _character_strings(rdata) if len(rdata) == size else None
        if strings is None:
            return None
        record = TxtRdata(strings)
        if record not in records:  # an RRset is a set (RFC 2181 §5)
            records.append(record)
    if arcount:
        # RFC 6891 §6.1.2: root owner, type OPT; the TTL's top octet extends the rcode.
        # Any EDNS option (an EDE, a cookie, ...) also goes to dnspython: only the bare
        # OPT RR a plain EDNS reply carries (RDLENGTH 0) is read here.
        fixed = wire[pos : pos + 11]
        if (
            len(fixed) < 11
            or fixed[0:3] != b"\x00\x00\x29"
            or fixed[5]
            or fixed[9:11] != b"\x00\x00"
        ):
            return None
    return TxtReply(rcode == _NXDOMAIN, bool(flags & 0x0020), tuple(records))


def _character_strings(rdata: bytes) -> tuple[bytes, ...] | None:
    """RFC 1035 §3.3.14: one or more <character-string>s filling the RDATA exactly."""
    if not rdata:
        return None
    out = []
    pos = 0
    while pos < len(rdata):
        size = rdata[pos]
        piece = rdata[pos + 1 : pos + 1 + size]
        if len(piece) != size:
            return None
        out.append(piece)
        pos += 1 + size
    return tuple(out)


def txt_presentation(strings: tuple[bytes, ...]) -> str:
    """RFC 1035 §5.1 presentation of TXT strings: quoted, ``"`` and ``\\`` escaped,
    other bytes outside 0x20-0x7E as ``\\DDD`` (dnspython's ``to_text``)."""
    return " ".join(f'"{_escape(s)}"' for s in strings)


def _escape(data: bytes) -> str:
    if data.isascii() and b'"' not in data and b"\\" not in data:
        text = data.decode("ascii")
        if text.isprintable():
            return text
    out = []
    for byte in data:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)
