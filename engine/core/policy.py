"""MTA-STS policy bodies: parse and render (RFC 8461 §3.2).

STUB: interface fixed; implementation being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.core.mx import MxPattern

__all__ = ["MAX_AGE_CEILING", "Mode", "Policy", "parse_policy", "render_policy"]

MAX_AGE_CEILING = 31_557_600  # RFC 8461 §3.2: max_age up to 31557600 (one year); AMB-1


class Mode(StrEnum):
    """The policy mode (case-sensitive on the wire)."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy.

    Attributes:
        mode: enforce / testing / none.
        max_age: seconds, already clamped to MAX_AGE_CEILING (AMB-1).
        mx: the mx patterns, in body order (cumulative, POL-9).
        version: always ``"STSv1"``.
        extensions: unknown fields kept as (name, value), in body order.
    """

    mode: Mode
    max_age: int
    mx: tuple[MxPattern, ...] = ()
    version: str = "STSv1"
    extensions: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        """RFC 8460 §4.5 ``policy-string``: one string per policy line."""
        raise NotImplementedError


def parse_policy(body: bytes | str, *, source: str | None = None) -> Policy:
    """Parse a policy body; raises PolicyError naming line, field, value and rule."""
    raise NotImplementedError


def render_policy(policy: Policy) -> str:
    """Render ``policy`` as a body that :func:`parse_policy` reads back equal."""
    raise NotImplementedError
