"""The gateway adapter: our whole sending gateway, in process, on a manual clock.

Theory of operation
-------------------
Where :mod:`harness.adapters.inprocess` drives the :class:`~engine.delivery.agent.Engine`
alone, this adapter runs the :class:`~engine.gateway.gateway.Gateway` around it: the durable
queue and its scheduler (bounce profiles, ``Delayed:``/``Bounced:`` lines, DSNs), the
policy refresh and the TLS reporter (RFC 8460). It is wired to the world exactly as
the in-process adapter wires the engine (:mod:`harness.adapters.wiring`: the world's
resolver and root, a loopback-only dialer over the live endpoint map, short
timeouts), without the SMTP listener: messages go straight into the queue.

Time is a :class:`~engine.core.clock.ManualClock`, and the gateway only acts in
rounds, walked by the gateway itself (the same loop its control socket runs for the
``sts-engine`` process adapter):

* ``send`` enqueues the message and runs rounds at the current time until nothing
  more is due then (:meth:`~engine.gateway.gateway.Gateway.run_due`: the message's attempt,
  then the DSNs and report mail it caused); the records are the queue's verdict per
  recipient (``deferred`` while queued), with the MX, TLS and verification of the
  engine's attempt (:attr:`~engine.gateway.gateway.Gateway.attempts`);
* ``advance`` walks the clock through every due time up to the target (retries at
  their scheduled times, reports after the UTC day plus :data:`REPORT_DELAY`, POST
  retries), then runs one round at the target, which also refreshes policies
  (:meth:`~engine.gateway.gateway.Gateway.advance`);
* ``restart`` closes the gateway and opens a new one on the same queue, policy cache
  and report state files (a message deferred before is retried after).

DKIM (RFC 8460 §3, RPT-10): report mail is signed by the reporting domain
(:data:`REPORT_DKIM_DOMAIN`, the ``contact-info`` domain) with an RSA 2048 key made
per run (or given to the constructor). At ``start`` the public key is published in
the world as a ``[[records]]`` TXT record at ``<selector>._domainkey.<domain>`` with
``s=tlsrpt`` (AMB-23), so a ``mail = { dkim = "pass" }`` expectation can verify it.

``final`` (APPLY-6): a send with ``final=True`` makes its attempt the last one the
recipients' bounce profile allows, by marking the retries as used up in the queue
file, so a failure bounces with ``5.4.7 Delivery expired (message too old)`` as it
does at the natural expiry. Nothing else in the queue is touched.
"""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from engine.config import EngineConfig
from engine.core.clock import ManualClock
from engine.gateway.gateway import Gateway, GatewaySettings
from engine.gateway.queue import RcptState
from engine.io.dialer import Dialer
from engine.io.smtp import SmtpTimeouts
from engine.tlsrpt.reporter import ReportSettings
from harness.adapters.base import AdapterError
from harness.adapters.wiring import (
    SMTP_TIMEOUT,
    LiveEndpoints,
    StampingSink,
    config_for,
    world_roots,
)
from harness.scenario.model import Capability
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.dns.records import TXT
from harness.world.spec.model import RecordSpec
from harness.world.world import World

__all__ = [
    "REPORT_CONTACT",
    "REPORT_DELAY",
    "REPORT_DKIM_DOMAIN",
    "REPORT_DKIM_SELECTOR",
    "REPORT_ORGANIZATION",
    "GatewayEngine",
    "dkim_key_record",
    "new_dkim_key",
]

#: Seconds after the end of a UTC day before its report goes out (no jitter here).
REPORT_DELAY = 600.0
REPORT_ORGANIZATION = "mta-sts-harness"
#: The reports' ``contact-info`` and mail sender (TLS-Report-Submitter: sender.example).
REPORT_CONTACT = "tlsrpt-noreply@sender.example"
#: The reports' DKIM signing domain (``d=``): the reporting (contact-info) domain.
REPORT_DKIM_DOMAIN = REPORT_CONTACT.rpartition("@")[2]
#: The DKIM selector; the key record is ``<selector>._domainkey.<domain>``.
REPORT_DKIM_SELECTOR = "tlsrpt"
_STATUS = {RcptState.DELIVERED: "delivered", RcptState.BOUNCED: "bounced"}


def new_dkim_key() -> bytes:
    """A fresh RSA 2048 private key, PEM (PKCS#8)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def dkim_key_record(key_pem: bytes, *, selector: str, domain: str) -> RecordSpec:
    """The DKIM key record for ``key_pem``: TXT ``<selector>._domainkey.<domain>`` =
    ``v=DKIM1; k=rsa; s=tlsrpt; p=<base64 SPKI>`` (RFC 6376 §3.6.1; RFC 8460 §3 and
    AMB-23: the service type lists ``tlsrpt``), split into 255-octet strings."""
    spki = (
        load_pem_private_key(key_pem, None)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    text = f"v=DKIM1; k=rsa; s=tlsrpt; p={base64.b64encode(spki).decode('ascii')}".encode()
    chunks = tuple(text[i : i + 255] for i in range(0, len(text), 255))
    return RecordSpec(f"{selector}._domainkey.{domain}", TXT(chunks))


def _settings(dkim_key_pem: bytes | None) -> GatewaySettings:
    report = ReportSettings(
        organization_name=REPORT_ORGANIZATION,
        contact_info=REPORT_CONTACT,
        delay_seconds=REPORT_DELAY,
        jitter_seconds=0.0,
        https_timeout=5.0,
        dkim_selector=REPORT_DKIM_SELECTOR if dkim_key_pem else None,
        dkim_domain=REPORT_DKIM_DOMAIN if dkim_key_pem else None,
        dkim_key_pem=dkim_key_pem,
    )
    return GatewaySettings(listen=False, report=report)


class GatewayEngine:
    """:class:`~harness.adapters.base.EngineUnderTest` for our gateway, in process.

    Args:
        start: the manual clock's start (POSIX seconds; default 2026-01-01T00:00Z).
        dkim_key_pem: the RSA private key (PEM) report mail is DKIM-signed with;
            default: a new RSA 2048 key, made at ``start``.
    """

    capabilities = frozenset(Capability)

    def __init__(self, start: float | None = None, *, dkim_key_pem: bytes | None = None) -> None:
        self.clock = ManualClock() if start is None else ManualClock(start)
        self.dkim_key_pem = dkim_key_pem
        self._world: World | None = None
        self._config: EngineConfig | None = None
        self._sink: StampingSink | None = None
        self._gateway: Gateway | None = None

    def now(self) -> float:
        """The manual clock."""
        return self.clock.now()

    async def start(self, world: World, sender: Any, workdir: Path) -> None:
        """Build the gateway against ``world``; its files live in ``workdir``."""
        try:
            config = config_for(sender, world)
        except Exception as exc:
            raise AdapterError(f"cannot configure the gateway: {exc}") from exc
        self._config = replace(config, queue=replace(config.queue, path=workdir / "queue.sqlite"))
        self._world = world
        self._sink = StampingSink(world)
        if self.dkim_key_pem is None:
            self.dkim_key_pem = new_dkim_key()
        # RFC 8460 §3 / RPT-10: the reporting domain publishes the signing key (s=tlsrpt).
        await world.add_records(
            dkim_key_record(
                self.dkim_key_pem, selector=REPORT_DKIM_SELECTOR, domain=REPORT_DKIM_DOMAIN
            )
        )
        await self._open()

    async def _open(self) -> None:
        assert self._world is not None and self._config is not None and self._sink is not None
        gateway = Gateway(
            self._config,
            clock=self.clock,
            sink=self._sink,
            settings=_settings(self.dkim_key_pem),
            dialer=Dialer(LiveEndpoints(self._world), loopback_only=True),
            roots=world_roots(self._world),
            smtp_timeouts=SmtpTimeouts.uniform(SMTP_TIMEOUT),
            rng=random.Random(0),
        )
        await gateway.__aenter__()
        self._gateway = gateway

    def _running(self) -> Gateway:
        if self._gateway is None:
            raise AdapterError("the gateway is not running")
        return self._gateway

    def _make_final(self, mid: int) -> None:
        gateway, config = self._running(), self._config
        assert config is not None
        msg = gateway.queue.message(mid)
        assert msg is not None
        # Retries used up: the attempt the scheduler makes now is the last (APPLY-6).
        with sqlite3.connect(config.queue.path) as db:
            db.executemany(
                "UPDATE recipient SET attempts = ? WHERE mid = ? AND rid = ?",
                [
                    (config.bounce_profile_for(r.domain).max_retries, mid, r.rid)
                    for r in msg.recipients
                ],
            )
        db.close()

    async def send(
        self, mail_from: str, rcpts: Sequence[str], data: bytes, *, final: bool = False
    ) -> Sequence[DeliveryRecord]:
        """Enqueue one message and run what is due now; the queue's verdict per recipient."""
        gateway = self._running()
        mid = gateway.enqueue(mail_from, list(rcpts), data)
        if final:
            self._make_final(mid)
        await gateway.run_due()
        msg = gateway.queue.message(mid)
        if msg is None:
            raise AdapterError(f"message MID {mid} vanished from the queue")
        # The queue keeps the verdict; the gateway remembers each recipient's last
        # attempt (MX, TLS, verification), per RID: a message is attempted per domain.
        tried = gateway.attempts.get(mid, {})
        out = []
        for row in msg.recipients:
            status = _STATUS.get(row.state, "deferred")
            r = tried.get(row.rid)
            if r is None:
                out.append(DeliveryRecord(mid, row.rcpt, status, reason=row.last_error or ""))
            else:
                rec = DeliveryRecord(mid, r.rcpt, status, r.mx, r.tls, r.verified, r.reason)
                out.append(replace(rec, result_type=r.result_type))
        return out

    async def advance(self, seconds: float) -> None:
        """Move the clock, running every round that falls due on the way and one at the end."""
        await self._running().advance(seconds)

    async def restart(self) -> None:
        """A new gateway on the same queue, policy cache and report state."""
        await self._close()
        await self._open()

    def events(self) -> Sequence[EventRecord]:
        """Every event so far."""
        return self._sink.events if self._sink else []

    async def _close(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            await gateway.__aexit__(None, None, None)

    async def stop(self) -> None:
        """Close the gateway and its files."""
        await self._close()
