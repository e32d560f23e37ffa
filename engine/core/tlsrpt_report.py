"""The TLS report document, its file name, its compression and its email (RFC 8460 §4, §5).

Theory of operation
-------------------
:func:`build_report` turns one day's :class:`~engine.core.tlsrpt.PolicySummary`
list for one Policy Domain into the RFC 8460 §4.4 JSON object, as plain dicts
and lists; :func:`report_json` serialises it (I-JSON: UTF-8, no duplicate
names) and :func:`gzip_report` compresses it deterministically. The name the
file travels under comes from :func:`report_filename` (§5.1) and the email
around it from :func:`report_email` (§5.3). Everything is a pure function of
its arguments: no clock, no randomness (the MIME boundary is derived from the
content), so the same inputs give byte-identical reports.

Decisions taken here:

* ``date-range`` (AMB-21): ``start-datetime`` is ``YYYY-MM-DDT00:00:00Z`` and
  ``end-datetime`` is the same day's ``T23:59:59Z``, always with the ``Z``
  zone. Consecutive days' ranges are contiguous and do not overlap. The file
  name's begin and end timestamps are the same two instants (RPT-16).
* ``mx-host`` (AMB-19): an array of the policy's patterns for ``sts``;
  omitted for ``tlsa`` and ``no-policy-found``.
* ``failure-details`` is always present, empty when nothing failed.
* Not done: DKIM signing of report mail (RFC 8460 §3, RPT-10, AMB-23). The
  message returned by :func:`report_email` is unsigned; a signer must add
  the signature (covering ``TLS-Report-Domain`` and ``TLS-Report-Submitter``,
  without ``l=``) before it is sent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import date
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from engine.core.tlsrpt import (
    FailureDetail,
    PolicySummary,
    PolicyType,
    day_bounds,
    domain_alabels,
)

__all__ = [
    "REPORT_MEDIA_TYPE",
    "build_report",
    "gzip_report",
    "report_email",
    "report_filename",
    "report_json",
    "report_subject",
]

REPORT_MEDIA_TYPE = "application/tlsrpt+gzip"
# RFC 8460 §5.1: unique-id = 1*(ALPHA / DIGIT)
_UNIQUE_ID_RE = re.compile(r"[A-Za-z0-9]+")


def _datetime(posix: int) -> str:
    # RFC 8460 §4.4 / RFC 3339: a date-time with its zone (AMB-21: always "Z").
    day, seconds = divmod(posix, 86_400)
    d = date.fromordinal(date(1970, 1, 1).toordinal() + day)
    h, rem = divmod(seconds, 3600)
    return f"{d.isoformat()}T{h:02d}:{rem // 60:02d}:{rem % 60:02d}Z"


def _failure_detail(detail: FailureDetail) -> dict[str, object]:
    key = detail.key
    out: dict[str, object] = {"result-type": key.result_type.value}
    # RFC 8460 §4.4: optional members are omitted, not null.
    for name, value in (
        ("sending-mta-ip", key.sending_mta_ip),
        ("receiving-mx-hostname", key.receiving_mx_hostname),
        ("receiving-mx-helo", key.receiving_mx_helo),
        ("receiving-ip", key.receiving_ip),
    ):
        if value is not None:
            out[name] = value
    out["failed-session-count"] = detail.count
    if key.failure_reason_code is not None:
        out["failure-reason-code"] = key.failure_reason_code
    return out


def _policy_entry(summary: PolicySummary) -> dict[str, object]:
    identity = summary.policy
    policy: dict[str, object] = {
        "policy-type": identity.policy_type.value,
        # RFC 8460 §4.5 / RPT-21: an array, one element per policy line or TLSA RR.
        "policy-string": list(identity.policy_strings),
        "policy-domain": summary.policy_domain,
    }
    if identity.policy_type is PolicyType.STS:
        # AMB-19 (erratum 6241): mx-host is an array of the policy's patterns.
        policy["mx-host"] = list(identity.mx_host)
    return {
        "policy": policy,
        # RFC 8460 §4.4 / RPT-22: both counts are JSON integers.
        "summary": {
            "total-successful-session-count": int(summary.successes),
            "total-failure-session-count": int(summary.failures),
        },
        "failure-details": [_failure_detail(d) for d in summary.details],
    }


def build_report(
    domain: str,
    day: date,
    policies: Sequence[PolicySummary],
    *,
    organization_name: str,
    contact_info: str,
    report_id: str,
) -> dict[str, object]:
    """The RFC 8460 §4.4 report for one Policy Domain and one UTC day.

    Args:
        domain: the Policy Domain (any case, U- or A-labels; written in A-labels).
        day: the UTC day the report covers (RFC 8460 §4.1).
        policies: that day's summaries for ``domain``
            (:meth:`~engine.core.tlsrpt.TlsRptAggregator.pop`); at least one.
        organization_name: the reporting organisation.
        contact_info: an email address for the report's submitter.
        report_id: a unique identifier for this report.

    Returns:
        The report as JSON-ready dicts and lists.

    Raises:
        ValueError: no policies, a summary for another domain, or an empty field.
    """
    name = domain_alabels(domain, "domain")
    if not policies:
        raise ValueError(f"no policies to report for {name!r} on {day.isoformat()}")
    for field, value in (
        ("organization_name", organization_name),
        ("contact_info", contact_info),
        ("report_id", report_id),
    ):
        if not value:
            raise ValueError(f"{field} must not be empty (RFC 8460 §4.4)")
    for s in policies:
        if s.policy_domain != name:
            raise ValueError(f"summary for {s.policy_domain!r} in the report for {name!r}")
    start, end = day_bounds(day)
    return {
        "organization-name": organization_name,
        "date-range": {"start-datetime": _datetime(start), "end-datetime": _datetime(end)},
        "contact-info": contact_info,
        "report-id": report_id,
        # RFC 8460 §4 / RPT-19: an array even with one policy.
        "policies": [_policy_entry(s) for s in policies],
    }


def report_json(report: Mapping[str, object]) -> bytes:
    """The report as UTF-8 JSON bytes (RFC 8460 §4: I-JSON), keys in insertion order."""
    return json.dumps(report, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def gzip_report(report: Mapping[str, object]) -> bytes:
    """The report JSON, gzip-compressed (RFC 8460 §5.2, RPT-13).

    The gzip header's mtime is 0, so the same report always gives the same bytes.
    """
    return gzip.compress(report_json(report), compresslevel=9, mtime=0)


def report_filename(
    submitter: str,
    policy_domain: str,
    begin: int,
    end: int,
    unique_id: str | None = None,
    *,
    compressed: bool = True,
) -> str:
    """The report's file name (RFC 8460 §5.1, RPT-12).

    ``<sender>!<policy-domain>!<begin-timestamp>!<end-timestamp>[!<unique-id>].json[.gz]``

    Args:
        submitter: the reporting domain (written in A-labels).
        policy_domain: the Policy Domain (written in A-labels).
        begin: the report's start, POSIX seconds.
        end: the report's end, POSIX seconds.
        unique_id: letters and digits, or None to leave it out.
        compressed: ``.json.gz`` when True, else ``.json``.

    Returns:
        The file name.

    Raises:
        ValueError: a bad domain, negative or reversed timestamps, or a unique id with
            characters other than letters and digits.
    """
    sender = domain_alabels(submitter, "submitter")
    policy = domain_alabels(policy_domain, "policy_domain")
    if not 0 <= begin <= end:
        raise ValueError(f"bad time range {begin!r}..{end!r}")
    parts = [sender, policy, str(int(begin)), str(int(end))]
    if unique_id is not None:
        if not _UNIQUE_ID_RE.fullmatch(unique_id):
            raise ValueError(f"unique_id {unique_id!r} must be letters and digits (§5.1)")
        parts.append(unique_id)
    # RFC 8460 §5.1: the extension MUST be "json" or "json.gz".
    return "!".join(parts) + (".json.gz" if compressed else ".json")


def report_subject(domain: str, submitter: str, report_id: str) -> str:
    """RFC 8460 §5.3 Subject: ``Report Domain: <d> Submitter: <s> Report-ID: <<id>>``."""
    return f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"


def _report_facts(report: Mapping[str, object]) -> tuple[str, str, str, int, int]:
    policies = report["policies"]
    dr = report["date-range"]
    contact = report["contact-info"]
    report_id = report["report-id"]
    if not (isinstance(policies, list) and policies and isinstance(dr, Mapping)):
        raise ValueError("not a report from build_report: policies or date-range missing")
    if not (isinstance(contact, str) and isinstance(report_id, str)):
        raise ValueError("not a report from build_report: contact-info or report-id missing")
    _local, at, contact_domain = contact.rpartition("@")
    if not at:
        # RFC 8460 §5.3: TLS-Report-Submitter MUST be the domain of contact-info.
        raise ValueError(f"contact-info {contact!r} is not an email address (RPT-11)")
    domain = str(policies[0]["policy"]["policy-domain"])
    start = _posix(str(dr["start-datetime"]))
    end = _posix(str(dr["end-datetime"]))
    return domain, domain_alabels(contact_domain, "contact-info domain"), report_id, start, end


def _posix(text: str) -> int:
    d = date.fromisoformat(text[:10])
    h, m, s = (int(x) for x in text[11:19].split(":"))
    return (d - date(1970, 1, 1)).days * 86_400 + h * 3600 + m * 60 + s


def report_email(
    report: Mapping[str, object],
    *,
    sender: str,
    recipients: Sequence[str],
    now: float,
    unique_id: str | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """The report as an RFC 8460 §5.3 email (unsigned: DKIM is not done here, RPT-10).

    Args:
        report: a report from :func:`build_report`.
        sender: the ``From`` address.
        recipients: the ``To`` addresses (the ``mailto:`` targets).
        now: the ``Date`` header's time (POSIX seconds).
        unique_id: the file name's unique id (letters and digits), or None.
        message_id: the ``Message-ID`` (``<...>``), or None to let the sending MTA add one.

    Returns:
        A ``multipart/report; report-type="tlsrpt"`` message with a text part and the
        gzip report as ``application/tlsrpt+gzip``.

    Raises:
        ValueError: the report lacks a field the headers need, or contact-info is not an
            email address.
    """
    domain, submitter, report_id, start, end = _report_facts(report)
    body = gzip_report(report)
    filename = report_filename(submitter, domain, start, end, unique_id)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(now, usegmt=True)
    if message_id is not None:
        msg["Message-ID"] = message_id
    # RFC 8460 §5.3 / RPT-11: both headers MUST be present; Submitter = contact-info domain.
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg["Subject"] = report_subject(domain, submitter, report_id)
    msg["MIME-Version"] = "1.0"
    text = EmailMessage(policy=SMTP)
    text.set_content(_human_text(report, domain, submitter))
    attachment = EmailMessage(policy=SMTP)
    maintype, subtype = REPORT_MEDIA_TYPE.split("/")
    attachment.set_content(
        body, maintype=maintype, subtype=subtype, disposition="attachment", filename=filename
    )
    for part in (text, attachment):
        del part["MIME-Version"]  # RFC 2045 §4: needed only in the top-level header
    # RFC 8460 §5.3: multipart/report (RFC 6522) with report-type "tlsrpt".
    msg["Content-Type"] = 'multipart/report; report-type="tlsrpt"'
    msg.set_boundary("tlsrpt-" + hashlib.sha256(body).hexdigest()[:32])
    msg.set_payload([text, attachment])
    return msg


def _human_text(report: Mapping[str, object], domain: str, submitter: str) -> str:
    dr = report["date-range"]
    assert isinstance(dr, Mapping)
    policies = report["policies"]
    assert isinstance(policies, list)
    ok = sum(int(p["summary"]["total-successful-session-count"]) for p in policies)
    failed = sum(int(p["summary"]["total-failure-session-count"]) for p in policies)
    return (
        f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain}.\n"
        f"Period: {dr['start-datetime']} to {dr['end-datetime']}\n"
        f"Successful sessions: {ok}\nFailed sessions: {failed}\n"
        f"Report-ID: <{report['report-id']}>\n"
        "The report is attached as application/tlsrpt+gzip.\n"
    )
