"""TLS reporting (RFC 8460): session results, daily aggregation, destinations, timing.

Theory of operation
-------------------
Every SMTP session the gateway attempts under a policy (or under none, for a
domain that publishes ``_smtp._tls``) ends in one :class:`SessionResult`: a
success, or a failure with exactly one registered result type (RFC 8460 §4.3,
mapping in docs/requirements.md §1.11). The gateway hands results to a
:class:`TlsRptAggregator`, which keeps one bucket per

    (policy domain, UTC day, policy identity)

where the identity is the policy type, the policy strings and the mx patterns
(:class:`PolicyIdentity`): a policy that changes during the day gives a second
``policies`` entry in that day's report, as RFC 8460 §4.4 intends. Inside a
bucket, successes are a count and failures are counted per *failure-details
key* (result type, sending IP, receiving host name, receiving IP, HELO, reason
code; RFC 8460 §4.4). Report mail itself is never counted (RFC 8460 §3, RPT-9,
AMB-22), so the report about day D does not describe its own delivery.

The aggregator is a plain value holder: :meth:`TlsRptAggregator.to_dict` /
:meth:`TlsRptAggregator.from_dict` round-trip it through JSON-ready dicts, and
the gateway persists those; nothing here reads the clock or does I/O. The
report document itself is built by :mod:`engine.core.tlsrpt_report`.

Counting unit (AMB-22): one result per SMTP session, not per message or
recipient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum

from engine.core.errors import MxPatternError
from engine.core.events import ResultType
from engine.core.mx import is_domain, normalize_host

__all__ = [
    "DAY_SECONDS",
    "FailureDetail",
    "FailureKey",
    "PolicyIdentity",
    "PolicySummary",
    "PolicyType",
    "SessionResult",
    "TlsRptAggregator",
    "day_bounds",
    "domain_alabels",
    "utc_day",
]

DAY_SECONDS = 86_400
_EPOCH = date(1970, 1, 1)


class PolicyType(StrEnum):
    """RFC 8460 §4.4 ``policy-type`` values."""

    STS = "sts"
    TLSA = "tlsa"
    NO_POLICY_FOUND = "no-policy-found"


# docs/requirements.md §1.11: which result types belong to which policy type.
_STS_ONLY = frozenset(
    {
        ResultType.STS_POLICY_FETCH_ERROR,
        ResultType.STS_POLICY_INVALID,
        ResultType.STS_WEBPKI_INVALID,
    }
)
_TLSA_ONLY = frozenset(
    {ResultType.TLSA_INVALID, ResultType.DNSSEC_INVALID, ResultType.DANE_REQUIRED}
)
# RFC 8460 §4.3 / RPT-23, AMB-17: these two need a failure-reason-code to mean anything.
_NEEDS_REASON = frozenset({ResultType.VALIDATION_FAILURE, ResultType.CERTIFICATE_NOT_TRUSTED})


def utc_day(at: float) -> date:
    """The UTC calendar day containing the POSIX time ``at``."""
    return _EPOCH + timedelta(days=int(at // DAY_SECONDS))


def day_bounds(day: date) -> tuple[int, int]:
    """The first and the last whole second of ``day`` (UTC), as POSIX seconds.

    RFC 8460 §4.1 / RPT-17: a report covers one full UTC day. The end is the day's last
    second (``23:59:59``), so consecutive ranges are contiguous and never overlap (AMB-21).
    """
    start = (day - _EPOCH).days * DAY_SECONDS
    return start, start + DAY_SECONDS - 1


def domain_alabels(value: str, what: str = "domain") -> str:
    """``value`` as a lower-case A-label domain (RFC 8460 §4.4, §5.1: domains in A-labels).

    Args:
        value: a domain in any case, U-labels or A-labels, with or without the root dot.
        what: what the value is, for the error message.

    Returns:
        The normalised name.

    Raises:
        ValueError: ``value`` is not a domain name.
    """
    try:
        name = normalize_host(value)
    except MxPatternError as exc:
        raise ValueError(f"{what} {value!r} is not a domain name: {exc.reason}") from exc
    if not is_domain(name):
        raise ValueError(f"{what} {value!r} is not a domain name")
    return name


@dataclass(frozen=True, slots=True)
class PolicyIdentity:
    """What a report's ``policy`` object says: the type, the strings and the mx patterns.

    Attributes:
        policy_type: ``sts``, ``tlsa`` or ``no-policy-found``.
        policy_strings: for ``sts`` the policy lines (:meth:`Policy.lines`, RFC 8460 §4.5);
            for ``tlsa`` one presentation-form RDATA string per record (``"3 1 1 HEX"``,
            AMB-20); empty for ``no-policy-found``.
        mx_host: the policy's ``mx`` patterns for ``sts`` (AMB-19); empty otherwise.

    Raises:
        ValueError: mx patterns given for a non-``sts`` policy, or strings for
            ``no-policy-found``.
    """

    policy_type: PolicyType
    policy_strings: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_type", PolicyType(self.policy_type))
        object.__setattr__(self, "policy_strings", tuple(self.policy_strings))
        object.__setattr__(self, "mx_host", tuple(self.mx_host))
        # AMB-19: mx-host describes an STS policy only.
        if self.mx_host and self.policy_type is not PolicyType.STS:
            raise ValueError(f"mx_host {self.mx_host!r} given for a {self.policy_type} policy")
        if self.policy_strings and self.policy_type is PolicyType.NO_POLICY_FOUND:
            raise ValueError(f"policy_strings {self.policy_strings!r} given for no-policy-found")


@dataclass(frozen=True, slots=True)
class FailureKey:
    """The fields that group failed sessions into one ``failure-details`` entry (§4.4)."""

    result_type: ResultType
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_ip: str | None = None
    receiving_mx_helo: str | None = None
    failure_reason_code: str | None = None

    def sort_key(self) -> tuple[str, ...]:
        """A total order with None first (None does not compare with str)."""
        return (
            self.result_type.value,
            *("" if v is None else "\x01" + v for v in self._optional()),
        )

    def _optional(self) -> tuple[str | None, ...]:
        return (
            self.sending_mta_ip,
            self.receiving_mx_hostname,
            self.receiving_ip,
            self.receiving_mx_helo,
            self.failure_reason_code,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResult:
    """The TLS outcome of one SMTP session (or one policy fetch) for reporting.

    Attributes:
        policy_domain: the Policy Domain (RFC 8460 §1.1); stored in lower-case A-labels.
        policy_type: ``sts``, ``tlsa`` or ``no-policy-found``.
        policy_strings: see :class:`PolicyIdentity`.
        mx_host: see :class:`PolicyIdentity`.
        success: the session met the policy.
        at: when the session ended (POSIX seconds); picks the report day.
        result_type: the failure's registered result type (failures only).
        sending_mta_ip: our address for the session (failures only).
        receiving_mx_hostname: the MX host name (failures only).
        receiving_ip: the address connected to (failures only).
        receiving_mx_helo: the receiver's EHLO name, if known (failures only).
        failure_reason_code: free text; required with ``validation-failure`` and
            ``certificate-not-trusted`` (RPT-23, AMB-17).
        is_report_mail: the session carried a TLS report; never counted (RPT-9, AMB-22).

    Raises:
        ValueError: a failure without a result type or a required reason code, failure
            fields on a success, a result type foreign to the policy type, or a bad domain.
    """

    policy_domain: str
    policy_type: PolicyType
    policy_strings: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()
    success: bool
    at: float
    result_type: ResultType | None = None
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_ip: str | None = None
    receiving_mx_helo: str | None = None
    failure_reason_code: str | None = None
    is_report_mail: bool = False
    _policy: PolicyIdentity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # RFC 8460 §4.4 / RPT-20: policy-domain is in A-labels.
        object.__setattr__(
            self, "policy_domain", domain_alabels(self.policy_domain, "policy_domain")
        )
        identity = PolicyIdentity(self.policy_type, self.policy_strings, self.mx_host)
        object.__setattr__(self, "_policy", identity)
        object.__setattr__(self, "policy_type", identity.policy_type)
        object.__setattr__(self, "policy_strings", identity.policy_strings)
        object.__setattr__(self, "mx_host", identity.mx_host)
        if self.success:
            if self.result_type is not None or self.failure_reason_code is not None:
                raise ValueError(f"a successful session has result_type {self.result_type!r}")
            return
        if self.result_type is None:
            raise ValueError("a failed session needs a result_type (RFC 8460 §4.3)")
        result = ResultType(self.result_type)
        object.__setattr__(self, "result_type", result)
        if result in _STS_ONLY and self.policy_type is not PolicyType.STS:
            raise ValueError(f"result type {result.value!r} belongs to sts, not {self.policy_type}")
        if result in _TLSA_ONLY and self.policy_type is not PolicyType.TLSA:
            raise ValueError(
                f"result type {result.value!r} belongs to tlsa, not {self.policy_type}"
            )
        if result in _NEEDS_REASON and not self.failure_reason_code:
            # RPT-23 (SHOULD) made strict, AMB-17: the catch-all types say nothing alone.
            raise ValueError(f"result type {result.value!r} needs a failure_reason_code (RPT-23)")

    @property
    def policy(self) -> PolicyIdentity:
        """The policy this session was judged against."""
        return self._policy

    def failure_key(self) -> FailureKey:
        """The ``failure-details`` grouping key of a failed session.

        Raises:
            ValueError: the session succeeded.
        """
        if self.result_type is None:
            raise ValueError("a successful session has no failure key")
        return FailureKey(
            self.result_type,
            self.sending_mta_ip,
            self.receiving_mx_hostname,
            self.receiving_ip,
            self.receiving_mx_helo,
            self.failure_reason_code,
        )


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One ``failure-details`` entry: a key and its ``failed-session-count``."""

    key: FailureKey
    count: int


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """One element of a report's ``policies`` array (RFC 8460 §4.4).

    Attributes:
        policy_domain: the Policy Domain (A-labels).
        policy: the policy identity.
        successes: ``total-successful-session-count``.
        failures: ``total-failure-session-count`` (the sum of the details' counts).
        details: the failure details, in a stable order.
    """

    policy_domain: str
    policy: PolicyIdentity
    successes: int
    failures: int
    details: tuple[FailureDetail, ...] = ()


_BucketKey = tuple[str, date, PolicyIdentity]


class _Bucket:
    __slots__ = ("failures", "successes")

    def __init__(self) -> None:
        self.successes = 0
        self.failures: dict[FailureKey, int] = {}


class TlsRptAggregator:
    """Counts session results per (policy domain, UTC day, policy identity).

    Report mail sessions are dropped on entry (RFC 8460 §3, RPT-9, AMB-22).
    """

    def __init__(self) -> None:
        self._buckets: dict[_BucketKey, _Bucket] = {}

    def add(self, result: SessionResult) -> bool:
        """Count one session.

        Args:
            result: the session's outcome.

        Returns:
            False when the result was not counted (report mail), else True.
        """
        if result.is_report_mail:
            # RFC 8460 §3: the report's own delivery "SHOULD NOT" be in the next report.
            return False
        key = (result.policy_domain, utc_day(result.at), result.policy)
        bucket = self._buckets.setdefault(key, _Bucket())
        if result.success:
            bucket.successes += 1
        else:
            fkey = result.failure_key()
            bucket.failures[fkey] = bucket.failures.get(fkey, 0) + 1
        return True

    def add_all(self, results: Iterable[SessionResult]) -> int:
        """Count several sessions; returns how many were counted."""
        return sum(self.add(r) for r in results)

    def days(self) -> list[tuple[str, date]]:
        """Every (policy domain, UTC day) with data, sorted."""
        return sorted({(d, day) for d, day, _ in self._buckets})

    def summaries(self, policy_domain: str, day: date) -> list[PolicySummary]:
        """The ``policies`` entries for one domain and day, in a stable order."""
        domain = domain_alabels(policy_domain, "policy_domain")
        out = []
        for (d, dd, identity), bucket in self._buckets.items():
            if d != domain or dd != day:
                continue
            details = tuple(
                FailureDetail(k, n)
                for k, n in sorted(bucket.failures.items(), key=lambda kv: kv[0].sort_key())
            )
            failures = sum(bucket.failures.values())
            out.append(PolicySummary(d, identity, bucket.successes, failures, details))
        out.sort(key=lambda s: (s.policy.policy_type.value, s.policy.policy_strings))
        return out

    def pop(self, policy_domain: str, day: date) -> list[PolicySummary]:
        """Return and forget one domain's data for one day (after its report is built)."""
        out = self.summaries(policy_domain, day)
        for s in out:
            del self._buckets[(s.policy_domain, day, s.policy)]
        return out

    def to_dict(self) -> dict[str, object]:
        """The aggregator's state as JSON-ready data (see :meth:`from_dict`)."""
        buckets = []
        for domain, day in self.days():
            for s in self.summaries(domain, day):
                buckets.append(
                    {
                        "policy_domain": domain,
                        "day": day.isoformat(),
                        "policy_type": s.policy.policy_type.value,
                        "policy_strings": list(s.policy.policy_strings),
                        "mx_host": list(s.policy.mx_host),
                        "successes": s.successes,
                        "failures": [_detail_dict(d) for d in s.details],
                    }
                )
        return {"version": 1, "buckets": buckets}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TlsRptAggregator:
        """Rebuild an aggregator from :meth:`to_dict` output.

        Raises:
            ValueError: the data is not in the :meth:`to_dict` format.
        """
        if data.get("version") != 1 or not isinstance(data.get("buckets"), list):
            raise ValueError(f"not a TlsRptAggregator state: {data!r:.80}")
        agg = cls()
        buckets = data["buckets"]
        assert isinstance(buckets, list)
        try:
            for b in buckets:
                identity = PolicyIdentity(
                    PolicyType(b["policy_type"]), tuple(b["policy_strings"]), tuple(b["mx_host"])
                )
                key = (
                    domain_alabels(b["policy_domain"], "policy_domain"),
                    date.fromisoformat(b["day"]),
                )
                bucket = agg._buckets.setdefault((*key, identity), _Bucket())
                bucket.successes += int(b["successes"])
                for f in b["failures"]:
                    fkey = FailureKey(
                        ResultType(f["result-type"]),
                        *(f.get(name) for name in _DETAIL_FIELDS),
                    )
                    bucket.failures[fkey] = bucket.failures.get(fkey, 0) + int(f["count"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a TlsRptAggregator state: {exc!r}") from exc
        return agg


_DETAIL_FIELDS = (
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-ip",
    "receiving-mx-helo",
    "failure-reason-code",
)


def _detail_dict(detail: FailureDetail) -> dict[str, object]:
    out: dict[str, object] = {"result-type": detail.key.result_type.value}
    out.update(zip(_DETAIL_FIELDS, detail.key._optional(), strict=True))
    out["count"] = detail.count
    return out
