"""Where and when TLS reports go (RFC 8460 §3, §4.1).

Theory of operation
-------------------
A Policy Domain's ``_smtp._tls`` record (parsed by :mod:`engine.core.txt`)
lists ``rua`` URIs. :func:`report_destinations` keeps the ``mailto:`` and
``https:`` ones in record order and skips everything else with a reason, one
per entry, never raising: a ``rua`` written without its scheme (a bare
address, as seen in the field) must not stop the valid entries from being
used. :func:`report_send_time` says when a day's report may go: after the UTC
day ends, plus a delay and a jitter the caller drew (the core draws nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from engine.core.tlsrpt import day_bounds, domain_alabels

__all__ = [
    "ReportDestination",
    "ReportDestinations",
    "ReportScheme",
    "SkippedUri",
    "report_destinations",
    "report_due",
    "report_send_time",
]


class ReportScheme(StrEnum):
    """The ``rua`` URI schemes RFC 8460 §3 defines (RPT-7)."""

    MAILTO = "mailto"
    HTTPS = "https"


@dataclass(frozen=True, slots=True)
class ReportDestination:
    """Where to send a report: a scheme and its target (an address or an https URL)."""

    scheme: ReportScheme
    target: str


@dataclass(frozen=True, slots=True)
class SkippedUri:
    """A ``rua`` entry that is not used, and why."""

    uri: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReportDestinations:
    """The usable destinations in record order, and the skipped entries with reasons."""

    targets: tuple[ReportDestination, ...]
    skipped: tuple[SkippedUri, ...] = ()


_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.DOTALL)
_PCT_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
# RFC 5322 dot-atom local part (a quoted local part is not accepted in a rua).
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 3986 authority for https: host (reg-name or [IPv6]) and an optional port.
_HTTPS_RE = re.compile(r"//(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:[0-9]{1,5})?([/?#][\x21-\x7e]*)?")


def _pct_decode(text: str) -> str:
    # RFC 3986 §2.1: percent-encoded octets; RFC 6068 §2: they form UTF-8.
    raw = _PCT_RE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"percent-encoding is not UTF-8: {text!r}") from exc


def _mailto_target(rest: str) -> str:
    # RFC 6068: mailto:addr[?hfields]; header fields (subject, body) are ignored here.
    addr = _pct_decode(rest.split("?", 1)[0])
    if "," in addr:
        raise ValueError("several addresses in one mailto URI")
    local, at, domain = addr.rpartition("@")
    if not at or not _LOCAL_RE.fullmatch(local):
        raise ValueError(f"not an email address: {addr!r}")
    return f"{local}@{domain_alabels(domain, 'mail domain')}"


def _https_target(rest: str) -> str:
    m = _HTTPS_RE.fullmatch(rest)
    if m is None:
        raise ValueError("not an https URL with a host")
    host, port, tail = m.group(1), m.group(2) or "", m.group(3) or ""
    # RFC 3986 §6.2.2.1: the host is case-insensitive; lower it so duplicates compare equal.
    host = host.lower() if host.startswith("[") else domain_alabels(host, "host")
    if port and not 0 < int(port[1:]) < 65536:
        raise ValueError(f"port {port[1:]!r} out of range")
    return f"https://{host}{port}{tail}"


def report_destinations(rua: Sequence[str]) -> ReportDestinations:
    """Turn a record's ``rua`` URIs into report destinations.

    Malformed entries never raise: each is skipped with a reason (a ``rua`` written
    without ``mailto:`` must not stop the others from being used).

    Args:
        rua: the URI strings, in record order (``TlsRptRecord.rua``).

    Returns:
        The ``mailto:`` addresses and ``https:`` URLs in order, duplicates removed, and
        the skipped entries.
    """
    targets: list[ReportDestination] = []
    skipped: list[SkippedUri] = []
    for uri in rua:
        text = uri.strip(" \t")
        m = _SCHEME_RE.fullmatch(text)
        if m is None:
            skipped.append(SkippedUri(uri, "no URI scheme (expected mailto: or https:)"))
            continue
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme not in {s.value for s in ReportScheme}:
            # RFC 8460 §3 / RPT-7: only mailto and https are defined; never plain http.
            skipped.append(SkippedUri(uri, f"scheme {scheme!r} is not mailto or https (RPT-7)"))
            continue
        try:
            if scheme == ReportScheme.MAILTO:
                dest = ReportDestination(ReportScheme.MAILTO, _mailto_target(rest))
            else:
                dest = ReportDestination(ReportScheme.HTTPS, _https_target(rest))
        except ValueError as exc:
            skipped.append(SkippedUri(uri, str(exc)))
            continue
        if dest in targets:
            skipped.append(SkippedUri(uri, "duplicate destination"))
            continue
        targets.append(dest)
    return ReportDestinations(tuple(targets), tuple(skipped))


def report_send_time(day: date, *, delay_seconds: float, jitter_value: float) -> float:
    """When the report for ``day`` may be sent.

    RFC 8460 §4.1 / RPT-17: after the UTC day ends, plus a delay (the RFC suggests hours)
    and a random jitter so that senders do not all report at midnight. The jitter is a
    number the caller drew; the core draws nothing.

    Args:
        day: the UTC day reported on.
        delay_seconds: the fixed delay after the day's end (>= 0).
        jitter_value: the jitter, in seconds (>= 0).

    Returns:
        POSIX seconds.

    Raises:
        ValueError: a negative delay or jitter.
    """
    if delay_seconds < 0 or jitter_value < 0:
        raise ValueError(f"delay {delay_seconds!r} and jitter {jitter_value!r} must be >= 0")
    return float(day_bounds(day)[1] + 1) + delay_seconds + jitter_value


def report_due(day: date, now: float, *, delay_seconds: float, jitter_value: float) -> bool:
    """Whether the report for ``day`` may be sent at ``now`` (see :func:`report_send_time`)."""
    return now >= report_send_time(day, delay_seconds=delay_seconds, jitter_value=jitter_value)
