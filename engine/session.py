"""One SMTP connection: connect, STARTTLS, judge the TLS, run the mail transaction.

Theory of operation
-------------------
:func:`run_session` makes one connection to one address of one next hop
under one :class:`~engine.core.controls.TlsRequirement`. It gathers what the
connection shows into a :class:`~engine.core.verdict.TlsObservation`, asks the
core for the :class:`~engine.core.verdict.Verdict` (with the DANE match when
the requirement has a DANE check), writes the appliance's TLS lines, and only
when the verdict delivers does it send MAIL FROM. So nothing reaches a host in
clear, unverified or unpermitted unless the core said so: the "never
downgrade" rule lives in one decision, not in this plumbing.

Every session also emits one ``tls.session`` event carrying what TLS-RPT needs
(policy type, success, result type, reason code, hosts and addresses).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from cryptography import x509

from engine.core.controls import Check, StartTls, TlsRequirement
from engine.core.dane import DaneVerdict, dane_reference_ids, dane_verify
from engine.core.events import ResultType
from engine.core.mx import normalize_host
from engine.core.pkix import dns_names
from engine.core.verdict import Outcome, TlsObservation, Verdict, judge
from engine.io.smtp import Reply, SmtpClient, SmtpError, no_verify_context
from engine.nexthop import NextHop
from engine.services import Message, Services

__all__ = ["Job", "RcptOutcome", "SessionResult", "run_session"]

#: One message and its recipients still pending at this destination.
Job = tuple[Message, list[tuple[int, str]]]


@dataclass(frozen=True, slots=True)
class RcptOutcome:
    """What happened to one recipient of one message on one connection."""

    mid: int
    rid: int
    rcpt: str
    status: str  # delivered | deferred | bounced
    reply: Reply | None = None
    reason: str = ""


@dataclass(slots=True)
class SessionResult:
    """The outcome of one connection attempt."""

    dcid: int
    connected: bool = False
    verdict: Verdict | None = None
    observation: TlsObservation | None = None
    outcomes: list[RcptOutcome] = field(default_factory=list)
    reason: str = ""
    result_type: ResultType | None = None
    transaction: bool = False  # MAIL FROM was sent at least once
    current: Job | None = None  # the job whose transaction is under way

    @property
    def try_next(self) -> bool:
        """Nothing was decided for the recipients here: go on to the next host."""
        return not self.outcomes


def _emit(services: Services, code: str, level: str = "info", **fields: object) -> None:
    services.emit(code, fields, level)


def _san_for_log(chain: tuple[bytes, ...], host: str) -> str | None:
    if not chain:
        return None
    try:
        names = dns_names(x509.load_der_x509_certificate(chain[0]))
    except ValueError:
        return None
    if not names:
        return None
    for name in names:  # prefer the name that covers the host, as the seed's line shows
        if name.lower() == host or (name.startswith("*.") and host.endswith(name[1:].lower())):
            return name
    return names[0]


async def run_session(
    services: Services,
    jobs: list[Job],
    *,
    domain: str,
    hop: NextHop,
    address: str,
    requirement: TlsRequirement,
    next_hop_secure: bool,
    route_host: str | None = None,
    policy_domain: str | None = None,
) -> SessionResult:
    """Deliver a batch of messages over one connection to ``address``.

    The TLS verdict is reached once per connection; when it delivers, each message gets
    its own transaction, with RSET between them (seg-behaviour §4: one connection carries
    up to ``max_messages_per_connection`` messages, CISCO 118548).

    Args:
        services: the engine's adapters and settings.
        jobs: the messages and their recipients still pending at this destination.
        domain: the recipient (or route) domain.
        hop: the next hop (MX host) with its DNS facts.
        address: the address of ``hop`` to connect to.
        requirement: what the connection must achieve.
        next_hop_secure: the MX RRset was secure (DANE-TA reference identifiers).
        route_host: the SMTP route host for a routed domain.
        policy_domain: the MTA-STS Policy Domain when it is not ``domain`` (a route
            host under RFC 8461 §3.4).
    """
    dcid = services.next_dcid()
    result = SessionResult(dcid)
    try:
        client = await SmtpClient.open(
            services.dialer,
            address,
            hop.port,
            timeouts=services.smtp_timeouts,
            local_hostname=services.local_hostname,
        )
    except SmtpError as exc:
        # seg-behaviour §5.1: "Connection Error: DCID ... reason: network error".
        _emit(
            services,
            "smtp.connect.error",
            dcid=dcid,
            domain=domain,
            address=address,
            port=hop.port,
            detail=exc.detail,
            interface=services.interface,
        )
        result.reason = f"connection to {hop.host} [{address}]:{hop.port} failed: {exc.detail}"
        return result
    result.connected = True
    _emit(
        services,
        "smtp.connect",
        dcid=dcid,
        interface=client.local[0] or services.interface,
        address=address,
        port=hop.port,
        mx=hop.host,
    )
    try:
        await _converse(
            services,
            client,
            jobs,
            result,
            domain=domain,
            hop=hop,
            address=address,
            requirement=requirement,
            next_hop_secure=next_hop_secure,
            route_host=route_host,
            policy_domain=policy_domain or domain,
        )
    except SmtpError as exc:
        result.reason = f"{exc.stage}: {exc.detail}"
        if result.current is not None:
            # The connection broke mid-transaction: nothing is known to be delivered for
            # that message (later ones were not started and go on to the next host).
            message, rcpts = result.current
            result.outcomes += [
                RcptOutcome(message.mid, rid, rcpt, "deferred", None, result.reason)
                for rid, rcpt in rcpts
            ]
    finally:
        await client.quit()
        _emit(services, "smtp.close", dcid=dcid)
    return result


async def _converse(
    services: Services,
    client: SmtpClient,
    jobs: list[Job],
    result: SessionResult,
    *,
    domain: str,
    hop: NextHop,
    address: str,
    requirement: TlsRequirement,
    next_hop_secure: bool,
    route_host: str | None,
    policy_domain: str,
) -> None:
    dcid = result.dcid
    if not client.banner.ok:
        result.reason = f"banner: {client.banner}"
        return
    ehlo = await client.ehlo()
    if not ehlo.ok:
        result.reason = f"EHLO/HELO refused: {ehlo}"
        return
    sni = hop.tlsa_base if Check.DANE in requirement.checks and hop.tlsa_base else hop.host
    observation = TlsObservation(starttls_offered=client.offers_starttls, sni=sni)
    if requirement.starttls is not StartTls.NEVER and client.offers_starttls:
        # RFC 8461 §7.1 / CERT-10: SNI = the MX host; RFC 7672 §8.1 / DANE-33: the TLSA base.
        # RFC 8996: never negotiate below TLS 1.2.
        ctx = no_verify_context(minimum=ssl.TLSVersion.TLSv1_2)
        tls = await client.starttls(ctx, sni)
        observation = TlsObservation(
            starttls_offered=True,
            starttls_reply=tls.reply.code if tls.reply else None,
            handshake_ok=tls.ok,
            handshake_error=tls.error or None,
            protocol=tls.protocol,
            cipher=tls.cipher,
            peer_chain=tls.chain,
            sni=sni,
        )
        if tls.ok:
            ehlo = await client.ehlo()  # RFC 3207 §4.2: forget pre-TLS knowledge
    dane: DaneVerdict | None = None
    if Check.DANE in requirement.checks and observation.handshake_ok:
        base = hop.tlsa_base or hop.host
        refs = dane_reference_ids(base, domain if next_hop_secure else None, None)
        dane = dane_verify(
            observation.peer_chain, hop.tlsa, reference_ids=refs, now=services.clock.now()
        )
    verdict = judge(
        observation,
        requirement,
        now=services.clock.now(),
        roots=services.roots,
        rcpt_domain=domain,
        mx_host=normalize_host(hop.host),
        route_host=route_host,
        dane_result=dane,
    )
    result.verdict, result.observation = verdict, observation
    result.reason, result.result_type = verdict.reason, verdict.result_type
    # The TLS-RPT data event first: the seed shows the TLS success line, the MTA-STS
    # result and "Delivery start" adjacent (Sep 26), so nothing may come between them.
    _emit_session_report(services, policy_domain, hop, address, client, requirement, verdict)
    _log_tls(services, dcid, policy_domain, hop, requirement, observation, verdict, dane)
    if not verdict.delivers:
        return
    for index, job in enumerate(jobs):
        if index:
            # RFC 5321 §4.1.1.5: a clean slate for the next message on this connection.
            await client.rset()
        result.current = job
        await _transaction(services, client, job[0], job[1], result)
        result.current = None


def _log_tls(
    services: Services,
    dcid: int,
    domain: str,
    hop: NextHop,
    requirement: TlsRequirement,
    obs: TlsObservation,
    verdict: Verdict,
    dane: DaneVerdict | None,
) -> None:
    if dane is not None:
        code = "dane.success" if dane.ok else "dane.failed"
        _emit(services, code, dcid=dcid, mx=hop.host, reason=dane.reason)
    if obs.handshake_ok and verdict.delivers:
        _emit(
            services,
            "tls.success",
            dcid=dcid,
            protocol=obs.protocol,
            cipher=obs.cipher,
            san=_san_for_log(obs.peer_chain, hop.host),
        )
        if verdict.outcome is Outcome.DELIVER_UNVERIFIED and verdict.result_type is not None:
            _emit(
                services,
                "tls.unverified",
                "debug",
                dcid=dcid,
                detail=verdict.reason,
                result_type=verdict.result_type.value,
            )
        if requirement.sts_mode is not None and requirement.sts_mode.value == "enforce":
            _emit(services, "sts.success", domain=domain)
        return
    if verdict.delivers or verdict.outcome is Outcome.RECONNECT_CLEAR:
        if obs.starttls_offered and not obs.handshake_ok and obs.starttls_reply is not None:
            _emit(services, "tls.failed", dcid=dcid, detail=verdict.reason)
        return
    fields = {"dcid": dcid, "detail": verdict.reason, "mx": hop.host}
    if verdict.result_type is not None:
        fields["result_type"] = verdict.result_type.value
    if obs.handshake_ok:
        # seg-behaviour §5.2 [SEED]: a verification failure under a Verify setting or
        # MTA-STS enforce defers, then says TLS was required.
        services.emit("tls.verify.deferring", fields)
    elif obs.starttls_reply == 220:
        services.emit("tls.failed", fields)
    services.emit("tls.required.failed", fields)


def _emit_session_report(
    services: Services,
    domain: str,
    hop: NextHop,
    address: str,
    client: SmtpClient,
    requirement: TlsRequirement,
    verdict: Verdict,
) -> None:
    success = verdict.outcome is Outcome.DELIVER_VERIFIED and not verdict.report
    fields: dict[str, object] = {
        "domain": domain,
        "mx": hop.host,
        "tlsa_base": hop.tlsa_base,
        # RFC 8460 §4.5 / AMB-20: the TLSA RRset this session was judged against, as
        # the report's policy-string (so the reporter never looks it up again).
        "tlsa": sorted(t.to_text() for t in hop.tlsa),
        "receiving_ip": address,
        "sending_ip": client.local[0],
        "row": requirement.row,
        "sts_mode": requirement.sts_mode.value if requirement.sts_mode else None,
        "dane": Check.DANE in requirement.checks,
        "success": success,
        "outcome": verdict.outcome.value,
    }
    failures = []
    if verdict.result_type is not None and verdict.outcome is not Outcome.DELIVER_VERIFIED:
        failures.append(
            {
                "policy_type": verdict.policy_type.value if verdict.policy_type else None,
                "result_type": verdict.result_type.value,
                "reason_code": verdict.failure_reason_code,
            }
        )
    for entry in verdict.report:
        failures.append(
            {
                "policy_type": entry.policy_type.value,
                "result_type": entry.result_type.value,
                "reason_code": entry.failure_reason_code,
            }
        )
    fields["failures"] = failures
    _emit(services, "tls.session", "debug", **fields)


def _ascii_address(address: str) -> str:
    """The address with its domain in A-labels (RFC 5890): no SMTPUTF8 is assumed."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or domain.startswith("["):
        return address
    return f"{local}@{normalize_host(domain)}"


async def _transaction(
    services: Services,
    client: SmtpClient,
    message: Message,
    rcpts: list[tuple[int, str]],
    result: SessionResult,
) -> None:
    dcid, mid = result.dcid, message.mid
    result.transaction = True
    rids = [rid for rid, _ in rcpts]
    # seg-behaviour §5.1: "Delivery start" is logged when MAIL FROM is sent.
    _emit(services, "delivery.start", dcid=dcid, mid=mid, rids=rids)
    mail = await client.mail(message.mail_from)
    if not mail.ok:
        status = "deferred" if mail.transient else "bounced"
        result.outcomes += [RcptOutcome(mid, r, a, status, mail, str(mail)) for r, a in rcpts]
        return
    accepted: list[tuple[int, str]] = []
    for rid, rcpt in rcpts:
        reply = await client.rcpt(_ascii_address(rcpt))
        if reply.ok:
            accepted.append((rid, rcpt))
        else:
            status = "deferred" if reply.transient else "bounced"
            result.outcomes.append(RcptOutcome(mid, rid, rcpt, status, reply, str(reply)))
    if not accepted:
        return
    reply = await client.data(message.data)
    done = [rid for rid, _ in accepted]
    if reply.ok:
        _emit(services, "delivery.done", dcid=dcid, mid=mid, rids=done)
        _emit(services, "delivery.response", mid=mid, rids=done, response=str(reply))
        status = "delivered"
    else:
        status = "deferred" if reply.transient else "bounced"
    result.outcomes += [
        RcptOutcome(mid, rid, rcpt, status, reply, str(reply)) for rid, rcpt in accepted
    ]
