"""Log events: what the engine did and why, as data.

Strategy: every decision point emits one :class:`LogEvent` with a stable
``code`` and a flat mapping of fields. Renderers (``engine/logs.py``) turn
events into the appliance's ``mail_logs`` lines or JSON lines; the harness
asserts on events by code and fields. Codes for failures reuse the RFC 8460
§4.3 result types (:class:`ResultType`) in the ``result_type`` field, so every
failure carries exactly one registered reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

__all__ = [
    "EventSink",
    "ListSink",
    "LogEvent",
    "ResultType",
    "wants_debug",
]


class ResultType(StrEnum):
    """RFC 8460 §4.3 result types (the IANA registry names, exactly)."""

    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One thing that happened.

    Attributes:
        code: stable dotted identifier, e.g. ``"sts.txt.found"``.
        fields: event data; values are JSON-ready (str, int, float, bool, None, lists).
        level: ``"info"``, ``"debug"`` or ``"warning"``.
        at: engine clock time (POSIX seconds) when the event happened.
    """

    code: str
    fields: Mapping[str, object] = field(default_factory=dict)
    level: str = "info"
    at: float = 0.0


class EventSink(Protocol):
    """Anything that takes events.

    A sink may also carry ``debug_enabled = False`` to say it drops Debug-level events;
    hot paths then skip building them (:func:`wants_debug`), as ``logging`` callers
    check ``isEnabledFor``. Without the attribute a sink gets everything.
    """

    def emit(self, event: LogEvent) -> None:
        """Record one event."""


def wants_debug(sink: EventSink | None) -> bool:
    """Whether ``sink`` keeps Debug-level events (see :class:`EventSink`)."""
    return sink is not None and bool(getattr(sink, "debug_enabled", True))


class ListSink:
    """An :class:`EventSink` that keeps events in a list (tests, the harness)."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def emit(self, event: LogEvent) -> None:
        """Append ``event``."""
        self.events.append(event)

    def codes(self) -> list[str]:
        """The codes seen, in order."""
        return [e.code for e in self.events]
