"""What one step observed: engine events and log lines, and the world's side of it.

Theory of operation
-------------------
The world's logs only grow during a run. A :class:`WorldWatcher` remembers what it
has already handed out (DNS queries by sequence number, SMTP sessions by host and
session id, other records by identity) and each :meth:`WorldWatcher.take` returns
only what is new, as plain frozen records: a step's slice of the world. Together with
the engine's new events and log lines they make a :class:`StepObservation`.

Everything here is plain data (strings, numbers, tuples, dicts), so a result can be
pickled to a parent process and written as JSON without special cases. Times: ``at``
is seconds on the world's monotonic clock (the world and the engine's events share
it, so a sequence diagram can interleave them); ``clock`` is the engine's (manual)
clock, the time log lines show.
"""

from __future__ import annotations

import email
import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message as MimeMessage
from typing import Any

from harness.dkim_check import TxtLookup, dkim_verdict
from harness.world.dns.answer import LoggedQuery
from harness.world.mta.records import MtaSession
from harness.world.timeline import WorldExchange
from harness.world.web.policy_host import PolicyRequest
from harness.world.web.report_sink import ReceivedReport
from harness.world.world import World

__all__ = [
    "DeliveryRecord",
    "DnsRecord",
    "DsnRecord",
    "EventRecord",
    "FetchRecord",
    "ReportRecord",
    "SessionRecord",
    "StepObservation",
    "TimelineEntry",
    "WorldSlice",
    "WorldWatcher",
]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One engine event, with its rendered mail_logs line (debug level)."""

    code: str
    fields: Mapping[str, Any]
    level: str
    clock: float
    at: float
    line: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One recipient's outcome, as the engine reported it."""

    mid: int
    rcpt: str
    status: str
    mx: str | None = None
    tls: str | None = None
    verified: str = "clear"
    reason: str = ""
    result_type: str | None = None


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One DNS query the fake DNS answered."""

    at: float
    name: str
    type: str
    rcode: str | None
    ad: bool
    answers: tuple[str, ...]
    behaviour: str | None


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """One request that reached a policy host."""

    at: float
    host: str
    sni: str | None
    method: str
    path: str
    answer: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One SMTP session at a receiving MTA."""

    at: float
    end: float | None
    mx: str
    starttls_offered: bool
    starttls_attempted: bool
    tls_version: str | None
    cipher: str | None
    sni: str | None
    tls_error: str | None
    transactions: int
    delivered: int
    in_clear: bool
    commands: tuple[str, ...]
    ended: str
    faults: tuple[str, ...] = ()  # what the MX played: "mail: reset", "handshake: ..."


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """One TLS report the world received: POSTed to the report sink, or mailed to an MTA.

    Attributes:
        at: when it arrived (world clock).
        via: ``https`` or ``mailto``.
        to: the POST URL (``https://<sink><path>``), or the envelope recipient.
        content_type: the POST's Content-Type, or the mailed attachment's.
        report: the decoded JSON report, or None.
        error: why it could not be decoded, or None.
        status: the HTTP status answered (None for mail).
        mail: for mail: ``content-type``, ``report-type``, ``parts``, ``filename``,
            ``subject`` and the ``TLS-Report-*`` headers, as found, and ``dkim``: the
            DKIM verdict (``pass``, ``none`` or ``fail: <why>``;
            :func:`~harness.dkim_check.dkim_verdict`, RPT-10).
    """

    at: float
    via: str
    to: str
    content_type: str | None
    report: Mapping[str, Any] | None
    error: str | None = None
    status: int | None = None
    mail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DsnRecord:
    """One delivery status notification (RFC 3464) an MTA accepted.

    Attributes:
        at: when its session started (world clock).
        mx: the MTA that accepted it.
        mail_from: its envelope sender (``""`` for the null sender).
        to: its envelope recipients.
        blocks: per-recipient blocks: ``action``, ``status``, ``final-recipient``.
    """

    at: float
    mx: str
    mail_from: str
    to: tuple[str, ...]
    blocks: tuple[Mapping[str, str], ...]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One exchange with the world, for a timeline."""

    at: float
    end: float | None
    kind: str
    name: str
    summary: str


@dataclass(frozen=True, slots=True)
class WorldSlice:
    """What the world saw between two :meth:`WorldWatcher.take` calls."""

    dns: tuple[DnsRecord, ...] = ()
    fetches: tuple[FetchRecord, ...] = ()
    sessions: tuple[SessionRecord, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    reports: tuple[ReportRecord, ...] = ()
    dsns: tuple[DsnRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class StepObservation:
    """Everything one step (or the set-up, index -1) observed.

    Attributes:
        index: the step's index; -1 for what happened before the first step.
        label: the step's label.
        events: new engine events (each with its log line).
        lines: new mail_logs lines (debug level), in order.
        deliveries: per-recipient outcomes of a ``send`` step.
        world: the world's slice.
        clock: the engine clock when the step started.
        seconds: wall time the step took.
        error: an exception raised by the step itself, as text.
    """

    index: int
    label: str
    events: tuple[EventRecord, ...] = ()
    lines: tuple[str, ...] = ()
    deliveries: tuple[DeliveryRecord, ...] = ()
    world: WorldSlice = field(default_factory=WorldSlice)
    clock: float = 0.0
    seconds: float = 0.0
    error: str | None = None


def _dns(at: float, q: LoggedQuery) -> DnsRecord:
    behaviour = str(q.behaviour) if q.behaviour else None
    return DnsRecord(at, q.qname, q.qtype, q.rcode, q.ad, tuple(q.answers), behaviour)


def _fetch(at: float, r: PolicyRequest) -> FetchRecord:
    answer = "404" if r.served is None else f"{r.served.behaviour} {r.served.status}"
    return FetchRecord(at, r.host or r.sni or "", r.sni, r.method, r.path, answer)


def _session(at: float, end: float | None, s: MtaSession) -> SessionRecord:
    return SessionRecord(
        at=at,
        end=end,
        mx=s.mx_host,
        starttls_offered=s.starttls_offered,
        starttls_attempted=s.starttls_attempted,
        tls_version=s.tls_version,
        cipher=s.cipher,
        sni=s.sni,
        tls_error=s.tls_error,
        transactions=len(s.transactions),
        delivered=sum(t.delivered for t in s.transactions),
        in_clear=s.in_clear,
        commands=tuple(s.commands),
        ended=str(s.ended),
        faults=tuple(s.faults),
    )


def _posted(at: float, r: ReceivedReport) -> ReportRecord:
    url = f"https://{r.host or ''}{r.path}"
    return ReportRecord(at, "https", url, r.content_type, r.report, r.error, r.status)


def _unfold(value: object) -> str:
    # RFC 5322 §2.2.3: unfolding removes each CRLF that is followed by white space.
    return re.sub(r"\r?\n(?=[ \t])", "", str(value))


def _report_mail(
    at: float, rcpt: str, msg: MimeMessage, dkim_result: str | None = None
) -> ReportRecord:
    # RFC 8460 §5.3 (RPT-11): multipart/report; report-type="tlsrpt", a human-readable
    # part and the report as application/tlsrpt+gzip (or +json).
    parts = [p for p in msg.walk() if not p.is_multipart()]
    facts: dict[str, Any] = {
        "content-type": msg.get_content_type(),
        "report-type": msg.get_param("report-type") or "",
        "parts": [p.get_content_type() for p in parts],
        "subject": _unfold(msg.get("Subject", "")),
    }
    for name in ("TLS-Report-Domain", "TLS-Report-Submitter", "From", "To"):
        if msg.get(name) is not None:
            facts[name] = _unfold(msg[name])
    if dkim_result is not None:
        facts["dkim"] = dkim_result
    report: dict[str, Any] | None = None
    error: str | None = "no application/tlsrpt part"
    ctype: str | None = None
    for p in parts:
        if p.get_content_type().startswith("application/tlsrpt"):
            ctype, facts["filename"] = p.get_content_type(), p.get_filename() or ""
            body = p.get_payload(decode=True)
            try:
                raw = bytes(body) if isinstance(body, bytes) else b""
                if ctype.endswith("+gzip"):
                    raw = gzip.decompress(raw)
                report, error = json.loads(raw), None
            except (OSError, EOFError, ValueError) as exc:
                error = f"attachment not decodable: {exc}"
            break
    return ReportRecord(at, "mailto", rcpt, ctype, report, error, None, facts)


def _dsn_blocks(msg: MimeMessage) -> tuple[dict[str, str], ...]:
    blocks: list[dict[str, str]] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        # email parses message/delivery-status as a list of header blocks; the first
        # is the per-message block (RFC 3464 §2.2), the rest per recipient (§2.3).
        sub = part.get_payload()
        for block in sub[1:] if isinstance(sub, list) else ():
            if not isinstance(block, MimeMessage):
                continue
            fields = {k.lower(): str(v).strip() for k, v in block.items()}
            final = fields.get("final-recipient", "")
            fields["final-recipient"] = final.split(";", 1)[-1].strip().lower()
            blocks.append(fields)
    return tuple(blocks)


def _mails(
    at: float, s: MtaSession, txt: TxtLookup | None = None
) -> tuple[list[ReportRecord], list[DsnRecord]]:
    reports, dsns = [], []
    for t in s.transactions:
        if not t.delivered or t.message is None:
            continue
        msg = email.message_from_bytes(t.message)
        rcpts = [r.address.lower() for r in t.rcpts if r.accepted]
        kind = (msg.get_content_type(), str(msg.get_param("report-type") or "").lower())
        if msg.get("TLS-Report-Domain") is not None:
            # RFC 8460 §3 / RPT-10: judged on arrival, against the keys served then.
            verdict = None if txt is None else dkim_verdict(t.message, txt)
            reports += [_report_mail(at, rcpt, msg, verdict) for rcpt in rcpts]
        elif kind == ("multipart/report", "delivery-status"):
            dsns.append(DsnRecord(at, s.mx_host, t.mail_from, tuple(rcpts), _dsn_blocks(msg)))
    return reports, dsns


class WorldWatcher:
    """Hands out, at each :meth:`take`, what a world observed since the last one."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, object]] = set()

    def _new(self, key: tuple[str, object]) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def take(self, world: World) -> WorldSlice:
        """The DNS queries, fetches, SMTP sessions and exchanges not handed out yet."""
        timeline: list[WorldExchange] = world.timeline()
        dns, fetches, sessions, entries = [], [], [], []
        reports: list[ReportRecord] = []
        dsns: list[DsnRecord] = []
        for x in timeline:
            rec = x.record
            if isinstance(rec, LoggedQuery):
                key: tuple[str, object] = ("dns", rec.seq)
            elif isinstance(rec, MtaSession):
                key = ("smtp", (rec.mx_host, rec.session_id))
            else:
                key = (str(x.kind), id(rec))
            if not self._new(key):
                continue
            entries.append(TimelineEntry(x.at, x.end, str(x.kind), x.name, x.summary))
            if isinstance(rec, LoggedQuery):
                dns.append(_dns(x.at, rec))
            elif isinstance(rec, PolicyRequest):
                fetches.append(_fetch(x.at, rec))
            elif isinstance(rec, MtaSession):
                sessions.append(_session(x.at, x.end, rec))
                mailed, bounced = _mails(x.at, rec, world.txt)
                reports += mailed
                dsns += bounced
            elif isinstance(rec, ReceivedReport):
                reports.append(_posted(x.at, rec))
        return WorldSlice(
            tuple(dns),
            tuple(fetches),
            tuple(sessions),
            tuple(entries),
            tuple(reports),
            tuple(dsns),
        )
