"""One delivery attempt's bookkeeping, and the one boundary that contains faults.

Theory of operation
-------------------
``engine.delivery.walk`` walks the hosts of one destination; this module keeps what
the walk learns (:class:`Attempt`: who is still pending, each recipient's
:class:`RecipientResult`, the last reason) and contains whatever goes wrong.

The walk does its work in *trials*: the domain's own lookups (policy discovery
and MX), each host's lookups (addresses, TLSA, a route host's policy) and each
connection to one of the host's addresses. Every trial runs inside
``async with Trial(...)``, and :meth:`Trial.__aexit__` is the only place in the
delivery path that catches. Whatever the exception's class, on whichever event
loop, at whichever stage, it:

* keeps what the connection had settled: a recipient delivered, or refused by
  a reply, keeps its outcome; every other one stays pending for the next host
  (RFC 1047: a message whose final reply never came counts as not delivered);
* turns the exception into one reason (the stage, and for a fault the adapter
  did not expect its type and message, never a traceback) and exactly one
  line: ``Connection Error`` for a connection, ``MX host ... not used`` for a
  host's lookups; a fault in the domain's own lookups defers every recipient,
  and each ``Delayed:`` line carries the reason;
* closes the connection, with QUIT only when the session ended normally;
  closing never raises (a failure there is one Debug line at most);
* lets ``asyncio.CancelledError``, ``KeyboardInterrupt`` and ``SystemExit``
  through, after dropping the connection.

Never-downgrade is untouched: a fault only ever *ends* the work on one host. It
never reconnects in clear (only a verdict may ask for that, ``RECONNECT_CLEAR``),
and the next host is decided by the same table as the first.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import TracebackType

from engine.core.controls import Check, TlsRequirement
from engine.core.events import ResultType
from engine.core.verdict import Outcome
from engine.delivery.nexthop import NextHop
from engine.delivery.services import Message, Services
from engine.delivery.session import TLS_STAGES, ConnectionResult, Job, RcptOutcome
from engine.io.smtp import SmtpClient, SmtpError

__all__ = ["Attempt", "Plan", "RecipientResult", "Trial", "describe_fault"]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome of one recipient after one attempt.

    Attributes:
        rid: recipient index in the message.
        rcpt: the address.
        status: ``delivered`` | ``deferred`` | ``bounced``.
        mx: the host that took (or last refused) the message.
        address: the address connected to.
        tls: the TLS protocol used, or None for clear text.
        verified: ``dane`` | ``pkix`` | ``none`` (TLS unverified) | ``clear``.
        reason: the one reason that explains a failure.
        result_type: its RFC 8460 result type, if it has one.
        reply: the last SMTP reply concerning this recipient.
        dcid: the connection that decided it (0: none).
    """

    rid: int
    rcpt: str
    status: str
    mx: str | None = None
    address: str | None = None
    tls: str | None = None
    verified: str = "clear"
    reason: str = ""
    result_type: str | None = None
    reply: str | None = None
    dcid: int = 0


Key = tuple[int, int]  # (mid, rid)


@dataclass(slots=True)
class Attempt:
    """What one attempt at one domain knows so far.

    Attributes:
        domain: the destination domain.
        messages: the batch, by MID.
        pending: the recipients without an outcome yet, by (MID, RID).
        results: the outcomes so far.
        refusals: the last transient refusal (4yz) of each recipient still pending,
            which becomes its outcome if the host that gave it is the last one tried.
        last_reason: why the last host tried did not take the pending recipients.
        last_type: its RFC 8460 result type.
        last_mx: that host.
        last_dcid: its connection.
    """

    domain: str
    messages: dict[int, Message]
    pending: dict[Key, str]
    results: dict[Key, RecipientResult] = field(default_factory=dict)
    refusals: dict[Key, RecipientResult] = field(default_factory=dict)
    last_reason: str = ""
    last_type: ResultType | None = None
    last_mx: str | None = None
    last_dcid: int = 0

    def pending_jobs(self) -> list[Job]:
        """The recipients still pending, grouped by message, in MID then RID order."""
        jobs: dict[int, list[tuple[int, str]]] = {}
        for (mid, rid), rcpt in sorted(self.pending.items()):
            jobs.setdefault(mid, []).append((rid, rcpt))
        return [(self.messages[mid], rcpts) for mid, rcpts in jobs.items()]

    def bounce_all(self, reason: str) -> None:
        """Every pending recipient bounces with ``reason``."""
        for (mid, rid), rcpt in list(self.pending.items()):
            self.results[mid, rid] = RecipientResult(rid, rcpt, "bounced", reason=reason)
        self.pending.clear()

    def defer_pending(self) -> None:
        """Every recipient still pending is deferred, with the last reason."""
        for (mid, rid), rcpt in sorted(self.pending.items()):
            refusal = self.refusals.get((mid, rid))
            if refusal is not None and refusal.mx == self.last_mx:
                # The last host refused it with a reply: that reply is the reason.
                self.results[mid, rid] = refusal
                continue
            self.results[mid, rid] = RecipientResult(
                rid,
                rcpt,
                "deferred",
                self.last_mx,
                reason=self.last_reason or "no host",
                result_type=self.last_type.value if self.last_type else None,
                dcid=self.last_dcid,
            )
        self.pending.clear()

    def absorb(self, hop: NextHop, address: str, session: ConnectionResult) -> None:
        """Take what a connection settled; the rest stays pending."""
        self.last_mx = hop.host
        self.last_dcid = session.dcid
        if session.reason:
            self.last_reason = session.reason
            self.last_type = session.result_type
        for out in session.outcomes:
            if not out.settled:
                self.refusals[out.mid, out.rid] = _result(out, hop, address, session)
                continue
            self.pending.pop((out.mid, out.rid), None)
            self.results[out.mid, out.rid] = _result(out, hop, address, session)


@dataclass(frozen=True, slots=True)
class Plan:
    """One host, looked up and decided: where and how to connect.

    Attributes:
        hop: the host and what DNS said about it.
        requirement: what a connection to it must achieve.
        policy_domain: the MTA-STS Policy Domain (a route host's own under RFC 8461 §3.4).
        route_host: the SMTP route host, for a routed domain.
    """

    hop: NextHop
    requirement: TlsRequirement
    policy_domain: str
    route_host: str | None


@dataclass(slots=True)
class Trial:
    """One unit of work on one host (or on the domain itself): the fault boundary.

    See the module docstring. The walk fills in the fields as the work goes on.

    Attributes:
        services: the engine's adapters.
        attempt: the attempt the trial belongs to.
        host: the host worked on; None for the domain's own lookups.
        dane_wanted: DANE applies to the destination (a TLSA lookup fault is then
            reported as one).
        stage: the step under way outside a connection (``policy discovery``,
            ``mx lookup``, ``address lookup``, ``tlsa lookup``, ``decision``); a
            connection's stage is its session's.
        plan: the decided host, for a connection.
        address: the address connected to.
        session: the connection's record, as soon as there is one.
        client: the open connection, which the trial closes.
    """

    services: Services
    attempt: Attempt
    host: str | None = None
    dane_wanted: bool = False
    stage: str = ""
    plan: Plan | None = None
    address: str | None = None
    session: ConnectionResult | None = None
    client: SmtpClient | None = None

    async def __aenter__(self) -> Trial:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and not isinstance(exc, Exception):
            # asyncio.CancelledError, KeyboardInterrupt, SystemExit: not this host's fault;
            # drop the connection without waiting and let it go on.
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.abort()
            return False
        if self.session is not None and self.plan is not None:
            self.attempt.absorb(self.plan.hop, self.address or "", self.session)
        if exc is not None:
            self._contain(exc)
        if self.client is not None:
            await self._hang_up(polite=exc is None)
        return exc is not None

    def _contain(self, exc: Exception) -> None:
        """The one reason and the one line for a fault (see the module docstring)."""
        attempt, services = self.attempt, self.services
        if isinstance(exc, SmtpError):
            # The adapter's typed error: a network fault, a timeout or a malformed reply.
            stage, detail, category = exc.stage, exc.detail, "network error"
        else:
            stage = self.session.stage if self.session is not None else self.stage
            detail, category = describe_fault(exc), "internal error"
        attempt.last_type = None
        if self.host is None:
            # The domain's own lookups: no host can be tried; each Delayed: line says why.
            attempt.last_reason = f"{stage}: {detail}"
            return
        attempt.last_mx = self.host
        if self.session is None or self.plan is None:
            self._host_not_used(f"{stage}: {detail}", stage == "tlsa lookup")
            return
        hop, address, dcid = self.plan.hop, self.address or "", self.session.dcid
        attempt.last_dcid = dcid
        if stage == "connect":
            attempt.last_reason = (
                f"connection to {hop.host} [{address}]:{hop.port} failed: {detail}"
            )
        else:
            detail = f"{stage}: {detail}"
            attempt.last_reason = detail
        if stage in TLS_STAGES:
            # RFC 8460 §4.3.1: a fault while TLS is negotiated or judged is a negotiation
            # failure that matches no more specific type: "validation-failure". Outside
            # those stages (connect, greeting, EHLO, the mail transaction) it is no TLS
            # failure at all, and RFC 8460 §4.3.4 leaves transient faults unreported.
            attempt.last_type = ResultType.VALIDATION_FAILURE
            req = self.plan.requirement
            report_failure(
                services,
                self.plan.policy_domain,
                hop,
                address,
                self.client.local[0] if self.client is not None else services.interface,
                req,
                # No policy type: it goes to the policy that applied (engine.tlsrpt.sessions).
                {
                    "policy_type": None,
                    "result_type": attempt.last_type.value,
                    "reason_code": detail,
                },
                dane=Check.DANE in req.checks,
            )
        # docs/gateway-behaviour.md §5.1:
        # "Connection Error: DCID ... details: ... reason: network error".
        services.emit(
            "smtp.connect.error",
            {
                "dcid": dcid,
                "domain": attempt.domain,
                "mx": hop.host,
                "address": address,
                "port": hop.port,
                "detail": detail,
                "interface": services.interface,
                "category": category,
                "result_type": attempt.last_type.value if attempt.last_type else None,
            },
        )

    def _host_not_used(self, reason: str, tlsa: bool) -> None:
        attempt = self.attempt
        attempt.last_reason = reason
        fields: dict[str, object] = {"domain": attempt.domain, "mx": self.host, "detail": reason}
        if tlsa and self.dane_wanted:
            # RFC 7672 §2.2 / DANE-5: a TLSA lookup that failed, however it failed, leaves
            # the host unusable (so never in clear); RFC 8460 §4.3.2.1: no valid records
            # came back, "dnssec-invalid", as for a TLSA lookup that timed out.
            attempt.last_type = ResultType.DNSSEC_INVALID
            fields["result_type"] = attempt.last_type.value
        self.services.emit("delivery.host.skipped", fields)

    async def _hang_up(self, *, polite: bool) -> None:
        """Close the connection: QUIT first after a normal end. Never raises."""
        client, self.client = self.client, None
        assert client is not None and self.session is not None
        dcid = self.session.dcid
        try:
            await (client.quit() if polite else client.close())
        except Exception as exc:  # closing never fails a delivery (module docstring)
            fields = {"dcid": dcid, "detail": describe_fault(exc)}
            self.services.emit("smtp.close.error", fields, "debug")
            with contextlib.suppress(Exception):
                client.abort()  # whatever state it was left in, the socket is released
        except BaseException:  # cancelled while saying goodbye: drop it and go on
            with contextlib.suppress(Exception):
                client.abort()
            raise
        self.services.emit("smtp.close", {"dcid": dcid})


def describe_fault(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 200 characters (never a traceback)."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def report_failure(
    services: Services,
    domain: str,
    hop: NextHop,
    address: str,
    sending_ip: str,
    req: TlsRequirement,
    failure: dict[str, object],
    *,
    dane: bool,
) -> None:
    """The ``tls.session`` event (TLS-RPT data) of a host or connection that failed."""
    fields: dict[str, object] = {
        "domain": domain,
        "mx": hop.host,
        "tlsa_base": hop.tlsa_base,
        "receiving_ip": address,
        "sending_ip": sending_ip,
        "row": req.row,
        "sts_mode": req.sts_mode.value if req.sts_mode else None,
        "dane": dane,
        "success": False,
        "outcome": "defer",
        "failures": [failure],
        "report_mail": services.report_mail,
    }
    services.emit("tls.session", fields, "debug")


def _result(
    out: RcptOutcome, hop: NextHop, address: str, session: ConnectionResult
) -> RecipientResult:
    verdict, obs = session.verdict, session.observation
    tls = obs.protocol if obs is not None and obs.handshake_ok else None
    verified = "clear"
    if tls is not None and verdict is not None:
        if verdict.outcome is Outcome.DELIVER_VERIFIED:
            verified = "dane" if "dane" in verdict.reason else "pkix"
        else:
            verified = "none"
    return RecipientResult(
        out.rid,
        out.rcpt,
        out.status,
        hop.host,
        address,
        tls,
        verified,
        reason=out.reason if out.status != "delivered" else "",
        reply=str(out.reply) if out.reply is not None else None,
        dcid=session.dcid,
    )
