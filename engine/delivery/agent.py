"""The delivery agent: one message in, the per-recipient report out.

:class:`Engine` wires the adapters (DNS, HTTPS fetch, SMTP dialer, policy
store) to the configuration and the clock, and :meth:`Engine.deliver` makes
one delivery attempt for every recipient of one message, domain by domain.
The durable queue, retries and bounces of the gateway build on it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import random
import re
import ssl
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

from engine.config import EngineConfig
from engine.core.cache import CachedPolicy, MemoryPolicyStore, PolicyStore, refresh_due
from engine.core.clock import Clock
from engine.core.events import EventSink, LogEvent
from engine.core.mx import normalize_host
from engine.core.pkix import load_certificate
from engine.delivery.attempt import RecipientResult
from engine.delivery.mtasts import PolicyShare, refresh_policy
from engine.delivery.services import Message, Services
from engine.delivery.session import Job
from engine.delivery.walk import deliver_domain
from engine.io.dialer import Dialer
from engine.io.dns import DnsResolver, ResolverAddress
from engine.io.fetch import PolicyFetcher
from engine.io.https import pkix_judge
from engine.io.smtp import SmtpTimeouts

__all__ = ["DeliveryReport", "Engine", "Outgoing", "SystemClock", "load_roots", "outcome_fields"]


class SystemClock:
    """The wall clock (production)."""

    def now(self) -> float:
        """POSIX seconds."""
        return time.time()


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_NON_POSITIVE_SERIAL = r"Parsed a serial number which wasn't positive"


def load_roots(
    ca_file: str | Path | None, *, on_skip: Callable[[str], None] | None = None
) -> list[bytes]:
    """Trusted roots as DER: from ``ca_file`` (PEM), else the system's default bundle.

    Certificates are read one by one, and one that cryptography cannot read is left
    out (``on_skip`` gets a line naming it). Debian's bundle holds roots whose serial
    number is 0 (Go Daddy, Starfield, SECOM ...), which RFC 5280 §4.1.2.2 forbids and
    cryptography reads with a ``CryptographyDeprecationWarning``. They are real roots,
    so they are kept, and that one warning is silenced here, where the bundle is read:
    :func:`engine.core.pkix.load_certificate` remembers what it parsed, so the
    verification later does not parse them (or warn) again. Other warnings pass.
    """
    if ca_file is None:
        paths = ssl.get_default_verify_paths()
        ca_file = paths.cafile or paths.openssl_cafile
    if not ca_file or not Path(ca_file).exists():
        return []
    roots: list[bytes] = []
    for n, block in enumerate(_PEM_CERTIFICATE.findall(Path(ca_file).read_bytes()), 1):
        try:
            der = ssl.PEM_cert_to_DER_cert(block.decode("ascii"))
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", _NON_POSITIVE_SERIAL, CryptographyDeprecationWarning
                )
                load_certificate(der)
        except ValueError as exc:
            if on_skip is not None:
                why = str(exc).split(":", 1)[0]  # cryptography's text goes on for a while
                on_skip(f"certificate {n} of {ca_file} cannot be read ({why}); left out")
            continue
        roots.append(der)
    return roots


def _stable_fraction(*parts: object) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to attempt: its MID, envelope, bytes and recipient indexes.

    Attributes:
        final: this attempt is the last before the message would bounce (APPLY-6).
    """

    mid: int
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    rids: tuple[int, ...]
    final: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The outcome of one attempt for every recipient of one message."""

    mid: int
    recipients: tuple[RecipientResult, ...]

    @property
    def status(self) -> str:
        """``delivered`` if all were, ``bounced`` if any bounced and none is pending,
        else ``deferred``."""
        states = {r.status for r in self.recipients}
        if states == {"delivered"}:
            return "delivered"
        if "deferred" in states:
            return "deferred"
        return "bounced"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready report (per recipient: outcome, MX, TLS, verification, reason)."""
        return {
            "mid": self.mid,
            "status": self.status,
            "recipients": [
                {
                    "rid": r.rid,
                    "rcpt": r.rcpt,
                    "outcome": r.status,
                    "mx": r.mx,
                    "address": r.address,
                    "tls": r.tls,
                    "verification": r.verified,
                    "reason": r.reason or None,
                    "result_type": r.result_type,
                    "reply": r.reply,
                }
                for r in self.recipients
            ],
        }


class Engine:
    """The sending engine.

    Args:
        config: the engine configuration.
        clock: the engine clock (the harness passes a manual one).
        sink: where events go.
        store: the policy cache (default: in memory).
        dialer: where connections go (the harness passes its endpoint map).
        roots: trusted CA certificates (DER); default from ``config.tls.ca_file``.
        smtp_timeouts: per-stage SMTP timeouts.
        rng: randomness for MX shuffling.
        local_hostname: the EHLO name.
        log_outcomes: emit the per-attempt ``Delayed:``/``Bounced:``/``Message finished``
            lines; a gateway with a real queue writes its own and turns this off.
        dcid_source: where DCIDs come from (the gateway's persistent counter);
            default an in-process count from 1.
        on_report: called with every attempt's :class:`DeliveryReport` (the gateway
            remembers each recipient's last attempt: MX, TLS, verification).
        share: the policy cache other gateways share (docs/cluster.md); None alone.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Clock | None = None,
        sink: EventSink,
        store: PolicyStore | None = None,
        dialer: Dialer | None = None,
        roots: list[bytes] | None = None,
        smtp_timeouts: SmtpTimeouts | None = None,
        rng: random.Random | None = None,
        local_hostname: str = "sts-engine.localdomain",
        log_outcomes: bool = True,
        dcid_source: Callable[[], int] | None = None,
        on_report: Callable[[DeliveryReport], None] | None = None,
        share: PolicyShare | None = None,
    ) -> None:
        self.config = config
        self._on_report = on_report
        self.clock: Clock = clock or SystemClock()
        self.sink = sink
        for warning in config.warnings:
            sink.emit(LogEvent("config.warning", {"detail": warning}, "warning", self.clock.now()))
        if roots is None:
            roots = load_roots(
                config.tls.ca_file,
                on_skip=lambda detail: sink.emit(
                    LogEvent("tls.root.skipped", {"detail": detail}, "debug", self.clock.now())
                ),
            )
        # DANE-1 / RFC 7672 §2.1.1: the AD bit is believed only from a trusted resolver:
        # by default one on loopback; [dns] trust_ad = true/false overrides for all.
        trust_ad = config.dns.trust_ad
        resolvers = [
            ResolverAddress(
                h, p, ipaddress.ip_address(h).is_loopback if trust_ad is None else trust_ad
            )
            for h, p in config.dns.resolvers
        ] or [ResolverAddress("127.0.0.1", 53, trust_ad is not False)]
        self.resolver = DnsResolver(
            resolvers,
            timeout=config.dns.timeout,
            retransmit=config.dns.retransmit,
            sink=sink,
            clock=self.clock,
        )
        dialer = dialer or Dialer()
        proxy = config.policy_fetch.proxy
        self.fetcher = PolicyFetcher(
            self.resolver,
            dialer,
            pkix_judge(roots),
            self.clock,
            timeout=config.policy_fetch.timeout,
            max_body=config.policy_fetch.max_body,
            proxy=f"{proxy[0]}:{proxy[1]}" if proxy else None,
            sink=sink,
        )
        self.services = Services(
            config=config,
            clock=self.clock,
            sink=sink,
            resolver=self.resolver,
            fetcher=self.fetcher,
            store=store or MemoryPolicyStore(),
            dialer=dialer,
            roots=roots,
            smtp_timeouts=smtp_timeouts or SmtpTimeouts(),
            local_hostname=local_hostname,
            rng=rng or random.Random(),
            share=share,
        )
        if dcid_source is not None:
            self.services.dcids = iter(dcid_source, None)
        self._log_outcomes_enabled = log_outcomes
        self._mids = itertools.count(1)

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections and sockets."""
        await self.fetcher.aclose()
        await self.resolver.aclose()

    async def refresh_policies(self, now: float | None = None) -> int:
        """Proactively refresh cached MTA-STS policies that are due (CACHE-7).

        RFC 8461 §10.2 / AMB-15: recently used policies are fetched again over HTTPS
        before they expire, whatever the TXT record says; a failed refresh keeps the
        cached policy and warns (CACHE-8). The jitter is a stable fraction of the
        domain and fetch time, so runs are reproducible.

        Returns:
            How many refreshes were attempted.
        """
        now = self.clock.now() if now is None else now
        store, share = self.services.store, self.services.share
        done = 0
        for entry in store.all():
            if not self._refresh_is_due(entry, now):
                continue
            if share is not None:
                # docs/cluster.md: a policy is refreshed once for all the gateways.
                claimed = await self._claim_refresh(share, entry, now)
                if claimed is None:
                    continue  # another gateway refreshed it (or is failing to)
                entry = claimed
            await refresh_policy(
                entry,
                resolver=self.resolver,
                fetcher=self.fetcher,
                store=store,
                clock=self.clock,
                sink=self.sink,
                share=share,
            )
            done += 1
        return done

    def _refresh_is_due(self, entry: CachedPolicy, now: float) -> bool:
        store = self.services.store
        due = refresh_due(
            entry,
            now,
            last_used=store.last_used(entry.domain),
            rng_value=_stable_fraction(entry.domain, entry.fetched_at),
            last_failure=store.get_failure(entry.domain),
        )
        return due is not None and due <= now

    async def _claim_refresh(
        self, share: PolicyShare, entry: CachedPolicy, now: float
    ) -> CachedPolicy | None:
        """The entry to refresh here, or None when the shared cache says it is not due."""
        store, domain = self.services.store, entry.domain
        if await share.pull(domain, store):
            fresh = store.get(domain)
            if fresh is None or not self._refresh_is_due(fresh, now):
                return None
            entry = fresh
        if await share.lease_or_wait(domain, entry.txt_id, store):
            fresh = store.get(domain)
            if fresh is None or not self._refresh_is_due(fresh, now):
                return None
            entry = fresh
        return entry

    def new_mid(self) -> int:
        """The next message id (in-process numbering)."""
        return next(self._mids)

    async def deliver(
        self,
        mail_from: str,
        rcpts: list[str],
        data: bytes,
        *,
        mid: int | None = None,
        rids: list[int] | None = None,
        final: bool = False,
        report_mail: bool = False,
    ) -> DeliveryReport:
        """One delivery attempt for every recipient of one message.

        Args:
            mail_from: the envelope sender.
            rcpts: the envelope recipients.
            data: the message bytes.
            mid: the message id (default: the next in-process one).
            rids: recipient indexes (default 0..n-1).
            final: the last attempt before bounce (APPLY-6).
            report_mail: this is a TLS report (RFC 8460 §3, RPT-9): delivered despite
                MTA-STS or DANE failures, with opportunistic TLS.
        """
        outgoing = Outgoing(
            self.new_mid() if mid is None else mid,
            mail_from,
            tuple(rcpts),
            data,
            tuple(range(len(rcpts))) if rids is None else tuple(rids),
            final,
        )
        (report,) = await self.deliver_many([outgoing], report_mail=report_mail)
        return report

    async def deliver_many(
        self, messages: Sequence[Outgoing], *, report_mail: bool = False
    ) -> list[DeliveryReport]:
        """One delivery attempt for each of several messages, sharing connections.

        Recipients are grouped by destination domain; each domain's messages share one
        policy discovery, one MX walk and one SMTP connection per address tried (the
        gateway hands at most ``max_messages_per_connection`` messages per call).

        Args:
            messages: the messages to attempt.
            report_mail: these are TLS reports (RFC 8460 §3, RPT-9).

        Returns:
            One report per message, in order.
        """
        by_domain: dict[str, list[Job]] = defaultdict(list)
        final: dict[str, bool] = defaultdict(bool)
        bodies: list[Message] = []
        for out in messages:
            # RFC 5321 §4.5.5: the null reverse-path, however the caller spelled it.
            mail_from = "" if out.mail_from in ("<>", "") else out.mail_from
            message = Message(out.mid, mail_from, out.rcpts, out.data)
            bodies.append(message)
            grouped: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for rid, rcpt in zip(out.rids, out.rcpts, strict=True):
                grouped[normalize_host(rcpt.rpartition("@")[2])].append((rid, rcpt))
            for domain, rcpts in grouped.items():
                by_domain[domain].append((message, rcpts))
                final[domain] |= out.final
        results: dict[int, list[RecipientResult]] = defaultdict(list)
        for domain, jobs in by_domain.items():
            per_job = await deliver_domain(
                self.services, jobs, domain, final=final[domain], report_mail=report_mail
            )
            for (message, _), outcome in zip(jobs, per_job, strict=True):
                results[message.mid] += outcome
        reports = []
        for message in bodies:
            ordered = sorted(results[message.mid], key=lambda r: r.rid)
            report = DeliveryReport(message.mid, tuple(ordered))
            if self._log_outcomes_enabled:
                self._log_outcomes(message, report)
            if self._on_report is not None:
                self._on_report(report)
            reports.append(report)
        return reports

    def _log_outcomes(self, message: Message, report: DeliveryReport) -> None:
        now = self.clock.now()
        for r in report.recipients:
            if r.status == "delivered":
                continue
            code = "delivery.delayed" if r.status == "deferred" else "delivery.bounced"
            fields = outcome_fields(r.status, r.reply, r.reason)
            fields |= {
                "dcid": r.dcid,
                "mid": message.mid,
                "mail_from": message.mail_from,
                "rcpt": r.rcpt,
                "rid": r.rid,
                "result_type": r.result_type,
            }
            self.sink.emit(LogEvent(code, fields, "info", now))
        if all(r.status != "deferred" for r in report.recipients):
            self.sink.emit(LogEvent("message.finished", {"mid": message.mid}, "info", now))


_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*(.*)$")


def outcome_fields(status: str, reply: str | None, reason: str) -> dict[str, object]:
    """The ``Delayed:``/``Bounced:`` line fields for one recipient (docs/gateway-behaviour.md §5.5).

    A remote reply gives its own code and enhanced status code (``450 4.2.0 Mailbox
    busy`` -> ``4.2.0 - Mailbox busy ('450', ['4.2.0 Mailbox busy'])``); a failure
    without a reply (TLS, policy, DNS) is ``4.0.0``/``5.0.0`` with code ``'000'``,
    unless the engine's own reason starts with its enhanced code (``5.6.3 8-bit
    message, ...``, :mod:`engine.core.transfer`).
    """
    default = "4.0.0" if status == "deferred" else "5.0.0"
    if not (reply and reply[:3].isdigit()) and (own := _ENHANCED.match(reason)):
        return {"enhanced": own.group(1), "reason": own.group(2), "code": "000", "reply_lines": []}
    if reply and reply[:3].isdigit():
        text = reply[4:].strip()
        match = _ENHANCED.match(text)
        enhanced, rest = (match.group(1), match.group(2)) if match else (default, text)
        return {
            "enhanced": enhanced,
            "reason": rest or reason,
            "code": reply[:3],
            "reply_lines": [text] if text else [],
        }
    return {"enhanced": default, "reason": reason, "code": "000", "reply_lines": []}
