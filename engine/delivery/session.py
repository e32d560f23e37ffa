"""One SMTP connection: connect, STARTTLS, judge the TLS, run the mail transaction.

Theory of operation
-------------------
:func:`connect` opens one connection to one address of one next hop, and
:func:`run_session` speaks SMTP on it under one
:class:`~engine.core.controls.TlsRequirement`. It gathers what the
connection shows into a :class:`~engine.core.verdict.TlsObservation`, asks the
core for the :class:`~engine.core.verdict.Verdict` (with the DANE match when
the requirement has a DANE check), writes the appliance's TLS lines, and only
when the verdict delivers does it send MAIL FROM. So nothing reaches a host in
clear, unverified or unpermitted unless the core said so: the "never
downgrade" rule lives in one decision, not in this plumbing.

Every session also emits one ``tls.session`` event carrying what TLS-RPT needs
(policy type, success, result type, reason code, hosts and addresses).

Neither function catches anything. They record what they did in a
:class:`ConnectionResult` as they go (the stage under way, each recipient's
outcome as soon as it is known) and let any exception through:
``engine.delivery.attempt.Trial`` owns the connection and contains every fault of one
MX in one place, where the partial result tells it which recipients are settled.
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
from engine.core.transfer import plan_transfer, transfer_needs
from engine.core.verdict import Outcome, TlsObservation, Verdict, judge
from engine.delivery.nexthop import NextHop
from engine.delivery.services import Message, Services
from engine.io.smtp import Reply, SmtpClient, SmtpError, no_verify_context

__all__ = ["TLS_STAGES", "ConnectionResult", "Job", "RcptOutcome", "connect", "run_session"]

#: One message and its recipients still pending at this destination.
Job = tuple[Message, list[tuple[int, str]]]


@dataclass(frozen=True, slots=True)
class RcptOutcome:
    """What happened to one recipient of one message on one connection.

    Attributes:
        status: ``delivered`` | ``deferred`` | ``bounced``.
        settled: the outcome is final for this attempt. A transient refusal (4yz) is
            not: the recipient goes on to the next host, and keeps this outcome only
            if no later host decides it.
    """

    mid: int
    rid: int
    rcpt: str
    status: str
    reply: Reply | None = None
    reason: str = ""
    settled: bool = True


@dataclass(slots=True)
class ConnectionResult:
    """What one connection did, filled in as it goes (a fault loses nothing).

    TLS reporting keeps its own per-session record,
    :class:`engine.core.tlsrpt.SessionResult`, made from the ``tls.session`` event.

    Attributes:
        dcid: the delivery connection id.
        stage: the step under way, which names a fault (``connect``, ``banner``,
            ``ehlo``, ``starttls``, ``ehlo after starttls``, ``verdict``, ``tls log``,
            ``rset``, ``mail``, ``rcpt``, ``data``, ``end of data``; see
            :data:`TLS_STAGES`).
        verdict: the TLS verdict, once reached.
        observation: what the connection showed about TLS.
        outcomes: the recipients settled on this connection so far.
        reason: why the connection did not deliver (the verdict's or a refusal's).
        result_type: the RFC 8460 result type of ``reason``, if any.
    """

    dcid: int
    stage: str = "connect"
    verdict: Verdict | None = None
    observation: TlsObservation | None = None
    outcomes: list[RcptOutcome] = field(default_factory=list)
    reason: str = ""
    result_type: ResultType | None = None


#: The stages during which TLS is being negotiated or judged, before the session's
#: ``tls.session`` event: a fault there is a TLS negotiation failure for RFC 8460
#: (``engine.delivery.attempt.Trial`` reports it so, once).
TLS_STAGES = frozenset({"starttls", "verdict"})


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


async def connect(
    services: Services, result: ConnectionResult, hop: NextHop, address: str
) -> SmtpClient:
    """Open the TCP connection for ``result`` to ``address`` and log it.

    Raises:
        SmtpError: the connection was refused or timed out (stage ``connect``).
    """
    result.stage = "connect"
    client = await SmtpClient.connect(
        services.dialer,
        address,
        hop.port,
        timeouts=services.smtp_timeouts,
        local_hostname=services.local_hostname,
    )
    _emit(
        services,
        "smtp.connect",
        dcid=result.dcid,
        interface=client.local[0] or services.interface,
        address=address,
        port=hop.port,
        mx=hop.host,
    )
    return client


async def run_session(
    services: Services,
    client: SmtpClient,
    result: ConnectionResult,
    jobs: list[Job],
    *,
    domain: str,
    hop: NextHop,
    address: str,
    requirement: TlsRequirement,
    next_hop_secure: bool,
    route_host: str | None = None,
    policy_domain: str | None = None,
) -> None:
    """Deliver a batch of messages over the open connection ``client`` to ``address``.

    The TLS verdict is reached once per connection; when it delivers, each message gets
    its own transaction, with RSET between them (docs/gateway-behaviour.md §4: one
    connection carries up to ``max_messages_per_connection`` messages, CISCO
    118548). Whatever happens is
    recorded in ``result`` as it happens; the caller closes the connection.

    Args:
        services: the engine's adapters and settings.
        client: the connection (from :func:`connect`), before its greeting.
        result: where the session records its stage and outcomes.
        jobs: the messages and their recipients still pending at this destination.
        domain: the recipient (or route) domain.
        hop: the next hop (MX host) with its DNS facts.
        address: the address of ``hop`` connected to.
        requirement: what the connection must achieve.
        next_hop_secure: the MX RRset was secure (DANE-TA reference identifiers).
        route_host: the SMTP route host for a routed domain.
        policy_domain: the MTA-STS Policy Domain when it is not ``domain`` (a route
            host under RFC 8461 §3.4).

    Raises:
        SmtpError: the connection broke (network error, timeout, malformed reply).
        Exception: anything else; ``engine.delivery.attempt.Trial`` contains it.
    """
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


async def _converse(
    services: Services,
    client: SmtpClient,
    jobs: list[Job],
    result: ConnectionResult,
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
    result.stage = "banner"
    banner = await client.read_banner()
    # AMB-36 (RFC 5321 §3.1, §5.1): a 5yz greeting or EHLO/HELO refusal fails this MX,
    # not the recipient; the walk goes on, and with no MX left the message is deferred.
    if not banner.ok:
        result.reason = f"banner: {banner}"
        return
    result.stage = "ehlo"
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
        result.stage = "starttls"
        tls = await client.starttls(ctx, sni)
        if tls.reply is None:
            # The connection broke before STARTTLS was answered: a network fault at this
            # stage, not a refusal that Preferred could answer in clear on this connection.
            raise SmtpError("starttls", tls.error or "no reply to STARTTLS")
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
            result.stage = "ehlo after starttls"
            ehlo = await client.ehlo()  # RFC 3207 §4.2: forget pre-TLS knowledge
    result.stage = "verdict"
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
    result.stage = "tls log"  # judged and reported: a fault from here is no TLS failure
    _log_tls(services, dcid, policy_domain, hop, requirement, observation, verdict, dane)
    if not verdict.delivers:
        return
    for index, job in enumerate(jobs):
        if index:
            # RFC 5321 §4.1.1.5: a clean slate for the next message on this connection.
            result.stage = "rset"
            await client.rset()
        await _transaction(services, client, job[0], job[1], result)


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
        # docs/gateway-behaviour.md §5.2 [SEED]: a verification failure under a Verify setting or
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
        "report_mail": services.report_mail,
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
    """The address with its domain in A-labels (RFC 5890), which any server takes.

    RFC 6531 §3.3 lets an SMTPUTF8 session carry U-labels too; A-labels keep one form
    for both kinds of server, and leave only a non-ASCII local part needing SMTPUTF8.
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or domain.startswith("["):
        return address
    return f"{local}@{normalize_host(domain)}"


def _log_transient(
    services: Services, dcid: int, mid: int, rids: list[int], stage: str, reply: Reply
) -> None:
    """One line for a transient refusal (4yz) on this host.

    The recipients go on to the next MX in the same attempt (:func:`_refused`), so no
    ``Delayed:`` line follows unless no later host takes them: without this line the
    host that refused would leave no trace in ``mail_logs``. A 5yz needs none here:
    its ``Bounced:`` line names the reply.
    """
    if 500 <= reply.code < 600:
        return
    _emit(
        services,
        "delivery.refused.transient",
        dcid=dcid,
        mid=mid,
        rids=rids,
        stage=stage,
        response=str(reply),
    )


def _refused(mid: int, rid: int, rcpt: str, reply: Reply) -> RcptOutcome:
    """A recipient refused by ``reply`` (RFC 5321 §4.2.1).

    5yz is permanent: it bounces. 4yz, or any other code where a positive reply was
    due, is transient: RFC 5321 §5.1 has the client try each relevant address "until
    a delivery attempt succeeds", so the recipient goes on to the next host now and
    is deferred only when none takes it.
    """
    if 500 <= reply.code < 600:
        return RcptOutcome(mid, rid, rcpt, "bounced", reply, str(reply))
    return RcptOutcome(mid, rid, rcpt, "deferred", reply, str(reply), settled=False)


async def _transaction(
    services: Services,
    client: SmtpClient,
    message: Message,
    rcpts: list[tuple[int, str]],
    result: ConnectionResult,
) -> None:
    dcid, mid = result.dcid, message.mid
    rids = [rid for rid, _ in rcpts]
    # RFC 6152 §3 / RFC 6531 §3.2: 8-bit data and internationalised mail only to a
    # server that offers the extension, labelled in MAIL FROM (engine.core.transfer).
    needs = transfer_needs(message.mail_from, [a for _, a in rcpts], message.data)
    plan = plan_transfer(needs, client.extensions)
    if not plan.sendable:
        # Not this server's refusal but ours, before MAIL FROM: not settled, so the next
        # MX may take the message (RFC 5321 §5.1); the last host's refusal bounces it.
        reason = f"{plan.status} {plan.reason}"
        _emit(services, "delivery.unsendable", dcid=dcid, mid=mid, rids=rids, detail=reason)
        result.outcomes += [
            RcptOutcome(mid, rid, rcpt, "bounced", None, reason, settled=False)
            for rid, rcpt in rcpts
        ]
        return
    # docs/gateway-behaviour.md §5.1: "Delivery start" is logged when MAIL FROM is sent.
    _emit(services, "delivery.start", dcid=dcid, mid=mid, rids=rids)
    result.stage = "mail"
    mail = await client.mail(_ascii_address(message.mail_from), plan.parameters)
    if not mail.ok:
        _log_transient(services, dcid, mid, [r for r, _ in rcpts], "MAIL", mail)
        result.outcomes += [_refused(mid, r, a, mail) for r, a in rcpts]
        return
    accepted: list[tuple[int, str]] = []
    result.stage = "rcpt"
    for rid, rcpt in rcpts:
        reply = await client.rcpt(_ascii_address(rcpt))
        if reply.ok:
            accepted.append((rid, rcpt))
        else:
            _log_transient(services, dcid, mid, [rid], "RCPT", reply)
            result.outcomes.append(_refused(mid, rid, rcpt, reply))
    if not accepted:
        return
    result.stage = "data"
    reply = await client.data()
    if reply.code == 354:
        result.stage = "end of data"
        reply = await client.send_message(message.data)
    elif reply.ok:
        # RFC 5321 §4.3.2: DATA is answered 354 before any text; a 2yz here means the
        # message was never sent, so it must not count as delivered.
        raise SmtpError("data", f"unexpected reply to DATA: {reply}")
    if not reply.ok:
        stage = "end of data" if result.stage == "end of data" else "DATA"
        _log_transient(services, dcid, mid, [rid for rid, _ in accepted], stage, reply)
        result.outcomes += [_refused(mid, rid, rcpt, reply) for rid, rcpt in accepted]
        return
    done = [rid for rid, _ in accepted]
    _emit(services, "delivery.done", dcid=dcid, mid=mid, rids=done)
    _emit(services, "delivery.response", mid=mid, rids=done, response=str(reply))
    result.outcomes += [
        RcptOutcome(mid, rid, rcpt, "delivered", reply, str(reply)) for rid, rcpt in accepted
    ]
