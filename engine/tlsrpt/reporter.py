"""The gateway's TLS reporter (RFC 8460): sessions in, daily reports out.

Theory of operation
-------------------
1. **Collect.** The engine emits one ``tls.session`` event per SMTP session.
   :meth:`TlsReporter.emit` (an EventSink) notes it with the policy in force
   (the cached MTA-STS policy's lines and mx patterns, RFC 8460 §4.5) and
   whether the session carried report mail (the event's ``report_mail``
   field; RFC 8460 §3 / RPT-9: such sessions are never counted).
   :meth:`TlsReporter.run` turns notes into core
   :class:`~engine.core.tlsrpt.SessionResult` values (TLSA strings as the
   event carries them: the RRset the session was judged against), adds them to
   the aggregator, and persists it. A session that applied no policy because
   the fetch failed counts as that failure; a failed refresh of a cached policy
   counts once more, as an ``sts`` failure of its own (RFC 8461 §6, RPT-24;
   :mod:`engine.tlsrpt.sessions`).
2. **Report.** Once a UTC day is over plus a delay and a jitter (RPT-17), for
   each Policy Domain with data: ``_smtp._tls.<domain>`` is looked up (AMB-18:
   ``tlsa`` results live under the TLSA base domain, so that is their Policy
   Domain); no valid record means no report (RPT-27). Malformed ``rua``
   entries are logged and skipped. The gzipped report goes by mail through
   the gateway's own queue (the ``enqueue`` function it is given),
   DKIM-signed when :class:`ReportSettings` name a key (RPT-10,
   :mod:`engine.tlsrpt.dkim`), and by HTTPS POST (RPT-13, RPT-14).
3. **Retry.** Failed POSTs wait in an outbox with doubling waits for up to
   24 hours (RPT-15).

With several gateways sharing state (docs/cluster.md), the counts go to Redis
after every round and one gateway sends each day's report per domain, with the
sum (:mod:`engine.tlsrpt.shared`); the rest above is the same.

State (aggregator, drawn jitters, outbox) lives in one JSON file beside the
queue, replaced atomically after each change. A crash between sending a
report and saving the state can send it twice, never lose it.

The reporter knows nothing of the gateway: it is handed the policy store, the
clock, a sink, a random source, an ``enqueue`` function and the
:class:`ReportNetwork` its lookups and POSTs go through (which the gateway
replaces when a configuration reload builds a new engine).
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from engine.core.cache import PolicyStore
from engine.core.clock import Clock
from engine.core.events import EventSink, LogEvent
from engine.core.tlsrpt import PolicySummary, TlsRptAggregator, utc_day
from engine.core.tlsrpt_delivery import ReportScheme, report_destinations, report_send_time
from engine.core.tlsrpt_report import build_report, gzip_report, report_email
from engine.core.txt import TlsRptRecord, select_tlsrpt_record
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver
from engine.tlsrpt.dkim import sign_report
from engine.tlsrpt.poster import ReportPoster
from engine.tlsrpt.sessions import (
    SessionNote,
    fetch_failure_result,
    note_from_event,
    session_counts_fetch,
    session_results,
)
from engine.tlsrpt.shared import SharedReports

__all__ = ["Enqueue", "ReportNetwork", "ReportSettings", "TlsReporter"]

#: Puts a message into the gateway's queue: ``(mail_from, rcpts, data) -> MID``.
Enqueue = Callable[[str, list[str], bytes], int]


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """TLS reporting settings.

    Attributes:
        organization_name: the report's ``organization-name``.
        contact_info: the report's ``contact-info`` and mail sender (default
            ``tlsrpt-noreply@<hostname>``).
        delay_seconds: wait after the UTC day ends (RPT-17).
        jitter_seconds: the most random extra wait (RPT-17).
        retry_initial: the first wait after a failed POST (doubling).
        retry_window: how long POSTs are retried (RPT-15: 24 h).
        https_timeout: seconds per POST.
        dkim_selector: the DKIM selector reports by mail are signed with (RPT-10).
        dkim_domain: the signing domain (``d=``), normally the ``contact-info`` domain.
        dkim_key_pem: the RSA private key (PEM). Mail is signed only when all three
            DKIM settings are given; its record should carry ``s=tlsrpt`` (AMB-23).
    """

    organization_name: str = "sts-engine"
    contact_info: str | None = None
    delay_seconds: float = 3600.0
    jitter_seconds: float = 3600.0
    retry_initial: float = 300.0
    retry_window: float = 86_400.0
    https_timeout: float = 30.0
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_pem: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReportNetwork:
    """What ``_smtp._tls`` lookups and report POSTs go through: the engine's network.

    Attributes:
        resolver: the engine's resolver.
        dialer: the engine's dialer (the harness's endpoint map, the loopback guard).
        roots: the trusted roots (DER) a collector's certificate is judged against.
    """

    resolver: DnsResolver
    dialer: Dialer
    roots: list[bytes]


class TlsReporter:
    """Collects ``tls.session`` events and sends the daily reports.

    Args:
        state_path: the JSON state file.
        settings: see :class:`ReportSettings`.
        hostname: our name; the default ``contact-info`` is ``tlsrpt-noreply@<hostname>``.
        store: the policy cache (the policy in force for a session, failed fetches).
        clock: the engine clock.
        sink: where the reporter's own events go.
        rng: randomness (the report jitter, RPT-17).
        enqueue: queues report mail (:data:`Enqueue`).
        network: see :class:`ReportNetwork`; :attr:`network` may be replaced later.
        shared: the counts several gateways share (docs/cluster.md), or None.
    """

    def __init__(
        self,
        state_path: Path,
        *,
        settings: ReportSettings,
        hostname: str,
        store: PolicyStore,
        clock: Clock,
        sink: EventSink,
        rng: random.Random,
        enqueue: Enqueue,
        network: ReportNetwork,
        shared: SharedReports | None = None,
    ) -> None:
        self.path = Path(state_path)
        self.settings = settings
        self.store, self.clock, self.sink, self.rng = store, clock, sink, rng
        self.enqueue = enqueue
        #: Where lookups and POSTs go; the gateway replaces it after a reload (the
        #: HTTPS client, once made, keeps the network it was made with).
        self.network = network
        self.shared = shared
        self.contact = settings.contact_info or f"tlsrpt-noreply@{hostname}"
        self._notes: list[SessionNote] = []
        self._poster: ReportPoster | None = None
        self.aggregator = TlsRptAggregator()
        self.jitter: dict[str, float] = {}
        self.outbox: list[dict[str, Any]] = []
        # Failed policy fetches already counted (key -> when it failed), so each counts once.
        self.fetch_seen: dict[str, float] = {}
        if self.path.exists():
            state = json.loads(self.path.read_text(encoding="utf-8"))
            self.aggregator = TlsRptAggregator.from_dict(state["aggregator"])
            self.jitter = {str(k): float(v) for k, v in state["jitter"].items()}
            self.outbox = list(state["outbox"])
            self.fetch_seen = {str(k): float(v) for k, v in state.get("fetch_seen", {}).items()}

    def emit(self, event: LogEvent) -> None:
        """Note a ``tls.session`` event (other events are ignored)."""
        if event.code != "tls.session":
            return
        note = note_from_event(event, self.store)
        if note is not None:
            self._notes.append(note)

    async def aclose(self) -> None:
        """Close the HTTPS client."""
        if self._poster is not None:
            await self._poster.aclose()

    def _emit(self, code: str, level: str = "info", **fields: object) -> None:
        self.sink.emit(LogEvent(code, fields, level, self.clock.now()))

    def _save(self) -> None:
        state = {
            "aggregator": self.aggregator.to_dict(),
            "jitter": self.jitter,
            "outbox": self.outbox,
            "fetch_seen": self.fetch_seen,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.path)

    def _send_time(self, day: date) -> float:
        key = day.isoformat()
        if key not in self.jitter:
            self.jitter[key] = self.rng.random() * self.settings.jitter_seconds
        return report_send_time(
            day, delay_seconds=self.settings.delay_seconds, jitter_value=self.jitter[key]
        )

    def next_due(self) -> float | None:
        """When a report or a POST retry is next due."""
        times = [self._send_time(day) for _, day in self._days()]
        times += [float(o["next"]) for o in self.outbox]
        return min(times) if times else None

    async def run(self, now: float) -> None:
        """Absorb noted sessions, send the reports that are due, retry POSTs."""
        if self._notes:
            notes, self._notes = self._notes, []
            for note in notes:
                self._add_fetch_failure(note)
                for result in session_results(note):
                    self.aggregator.add(result)
            # A failure older than the retry window of its report is never seen again.
            horizon = now - 3 * 86_400.0
            self.fetch_seen = {k: v for k, v in self.fetch_seen.items() if v >= horizon}
            self._save()
        if self.shared is not None and await self.shared.push(self.aggregator, now):
            self._save()
        for domain, day in self._days():
            if utc_day(now) > day and now >= self._send_time(day):
                await self._report(domain, day, now)
        await self._retry_posts(now)

    def _days(self) -> list[tuple[str, date]]:
        """Every (domain, day) with counts here or, with a cluster, in Redis."""
        days = set(self.aggregator.days())
        if self.shared is not None:
            days |= self.shared.days
        return sorted(days)

    async def _take(self, domain: str, day: date) -> list[PolicySummary] | None:
        """The day's counts if this gateway sends its report (always, alone)."""
        if self.shared is None:
            return self.aggregator.pop(domain, day)
        return await self.shared.take(domain, day, self.aggregator)

    def _add_fetch_failure(self, note: SessionNote) -> None:
        failed = note.fetch_failure
        if failed is None:
            return
        key = failed.key(str(note.fields.get("domain", "")))
        if key in self.fetch_seen:
            return
        self.fetch_seen[key] = failed.failed_at
        if session_counts_fetch(note):
            return  # the session itself is this failure (session_results)
        result = fetch_failure_result(note)
        if result is not None:
            self.aggregator.add(result)

    async def _record(self, domain: str) -> TlsRptRecord | None:
        name = f"_smtp._tls.{domain}"
        answer = await self.network.resolver.query(name, "TXT")
        record = select_tlsrpt_record(answer.txt_strings(), source=name)
        return record if isinstance(record, TlsRptRecord) else None

    async def _report(self, domain: str, day: date, now: float) -> None:
        summaries = await self._take(domain, day)
        if not summaries:  # another gateway of the cluster sends it
            self._save()
            return
        record = await self._record(domain)
        self.jitter = {k: v for k, v in self.jitter.items() if k >= day.isoformat()}
        if record is None:  # RPT-27: no (valid) record, no report
            self._emit("tlsrpt.none", "debug", domain=domain, day=day.isoformat())
            self._save()
            return
        dests = report_destinations(record.rua)
        for skipped in dests.skipped:
            self._emit(
                "tlsrpt.rua.skipped",
                "warning",
                domain=domain,
                uri=skipped.uri,
                reason=skipped.reason,
            )
        # RFC 8460 §4.4: report-id identifies one report. Drawn from the OS, not from a
        # hash of domain, day and time (two gateways, or one that lost its state, sending
        # at the same moment repeated it) nor from self.rng (seeded alike in tests).
        uid = secrets.token_hex(8)
        report = build_report(
            domain,
            day,
            summaries,
            organization_name=self.settings.organization_name,
            contact_info=self.contact,
            report_id=f"{day.isoformat()}.{uid}@{domain}",
        )
        mail_to = [d.target for d in dests.targets if d.scheme is ReportScheme.MAILTO]
        if mail_to:
            msg = report_email(
                report,
                sender=self.contact,
                recipients=mail_to,
                now=now,
                unique_id=uid,
                message_id=f"<{uid}.{day.isoformat()}@{self.contact.rpartition('@')[2]}>",
            )
            mid = self.enqueue(self.contact, mail_to, self._signed(msg.as_bytes()))
            self._emit(
                "tlsrpt.sent",
                domain=domain,
                day=day.isoformat(),
                via="mailto",
                to=",".join(mail_to),
                mid=mid,
            )
        body = base64.b64encode(gzip_report(report)).decode("ascii")
        for d in dests.targets:
            if d.scheme is ReportScheme.HTTPS:
                self.outbox.append(
                    {
                        "url": d.target,
                        "body": body,
                        "domain": domain,
                        "day": day.isoformat(),
                        "first": now,
                        "next": now,
                        "tries": 0,
                    }
                )
        self._save()

    def _signed(self, message: bytes) -> bytes:
        """RFC 8460 §3 / RPT-10: the report mail, DKIM-signed when a key is configured."""
        s = self.settings
        if not (s.dkim_selector and s.dkim_domain and s.dkim_key_pem):
            return message
        return sign_report(
            message, selector=s.dkim_selector, domain=s.dkim_domain, key_pem=s.dkim_key_pem
        )

    async def _retry_posts(self, now: float) -> None:
        due = [o for o in self.outbox if float(o["next"]) <= now]
        if not due:
            return
        if self._poster is None:
            net = self.network
            self._poster = ReportPoster(
                net.resolver,
                net.dialer,
                net.roots,
                self.clock,
                timeout=self.settings.https_timeout,
            )
        for o in due:
            ok, detail = await self._poster.post(o["url"], base64.b64decode(o["body"]))
            fields = {"domain": o["domain"], "day": o["day"], "via": "https", "to": o["url"]}
            if ok:
                self.outbox.remove(o)
                self._emit("tlsrpt.sent", **fields, detail=detail)
                continue
            o["tries"] = int(o["tries"]) + 1
            # RFC 8460 §5.5 / RPT-15: retry with exponential backoff for up to 24 hours.
            o["next"] = now + self.settings.retry_initial * 2 ** (o["tries"] - 1)
            if o["next"] > float(o["first"]) + self.settings.retry_window:
                self.outbox.remove(o)
                self._emit("tlsrpt.failed", "warning", **fields, detail=detail)
            else:
                self._emit("tlsrpt.retry", "warning", **fields, detail=detail, at=o["next"])
        self._save()
