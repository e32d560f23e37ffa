"""DNS record values for the fake world: names, loopback addresses and RDATA types.

Theory of operation
-------------------
Every value here is immutable and checked when built, so a broken world fails at
construction rather than as a puzzling DNS answer. Names are stored canonically:
ASCII (A-labels), lower case, no trailing dot, the root as ``""``. Address data is
loopback only (127.0.0.0/8 and ``::1``): the fake world must never send the engine
to an address beyond this machine (DESIGN §4). TXT and TLSA data are raw octets so
scenarios can publish non-ASCII or malformed content on purpose (DISC-16, DANE-7).
Nothing here knows about wire formats; ``harness.world.dns.answer`` encodes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AAAA",
    "CNAME",
    "MX",
    "RDATA_TYPES",
    "TLSA",
    "TXT",
    "A",
    "RData",
    "Record",
    "ZoneError",
    "canonical_name",
    "check_loopback",
]


class ZoneError(ValueError):
    """Zone data the fake DNS refuses to serve (bad name, non-loopback address ...)."""


def canonical_name(name: str) -> str:
    """Return ``name`` in canonical form: lower case, no trailing dot, ``""`` for the root.

    Raises:
        ZoneError: the name is not ASCII (use the A-label) or breaks a length limit.
    """
    if not name.isascii():
        raise ZoneError(f"DNS name {name!r} is not ASCII; give its A-label (xn--...)")
    text = name.lower().removesuffix(".")
    if not text:
        return ""
    labels = text.split(".")
    # RFC 1035 §2.3.4: labels 1..63 octets, names up to 255 octets on the wire.
    if any(not 0 < len(label) <= 63 for label in labels) or len(text) > 253:
        raise ZoneError(f"DNS name {name!r} has an empty or over-long label, or is too long")
    return text


def check_loopback(address: str) -> str:
    """Return ``address`` (normalised) if it is in 127.0.0.0/8 or is ``::1``.

    Raises:
        ZoneError: anything else; the fake world hands out loopback addresses only.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ZoneError(f"{address!r} is not an IP address") from None
    if not ip.is_loopback or (ip.version == 6 and ip != ipaddress.IPv6Address("::1")):
        raise ZoneError(
            f"{address!r} is not a loopback address; the fake world may only use "
            "127.0.0.0/8 and ::1"
        )
    return str(ip)


@dataclass(frozen=True, slots=True)
class A:
    """An IPv4 address record (loopback only)."""

    rrtype: ClassVar[str] = "A"
    address: str

    def __post_init__(self) -> None:
        if ":" in self.address:
            raise ZoneError(f"A record given the IPv6 address {self.address!r}; use AAAA")
        object.__setattr__(self, "address", check_loopback(self.address))

    def text(self) -> str:
        """Presentation format of the RDATA."""
        return self.address


@dataclass(frozen=True, slots=True)
class AAAA:
    """An IPv6 address record (``::1`` only)."""

    rrtype: ClassVar[str] = "AAAA"
    address: str

    def __post_init__(self) -> None:
        if ":" not in self.address:
            raise ZoneError(f"AAAA record given the IPv4 address {self.address!r}; use A")
        object.__setattr__(self, "address", check_loopback(self.address))

    def text(self) -> str:
        """Presentation format of the RDATA."""
        return self.address


@dataclass(frozen=True, slots=True)
class MX:
    """A mail exchanger; ``exchange="."`` is a null MX (RFC 7505)."""

    rrtype: ClassVar[str] = "MX"
    preference: int
    exchange: str

    def __post_init__(self) -> None:
        if not 0 <= self.preference <= 0xFFFF:
            raise ZoneError(f"MX preference {self.preference!r} is not in 0..65535")
        object.__setattr__(self, "exchange", canonical_name(self.exchange))

    def text(self) -> str:
        """Presentation format of the RDATA."""
        return f"{self.preference} {self.exchange}."


@dataclass(frozen=True, slots=True)
class TXT:
    """One TXT RR made of one or more character-strings (raw bytes; ``str`` is UTF-8)."""

    rrtype: ClassVar[str] = "TXT"
    strings: tuple[bytes, ...]

    def __post_init__(self) -> None:
        raw = tuple(s.encode() if isinstance(s, str) else bytes(s) for s in self.strings)
        if not raw:
            raise ZoneError("a TXT record needs at least one character-string")
        for s in raw:
            if len(s) > 255:  # RFC 1035 §3.3: <character-string> is at most 255 octets
                raise ZoneError(f"TXT character-string of {len(s)} octets exceeds 255: {s!r}")
        object.__setattr__(self, "strings", raw)

    def text(self) -> str:
        """Presentation format: quoted strings, other bytes as ``\\DDD``."""

        return " ".join(_quote(s) for s in self.strings)


def _quote(s: bytes) -> str:
    out = []
    for b in s:
        if b in b'"\\':
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class CNAME:
    """An alias to ``target``."""

    rrtype: ClassVar[str] = "CNAME"
    target: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", canonical_name(self.target))

    def text(self) -> str:
        """Presentation format of the RDATA."""
        return f"{self.target}."


@dataclass(frozen=True, slots=True)
class TLSA:
    """A TLSA record (RFC 6698 §2.1); any octets are allowed in ``data``, even bad lengths."""

    rrtype: ClassVar[str] = "TLSA"
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __post_init__(self) -> None:
        for name in ("usage", "selector", "mtype"):
            if not 0 <= getattr(self, name) <= 255:
                raise ZoneError(f"TLSA {name} {getattr(self, name)!r} is not in 0..255")
        if isinstance(self.data, str):
            try:
                object.__setattr__(self, "data", bytes.fromhex(self.data))
            except ValueError:
                raise ZoneError(f"TLSA data {self.data!r} is not hex") from None

    def text(self) -> str:
        """Presentation format of the RDATA."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex().upper()}"


RData = A | AAAA | MX | TXT | CNAME | TLSA

RDATA_TYPES: dict[str, type[RData]] = {t.rrtype: t for t in (A, AAAA, MX, TXT, CNAME, TLSA)}


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record: canonical owner name, RDATA and TTL."""

    name: str
    rdata: RData
    ttl: int = 300
