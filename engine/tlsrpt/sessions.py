"""From one ``tls.session`` event to the RFC 8460 session results it counts as.

Theory of operation
-------------------
A session is judged against every policy that applied to it, and each gives
one result (RFC 8460 §4.4; AMB-22: the unit is the SMTP session):

* ``sts``: the recipient domain had an ``enforce`` or ``testing`` policy; the
  policy strings and mx patterns come from the cached policy (:meth:`Policy.lines`,
  RFC 8460 §4.5), taken when the event is seen;
* ``tlsa``: DANE applied; the Policy Domain is the TLSA base domain (AMB-18),
  the strings are the TLSA RRs in presentation form (``3 1 1 HEX``, AMB-20), the
  RRset the session was judged against, as the event carries it (no new lookup);
* ``no-policy-found``: neither (RPT-28); also for an MTA-STS ``none`` policy,
  whose failures are not reportable (RPT-24); but not for a session that applied
  no policy *because* the policy could not be fetched (below).

A failure entry of the event belongs to the policy type it names; one without
a type goes to the policy that applied. Sessions that carried report mail are
dropped here already (RFC 8460 §3, RPT-9).

Policy fetch failures (RFC 8461 §6, RPT-24) are not SMTP sessions and the gateway
hands the reporter only ``tls.session`` events, so they are taken from the policy
store: when a session is noted, the domain's last failed fetch (kept for the
FETCH-15 throttle until a fetch succeeds) rides along, and
:func:`fetch_failure_result` turns it into one ``sts`` failure
(``sts-policy-fetch-error``, ``sts-policy-invalid`` or ``sts-webpki-invalid``, the
failure's detail as ``failure-reason-code``). How it counts (AMB-22: one result per
session and policy):

* the session applied no MTA-STS policy because none could be had: the session *is*
  that failure, dated when the session ran, and nothing else on the MTA-STS side (it
  used to count a second time, as a ``no-policy-found`` success);
* a cached policy applied (the failed fetch was a refresh, RPT-24 / FETCH-18): the
  session counts under that policy, and the reporter adds the failed fetch once, as
  a failure of its own, dated when the fetch failed (:func:`session_counts_fetch`).

A failure while a valid ``none`` policy is cached is not reportable (RPT-24) and
is not noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.core.cache import PolicyStore
from engine.core.events import LogEvent
from engine.core.policy import Mode
from engine.core.tlsrpt import PolicyType, SessionResult

__all__ = [
    "FetchFailureNote",
    "SessionNote",
    "fetch_failure_result",
    "note_from_event",
    "session_counts_fetch",
    "session_results",
    "tlsa_strings",
]


@dataclass(frozen=True, slots=True)
class FetchFailureNote:
    """A domain's last failed policy fetch, as seen when a session was noted."""

    result_type: str
    failed_at: float
    detail: str

    def key(self, domain: str) -> str:
        """Identifies the failed fetch, so that it is counted once."""
        return f"{domain}|{self.failed_at!r}"


@dataclass(frozen=True, slots=True)
class SessionNote:
    """A ``tls.session`` event with the MTA-STS policy that was cached when it happened."""

    fields: Mapping[str, object]
    at: float
    sts_lines: tuple[str, ...] = ()
    sts_mx: tuple[str, ...] = ()
    fetch_failure: FetchFailureNote | None = None


def note_from_event(event: LogEvent, store: PolicyStore) -> SessionNote | None:
    """Note a session for reporting, or None for one that carried report mail (RPT-9).

    The event's ``report_mail`` field says so: the delivery marks every session of
    a TLS report's delivery (RFC 8460 §3: such sessions are never counted).
    """
    if event.fields.get("report_mail"):
        return None
    f = event.fields
    domain = str(f.get("domain", ""))
    lines: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()
    cached = store.get(domain) if domain else None
    if f.get("sts_mode") in ("enforce", "testing") and cached is not None:
        lines = tuple(cached.policy.lines())
        mx = tuple(str(p) for p in cached.policy.mx)
    failed = store.get_failure(domain) if domain else None
    fetch = None
    if failed is not None:
        # RPT-24: not reportable while a valid `none` policy is cached.
        none_cached = (
            cached is not None and cached.is_valid(event.at) and cached.policy.mode is Mode.NONE
        )
        if not none_cached:
            fetch = FetchFailureNote(str(failed.result_type), failed.failed_at, failed.detail)
            if cached is not None and cached.policy.mode is not Mode.NONE and not lines:
                lines = tuple(cached.policy.lines())
                mx = tuple(str(p) for p in cached.policy.mx)
    return SessionNote(dict(f), event.at, lines, mx, fetch)


def session_counts_fetch(note: SessionNote) -> bool:
    """Whether the session itself counts as its failed fetch (no policy applied).

    Then :func:`session_results` reports the failure, dated with the session; else
    a failed fetch riding on the note is the reporter's to add once.
    """
    return note.fetch_failure is not None and note.fields.get("sts_mode") not in (
        "enforce",
        "testing",
    )


def fetch_failure_result(note: SessionNote, *, at: float | None = None) -> SessionResult | None:
    """The ``sts`` failure a noted failed policy fetch counts as (RFC 8461 §6, RPT-24).

    The policy strings are those of the cached policy, if one is known, else empty.
    Returns None when the note carries no fetch failure, or one the core refuses.

    Args:
        note: the noted session.
        at: the time the failure counts at (default: when the fetch failed).
    """
    failed = note.fetch_failure
    if failed is None:
        return None
    try:
        return SessionResult(
            policy_domain=str(note.fields.get("domain", "")),
            policy_type=PolicyType.STS,
            policy_strings=note.sts_lines,
            mx_host=note.sts_mx,
            success=False,
            at=failed.failed_at if at is None else at,
            result_type=failed.result_type,  # type: ignore[arg-type]
            failure_reason_code=failed.detail[:200] or None,
        )
    except ValueError:
        return None


def tlsa_strings(fields: Mapping[str, object]) -> tuple[str, ...]:
    """The session's TLSA RRset as sorted ``"u s m HEX"`` strings (AMB-20).

    They are the records the session was judged against, carried by the event (the
    owner ``_<port>._tcp.<base>`` at the port really used, DANE-17): looking them up
    again afterwards would cost a query per session and could see other records.
    """
    raw = fields.get("tlsa") or []
    return tuple(sorted(str(t) for t in raw)) if isinstance(raw, list | tuple) else ()


def _failure_for(
    failures: list[Mapping[str, object]], kind: str, default: bool
) -> Mapping[str, object] | None:
    for entry in failures:
        ptype = entry.get("policy_type")
        if (ptype == kind or (ptype is None and default)) and entry.get("result_type"):
            return entry
    return None


def _result(
    note: SessionNote,
    domain: str,
    ptype: PolicyType,
    failure: Mapping[str, object] | None,
    strings: tuple[str, ...] = (),
    mx: tuple[str, ...] = (),
) -> SessionResult:
    f = note.fields
    if failure is None:
        return SessionResult(
            policy_domain=domain,
            policy_type=ptype,
            policy_strings=strings,
            mx_host=mx,
            success=True,
            at=note.at,
        )
    reason = failure.get("reason_code")
    return SessionResult(
        policy_domain=domain,
        policy_type=ptype,
        policy_strings=strings,
        mx_host=mx,
        success=False,
        at=note.at,
        result_type=str(failure["result_type"]),  # type: ignore[arg-type]
        sending_mta_ip=str(f.get("sending_ip") or "") or None,
        receiving_mx_hostname=str(f.get("mx") or "") or None,
        receiving_ip=str(f.get("receiving_ip") or "") or None,
        failure_reason_code=str(reason) if reason else None,
    )


def session_results(note: SessionNote) -> list[SessionResult]:
    """The results one noted session counts as (see the module comment).

    Results the core refuses (a result type foreign to the policy type, a catch-all
    type without a reason code) are left out rather than guessed.
    """
    f = note.fields
    domain = str(f.get("domain", ""))
    raw = f.get("failures") or []
    failures = [x for x in raw if isinstance(x, Mapping)] if isinstance(raw, list) else []
    sts = f.get("sts_mode") in ("enforce", "testing")
    dane = bool(f.get("dane")) and bool(f.get("tlsa_base"))
    out: list[SessionResult] = []
    try:
        if dane:
            base = str(f["tlsa_base"])
            out.append(
                _result(
                    note,
                    base,
                    PolicyType.TLSA,
                    _failure_for(failures, "tlsa", not sts),
                    tlsa_strings(f),
                )
            )
        if sts:
            fail = _failure_for(failures, "sts", True)
            out.append(_result(note, domain, PolicyType.STS, fail, note.sts_lines, note.sts_mx))
        elif session_counts_fetch(note):
            # RFC 8461 §6: no policy because it could not be fetched. The session is that
            # failure, once; it is not also a no-policy-found success.
            fetched = fetch_failure_result(note, at=note.at)
            if fetched is not None:
                out.append(fetched)
        elif not dane:
            fail = _failure_for(failures, "no-policy-found", True)
            out.append(_result(note, domain, PolicyType.NO_POLICY_FOUND, fail))
    except ValueError:
        return out
    return out
