"""The scenario model: what a scenario file says, as frozen values.

Theory of operation
-------------------
A scenario is a world (a :class:`~harness.world.spec.WorldSpec`), a sender
configuration (the engine's own TOML layout, kept as a dict so every adapter can
render it its own way), and a list of :class:`Step` s. Each step does exactly one
thing (:class:`StepKind`) and may carry an :class:`Expect`; the scenario may carry
one more :class:`Expect` judged over the whole run. Nothing here runs anything:
:mod:`harness.scenario.loader` builds these values from TOML, :mod:`harness.run`
executes them and :mod:`harness.scenario.assertions` judges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.world.spec import WorldSpec

__all__ = [
    "Capability",
    "DsnPattern",
    "EventPattern",
    "Expect",
    "ExpectedOutcome",
    "ReportPattern",
    "Scenario",
    "SendSpec",
    "Step",
    "StepKind",
    "Verification",
]


class Capability(StrEnum):
    """What an engine under test can do; a scenario's ``requires`` names these."""

    CLOCK = "clock"  # the harness moves the engine's clock (``advance`` steps)
    RESTART = "restart"  # the engine restarts with its policy cache kept
    EVENTS = "events"  # structured events (``events`` / ``no_events`` expectations)
    LOGS = "logs"  # mail_logs lines (``logs`` expectations)
    REPORT = "report"  # per-recipient delivery report (``outcome``, ``verified``)
    FINAL = "final"  # a send can be the last attempt before a bounce (APPLY-6)
    TLSRPT = "tlsrpt"  # a queue and a TLS reporter: reports, DSNs (the gateway adapter)


class StepKind(StrEnum):
    """The one thing a step does."""

    SEND = "send"
    ADVANCE = "advance"
    UPDATE_DOMAIN = "update_domain"
    UPDATE_POLICY = "update_policy"
    SET_DNS = "set_dns"
    ROTATE_CERT = "rotate_cert"
    RESTART_ENGINE = "restart_engine"


class ExpectedOutcome(StrEnum):
    """A recipient's outcome after one attempt (docs/requirements.md §0.3: DLV/DEFER/BOUNCE)."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


class Verification(StrEnum):
    """How the delivering TLS session was authenticated (DLV(mx,A|T|O) of §0.3)."""

    PKIX = "pkix"
    DANE = "dane"
    NONE = "none"  # TLS, certificate not authenticated
    CLEAR = "clear"  # no TLS at all


@dataclass(frozen=True, slots=True)
class SendSpec:
    """One message handed to the engine.

    Attributes:
        mail_from: the envelope sender.
        rcpts: the envelope recipients.
        data: the message bytes (None: the runner writes a small one).
        final: this attempt is the last before the message would bounce (APPLY-6).
    """

    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes | None = None
    final: bool = False


@dataclass(frozen=True, slots=True)
class EventPattern:
    """One expected (or forbidden) event: a code and field matchers.

    A matcher is compared by equality, except a string starting with ``~``, which is
    a regular expression searched in the field's text. A field name with dots walks
    into nested tables and lists (``"failures.0.result_type"``).

    Attributes:
        code: the event code (itself a matcher: ``"~^sts\\\\."`` is allowed).
        fields: field name -> matcher.
    """

    code: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``{code = "x", field = value}``, as it would be written in TOML."""
        parts = [f"code = {self.code!r}"] + [f"{k} = {v!r}" for k, v in self.fields.items()]
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class ReportPattern:
    """One expected TLS report ``policies`` entry, as a scenario's ``reports`` names it.

    Every attribute is optional (None, or empty: not checked). A pattern matches one
    ``policies`` element of one report received by the world (POSTed to the report
    sink, or mailed to an MTA). Strings may be ``~regex`` matchers.

    Attributes:
        via: ``https`` or ``mailto``.
        to: the POST URL, or the mail's envelope recipient.
        policy_domain: ``policy.policy-domain``.
        policy_type: ``policy.policy-type``.
        success: ``summary.total-successful-session-count``.
        failure: ``summary.total-failure-session-count``.
        result_types: the distinct ``failure-details`` result types, sorted (exact).
        mx_host: ``policy.mx-host`` (exact list; ``[]`` also matches an absent field).
        policy_string: ``policy.policy-string`` (exact list).
        failure_reason_code: some failure detail's ``failure-reason-code``.
        content_type: the POST's Content-Type, or the mailed attachment's.
        fields: dotted report paths (``"date-range.start-datetime"``) -> matcher.
        policies: how many ``policies`` entries the report has.
        mail: report-mail facts (``filename``, ``subject``, ``content-type``,
            ``report-type``, ``parts``, any header such as ``TLS-Report-Domain``) ->
            matcher; a pattern with ``mail`` matches mailed reports only.
    """

    via: str | None = None
    to: str | None = None
    policy_domain: str | None = None
    policy_type: str | None = None
    success: int | None = None
    failure: int | None = None
    result_types: tuple[str, ...] | None = None
    mx_host: tuple[str, ...] | None = None
    policy_string: tuple[str, ...] | None = None
    failure_reason_code: str | None = None
    content_type: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    mail: Mapping[str, Any] = field(default_factory=dict)
    policies: int | None = None

    def describe(self) -> str:
        """The pattern as it would be written in TOML."""
        parts = []
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None and value != {}:
                parts.append(f"{name} = {list(value) if isinstance(value, tuple) else value!r}")
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class DsnPattern:
    """An expected delivery status notification (RFC 3464) arriving at an MTA.

    Attributes:
        to: its envelope recipient (the bounced message's sender).
        action: the ``Action`` of a per-recipient block (``failed``, ``delayed``...).
        status: the ``Status`` of that block, or a ``~regex`` (None: any).
        rcpt: the ``Final-Recipient`` address of that block (None: any).
    """

    to: str
    action: str = "failed"
    status: str | None = None
    rcpt: str | None = None

    def describe(self) -> str:
        """The pattern as it would be written in TOML."""
        parts = [f"to = {self.to!r}", f"action = {self.action!r}"]
        parts += [f"{k} = {v!r}" for k, v in (("status", self.status), ("rcpt", self.rcpt)) if v]
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class Expect:
    """What must hold after a step (or over the whole run). Every key is optional.

    Attributes:
        outcome: one outcome for every recipient, or per recipient address.
        via: the MX host that received the message(s).
        tls: the TLS version of the delivering session(s): ``TLSv1.2``/``TLSv1.3``,
            or ``none`` for clear text.
        verified: how the delivery was authenticated.
        no_transaction: hosts that saw no MAIL FROM (the ``¬mx`` of docs/requirements.md).
        in_clear: whether any MAIL/RCPT/DATA went without TLS.
        fetches: policy-host requests, in total (int) or per host.
        queries: ``"name TYPE"`` (or ``"name"``: any type) -> number of DNS queries.
        events: an ordered subsequence of the engine's events.
        no_events: events that must not occur.
        logs: regexes; an ordered subsequence of the mail_logs lines (debug level).
        sni: the SNI of the delivering session(s), or per MX host.
        reports: TLS report ``policies`` entries that must each have been received.
        no_reports: True: no TLS report arrived (by POST or mail).
        dsn: a DSN that must have arrived.
        faults: MX host -> fault patterns (exact, or ``~regex``); each must match a
            fault that host's sessions recorded (``"mail: reset"``), so a scenario
            proves its fault was met.
    """

    outcome: ExpectedOutcome | Mapping[str, ExpectedOutcome] | None = None
    via: str | None = None
    tls: str | None = None
    verified: Verification | None = None
    no_transaction: tuple[str, ...] = ()
    in_clear: bool | None = None
    fetches: int | Mapping[str, int] | None = None
    queries: Mapping[str, int] = field(default_factory=dict)
    events: tuple[EventPattern, ...] = ()
    no_events: tuple[EventPattern, ...] = ()
    logs: tuple[str, ...] = ()
    sni: str | Mapping[str, str] | None = None
    reports: tuple[ReportPattern, ...] = ()
    no_reports: bool | None = None
    dsn: DsnPattern | None = None
    faults: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing is expected."""
        return self == Expect()


@dataclass(frozen=True, slots=True)
class Step:
    """One step: exactly one action, and what must hold afterwards.

    Attributes:
        index: 0-based position in the scenario.
        kind: the action.
        args: the action's arguments: a :class:`SendSpec` (send), seconds as float
            (advance), ``True`` (restart_engine), or a dict of keyword arguments for
            the world mutation.
        expect: what must hold after it.
        label: a short human description (``"send rcpt@example.com"``).
    """

    index: int
    kind: StepKind
    args: Any
    expect: Expect = field(default_factory=Expect)
    label: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scenario file.

    Attributes:
        id: unique id (default: the file's stem).
        title: one line.
        path: the file it came from.
        topic: the pytest marker (default: the parent directory's name).
        covers: requirement IDs and ``seed:`` tags.
        requires: capabilities the engine must have, else the scenario is skipped.
        description: free text.
        world: the world.
        world_table: the ``[world]`` table as written (for ``show`` and reports).
        sender: the ``[sender]`` table (engine configuration, engine's own layout).
        steps: the steps.
        expect: what must hold over the whole run.
        config_error: ``[expect] config_error``: the engine must refuse the ``[sender]``
            configuration with a message matching this (``~regex``, else a substring);
            no step runs. None for every other scenario.
    """

    id: str
    title: str
    path: Path
    topic: str
    covers: tuple[str, ...]
    requires: frozenset[Capability]
    description: str
    world: WorldSpec
    world_table: Mapping[str, Any]
    sender: Mapping[str, Any]
    steps: tuple[Step, ...]
    expect: Expect = field(default_factory=Expect)
    config_error: str | None = None
