"""Judge what one SMTP connection showed against its TLS requirement.

Theory of operation
-------------------
The SMTP adapter records a :class:`TlsObservation` (EHLO offered STARTTLS?
what did ``STARTTLS`` answer? did the handshake finish, with which protocol,
cipher and peer chain?). :func:`judge` compares it with the
:class:`~engine.core.controls.TlsRequirement` from
:func:`~engine.core.controls.decide` and returns one :class:`Verdict`: deliver
(over verified TLS, over unverified TLS, in clear), reconnect in clear, or
defer this MX (the caller tries the next one, then retries later).

The phases are judged in the order they happen on the wire, and the first
blocking failure decides:

1. decided before connecting: rows 3–5 (DANE) and an MX outside an ``enforce``
   policy (MX-1, MX-6; ``validation-failure`` + ``mx-not-in-policy``, AMB-17);
2. STARTTLS missing or refused: before the 220, so a Preferred setting goes on
   in clear (docs/gateway-behaviour.md §1.1, CISCO 118955); a mandatory one defers with the seed's
   "TLS was required but could not be successfully negotiated";
3. handshake failure after the 220: never clear on this connection;
4. the blocking checks, in a fixed order: DANE, TLS >= 1.2 (AMB-33), the Cisco
   name algorithm (so the seed's "peer cert does not match domain <rcpt>" wins
   over the RFC 8461 name failure), then RFC 8461 §4.2 PKIX.

Checks that only report (``testing``: RFC 8461 §5, AMB-16; AMB-24 hybrid PKIX)
never change the outcome; they add at most one ``sts`` :class:`ReportEntry`
per session. Result types follow docs/requirements.md §1.11.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography import x509

from engine.core.controls import Check, DaneStatus, FailureAction, StartTls, TlsRequirement
from engine.core.events import ResultType
from engine.core.pkix import (
    ChainVerdict,
    cisco_hosted_verify_match,
    cisco_verify_match,
    host_mismatch_reason,
    peer_mismatch_reason,
    rfc6125_match,
    verify_chain,
)
from engine.core.policy import Mode
from engine.core.tlsrpt import PolicyType

__all__ = [
    "MX_NOT_IN_POLICY",
    "TLS_REQUIRED_NOT_NEGOTIATED",
    "DaneOutcome",
    "Outcome",
    "PolicyType",
    "ReportEntry",
    "TlsObservation",
    "Verdict",
    "judge",
]

MX_NOT_IN_POLICY = "mx-not-in-policy"  # AMB-17 failure-reason-code
TLS_REQUIRED_NOT_NEGOTIATED = "TLS was required but could not be successfully negotiated"  # SEED
_FLOOR_CODE = "tls-version-below-1.2"
_MODERN = ("TLSv1.2", "TLSv1.3")


class Outcome(StrEnum):
    """What to do with the recipients on this connection."""

    DELIVER_VERIFIED = "deliver-verified"  # over TLS; the required checks passed
    DELIVER_UNVERIFIED = "deliver-unverified"  # over TLS; nothing verified, or verify failed
    DELIVER_CLEAR = "deliver-clear"  # in clear on this connection
    RECONNECT_CLEAR = "reconnect-clear"  # [INF] knob: drop this session, deliver in clear
    DEFER = "defer"  # not on this MX: try the next, else retry later

    @property
    def delivers(self) -> bool:
        """Whether the message goes out on this connection."""
        return self in (Outcome.DELIVER_VERIFIED, Outcome.DELIVER_UNVERIFIED, Outcome.DELIVER_CLEAR)


@dataclass(frozen=True, slots=True)
class TlsObservation:
    """What the SMTP adapter saw on one connection.

    Attributes:
        starttls_offered: EHLO advertised STARTTLS.
        starttls_reply: the reply code to ``STARTTLS``, or None when not sent.
        handshake_ok: the TLS handshake completed.
        handshake_error: the handshake's error text when it failed.
        protocol: negotiated version as ``ssl`` names it (``"TLSv1.3"``).
        cipher: negotiated cipher name.
        peer_chain: the peer's certificates as sent, leaf first (DER).
        sni: the server name sent (CERT-10: the MX host).
    """

    starttls_offered: bool = False
    starttls_reply: int | None = None
    handshake_ok: bool = False
    handshake_error: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    peer_chain: tuple[bytes, ...] = ()
    sni: str | None = None


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """A failure to report (TLS-RPT) although it did not block delivery."""

    policy_type: PolicyType
    result_type: ResultType
    reason: str
    failure_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one connection.

    Attributes:
        outcome: deliver (verified / unverified / clear), reconnect in clear, or defer.
        reason: one human reason (the text after ``verify error:`` in the logs).
        result_type: the RFC 8460 result type of the failure that decided, if any.
        failure_reason_code: the detail code for ``result_type``.
        policy_type: the policy the failure belongs to (None: the TLS setting alone).
        report: non-blocking failures to report (``testing``, AMB-24 hybrid).
    """

    outcome: Outcome
    reason: str
    result_type: ResultType | None = None
    failure_reason_code: str | None = None
    policy_type: PolicyType | None = None
    report: tuple[ReportEntry, ...] = field(default=())

    @property
    def delivers(self) -> bool:
        """Whether the message goes out on this connection."""
        return self.outcome.delivers


class DaneOutcome(Protocol):
    """What :func:`judge` needs from a DANE match (``engine.core.dane.DaneVerdict`` fits)."""

    @property
    def ok(self) -> bool:
        """The chain matched a usable TLSA record."""

    @property
    def reason(self) -> str:
        """One human sentence."""

    @property
    def result_type(self) -> ResultType | None:
        """The RFC 8460 result type of a failure."""


@dataclass(frozen=True, slots=True)
class _CheckFailure:
    """One check the session failed: its RFC 8460 result type, reason and reason code."""

    result_type: ResultType
    reason: str
    code: str | None = None


@dataclass(slots=True)
class _Context:
    """The inputs the checks share; the chain is verified at most once."""

    observation: TlsObservation
    now: dt.datetime | float
    roots: Sequence[x509.Certificate | bytes]
    rcpt_domain: str
    mx_host: str
    route_host: str | None
    ptr_host: str | None
    chain: ChainVerdict | None = None

    def chain_verdict(self) -> ChainVerdict:
        if self.chain is None:
            self.chain = verify_chain(self.observation.peer_chain, self.roots, self.now)
        return self.chain


def judge(
    observation: TlsObservation,
    requirement: TlsRequirement,
    *,
    now: dt.datetime | float,
    roots: Sequence[x509.Certificate | bytes],
    rcpt_domain: str,
    mx_host: str,
    route_host: str | None = None,
    ptr_host: str | None = None,
    dane_result: DaneStatus | DaneOutcome | None = None,
) -> Verdict:
    """Judge one connection against its requirement.

    Args:
        observation: what the connection showed.
        requirement: what it had to achieve (from :func:`engine.core.controls.decide`).
        now: the engine's clock (certificates are judged at this time).
        roots: the trusted CA certificates.
        rcpt_domain: the recipient domain (Cisco name algorithms).
        mx_host: the MX host connected to (RFC 8461 §4.2 reference identifier).
        route_host: the SMTP route host for a routed domain (Hosted Verify).
        ptr_host: the PTR name of the address connected to (Verify), if known.
        dane_result: the TLSA match of the chain, required when the requirement has a
            DANE check: ``USABLE_PASS`` / ``USABLE_FAIL``, or a :class:`DaneOutcome`
            (such as ``engine.core.dane.DaneVerdict``) whose failure type and reason
            are then reported.

    Returns:
        The verdict, with one reason and the RFC 8460 result type of the deciding failure.

    Raises:
        ValueError: the requirement has a DANE check and ``dane_result`` is not a
            pass/fail status.
    """
    ctx = _Context(observation, now, roots, rcpt_domain, mx_host, route_host, ptr_host)
    return _judge(ctx, requirement, dane_result)


def _judge(
    ctx: _Context, req: TlsRequirement, dane_result: DaneStatus | DaneOutcome | None
) -> Verdict:
    obs = ctx.observation
    policy_type = _policy_type(req)
    if req.defer_now is not None:
        # docs/gateway-behaviour.md §2.1 rows 3–5: decided before connecting.
        return Verdict(Outcome.DEFER, req.defer_reason, req.defer_now, None, PolicyType.TLSA)
    if not req.mx_permitted:
        # RFC 8461 §4.1, §5 (MX-1, MX-6); AMB-17: validation-failure with a reason code.
        reason = f"MX host {ctx.mx_host} is not in the MTA-STS policy"
        return Verdict(
            Outcome.DEFER, reason, ResultType.VALIDATION_FAILURE, MX_NOT_IN_POLICY, PolicyType.STS
        )
    reported: list[_CheckFailure] = []
    if req.report_mx_mismatch:
        # RFC 8461 §5 (MX-7): testing uses the MX anyway and reports the mismatch.
        reason = f"MX host {ctx.mx_host} is not in the MTA-STS policy"
        reported.append(_CheckFailure(ResultType.VALIDATION_FAILURE, reason, MX_NOT_IN_POLICY))
    if req.starttls is StartTls.NEVER:
        # docs/gateway-behaviour.md §1.1 [CISCO 118955]: TLS No: never STARTTLS, even when offered.
        return Verdict(Outcome.DELIVER_CLEAR, "TLS not attempted (TLS setting No)")

    if not obs.starttls_offered or obs.starttls_reply != 220:
        code = (
            "STARTTLS not offered"
            if not obs.starttls_offered
            else f"STARTTLS unexpected response {obs.starttls_reply}"
        )
        failure = _CheckFailure(ResultType.STARTTLS_NOT_SUPPORTED, code, code)
        if req.starttls is StartTls.OPTIONAL and req.on_no_starttls is FailureAction.CLEAR:
            # docs/gateway-behaviour.md §1.1: before the 220, Preferred (-Verify) goes on in
            # clear; testing reports it (APPLY-4).
            reported.append(failure)
            return _finish(
                ctx,
                req,
                Outcome.DELIVER_CLEAR,
                f"{code}; delivering in clear",
                failure,
                None,
                reported,
            )
        # RFC 8461 §5 (CERT-1, CERT-2); docs/gateway-behaviour.md §1.1 Required: nothing sent
        # in clear.
        return Verdict(
            Outcome.DEFER, TLS_REQUIRED_NOT_NEGOTIATED, failure.result_type, code, policy_type
        )

    if not obs.handshake_ok:
        error = obs.handshake_error or "TLS handshake failed"
        # RFC 8460 §4.3.3: handshake alerts and I/O errors are validation-failure.
        failure = _CheckFailure(ResultType.VALIDATION_FAILURE, error, error)
        if req.on_handshake_failure is FailureAction.RECONNECT_CLEAR:
            reported.append(failure)
            return _finish(
                ctx, req, Outcome.RECONNECT_CLEAR, f"TLS failed: {error}", failure, None, reported
            )
        # docs/gateway-behaviour.md §1.1 note: after the 220, no clear text on this connection;
        # retry later.
        return Verdict(Outcome.DEFER, error, failure.result_type, error, policy_type)

    if Check.DANE in req.checks:
        if isinstance(dane_result, DaneStatus | None):
            if dane_result not in (DaneStatus.USABLE_PASS, DaneStatus.USABLE_FAIL):
                raise ValueError(f"a DANE check needs dane_result pass/fail, got {dane_result!r}")
            if dane_result is DaneStatus.USABLE_FAIL:
                return _dane_failed(ctx, req, None)
        elif not dane_result.ok:
            return _dane_failed(ctx, req, dane_result)
    blocking = _first_failure(ctx, req.checks)
    if blocking is not None:
        floor = blocking.code == _FLOOR_CODE
        if req.on_verify_failure is FailureAction.DELIVER_UNVERIFIED and not floor:
            # docs/gateway-behaviour.md §1.1 [CISCO*] Preferred-Verify: deliver encrypted but
            # unverified.
            return _finish(
                ctx,
                req,
                Outcome.DELIVER_UNVERIFIED,
                blocking.reason,
                blocking,
                policy_type,
                reported,
            )
        return Verdict(
            Outcome.DEFER, blocking.reason, blocking.result_type, blocking.code, policy_type
        )
    verified = [c for c in req.checks if c is not Check.TLS_1_2]
    if verified:
        reason = "TLS verified: " + ", ".join(verified)
        return _finish(ctx, req, Outcome.DELIVER_VERIFIED, reason, None, None, reported)
    return _finish(
        ctx,
        req,
        Outcome.DELIVER_UNVERIFIED,
        "TLS success, certificate not verified",
        None,
        None,
        reported,
    )


def _policy_type(req: TlsRequirement) -> PolicyType | None:
    if Check.DANE in req.checks:
        return PolicyType.TLSA
    if req.sts_mode in (Mode.ENFORCE, Mode.TESTING):
        return PolicyType.STS
    return None


def _finish(
    ctx: _Context,
    req: TlsRequirement,
    outcome: Outcome,
    reason: str,
    failure: _CheckFailure | None,
    policy_type: PolicyType | None,
    reported: list[_CheckFailure],
) -> Verdict:
    """A delivering verdict, with the report-only checks run and at most one sts entry."""
    report: tuple[ReportEntry, ...] = ()
    if req.sts_mode is not None and (req.report_checks or reported):
        extra = _first_failure(ctx, req.report_checks) if ctx.observation.handshake_ok else None
        candidates = [*reported, *([extra] if extra else [])]
        if candidates:
            first = candidates[0]
            entry = ReportEntry(PolicyType.STS, first.result_type, first.reason, first.code)
            report = (entry,)
    return Verdict(
        outcome,
        reason,
        failure.result_type if failure else None,
        failure.code if failure else None,
        policy_type,
        report,
    )


_ORDER = (Check.DANE, Check.TLS_1_2, Check.CISCO_VERIFY, Check.CISCO_HOSTED_VERIFY, Check.STS_PKIX)


def _first_failure(ctx: _Context, checks: tuple[Check, ...]) -> _CheckFailure | None:
    # DANE is settled before this runs; the rest in a fixed order (module comment, step 4).
    for check in sorted(checks, key=_ORDER.index):
        failure = None if check is Check.DANE else _run_check(ctx, check)
        if failure is not None:
            return failure
    return None


def _dane_failed(ctx: _Context, req: TlsRequirement, detail: DaneOutcome | None) -> Verdict:
    fallback = req.dane_fallback
    if fallback is not None and fallback.defer_now is None:
        # [INF] knob opportunistic_dane_fail_falls_back: judge under the configured setting.
        return _judge(ctx, fallback, None)
    # RFC 7672 §2.2, docs/gateway-behaviour.md §2.1 rows 3 and 5; docs/requirements.md §1.11:
    # tlsa-invalid. COEX-1: a passing MTA-STS never overrides this.
    result = fallback.defer_now if fallback and fallback.defer_now else ResultType.TLSA_INVALID
    reason = fallback.defer_reason if fallback else f"DANE Failed for MX host {ctx.mx_host}"
    if detail is not None:
        result = detail.result_type or result
        reason = f"{reason}: {detail.reason}"
    return Verdict(Outcome.DEFER, reason, result, None, PolicyType.TLSA)


def _run_check(ctx: _Context, check: Check) -> _CheckFailure | None:
    obs = ctx.observation
    if check is Check.TLS_1_2:
        if obs.protocol in _MODERN:
            return None
        # AMB-33 / CISCO 222782: below TLS 1.2 under enforce or DANE is a validation-failure.
        reason = f"protocol version {obs.protocol or 'unknown'} below TLSv1.2"
        return _CheckFailure(ResultType.VALIDATION_FAILURE, reason, _FLOOR_CODE)
    chain = ctx.chain_verdict()
    if not chain.ok:
        assert chain.result_type is not None and chain.reason is not None
        return _CheckFailure(chain.result_type, chain.reason, chain.reason)
    leaf = chain.chain[0]
    if check is Check.CISCO_VERIFY:
        if cisco_verify_match(leaf, ctx.rcpt_domain, ctx.ptr_host):
            return None
        return _CheckFailure(
            ResultType.CERTIFICATE_HOST_MISMATCH, peer_mismatch_reason(ctx.rcpt_domain)
        )
    if check is Check.CISCO_HOSTED_VERIFY:
        if cisco_hosted_verify_match(leaf, ctx.rcpt_domain, ctx.mx_host, ctx.route_host):
            return None
        return _CheckFailure(
            ResultType.CERTIFICATE_HOST_MISMATCH, peer_mismatch_reason(ctx.rcpt_domain)
        )
    # RFC 8461 §4.2 (CERT-6, CERT-7, CERT-8): a SAN DNS-ID for the MX host.
    if rfc6125_match(leaf, ctx.mx_host):
        return None
    return _CheckFailure(ResultType.CERTIFICATE_HOST_MISMATCH, host_mismatch_reason(ctx.mx_host))
