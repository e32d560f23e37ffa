"""MX host names and policy ``mx`` patterns (RFC 8461 §3.2, §4.1).

STUB: interface fixed; implementation being written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MxPattern", "mx_matches", "normalize_host", "parse_mx_pattern", "policy_permits"]


@dataclass(frozen=True, slots=True)
class MxPattern:
    """One ``mx`` pattern: an optional ``*.`` and a domain (lower-case A-labels, no root dot)."""

    domain: str
    wildcard: bool = False

    def __str__(self) -> str:
        return f"*.{self.domain}" if self.wildcard else self.domain


def parse_mx_pattern(text: str, *, source: str | None = None, line: int | None = None) -> MxPattern:
    """Parse one pattern; raises MxPatternError."""
    raise NotImplementedError


def normalize_host(name: str) -> str:
    """A DNS host name as compared: A-labels, lower case, root dot removed."""
    raise NotImplementedError


def mx_matches(pattern: MxPattern, host: str) -> bool:
    """Whether ``host`` (an MX RR target) matches ``pattern``."""
    raise NotImplementedError


def policy_permits(patterns: Iterable[MxPattern], host: str) -> bool:
    """Whether any pattern matches ``host``."""
    raise NotImplementedError
