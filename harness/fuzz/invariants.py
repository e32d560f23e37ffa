"""The invariants every run must keep, judged from what the world observed.

Theory of operation
-------------------
:func:`check_run` takes a finished :class:`~harness.fuzz.driver.FuzzRun` and returns
one :class:`Violation` per broken rule (empty: the run is fine). The facts come from
:mod:`harness.fuzz.oracle` (the spec alone); the evidence comes from the receiving
MTAs' session records and mailboxes. The engine's own report is used only where the
rule is *about* the report: the per-recipient outcome must agree with the
mailboxes, and every failure must have its one log line.

=====================  ==================================================================
invariant              holds when
=====================  ==================================================================
``sts-enforce-mx``     under a certain ``enforce`` policy, no MAIL FROM reaches an MX the
                       patterns do not admit (RFC 8461 §4.1, §5; MX-1, APPLY-1), unless
                       DANE authenticated it and ``coexistence = "dane-precedence"``
``sts-enforce-tls``    ... and none goes in clear or over a certificate that does not
                       verify for the MX host (CERT-1..8), unless DANE authenticated it
                       (AMB-24, not with ``literal``); SNI is the MX host (CERT-10)
``dane-usable``        usable secure TLSA: MAIL only over TLS with a matching certificate,
                       SNI the TLSA base (RFC 7672 §2.2, §3; DANE-6, DANE-33, DANE-35)
``dane-unusable``      only unusable secure TLSA: never in clear (DANE-7, DANE-19)
``dane-tlsa-error``    a TLSA lookup error: no MAIL at that host (DANE-5, COEX-3)
``dane-mandatory``     Mandatory DANE: MAIL only at a host DANE authenticated (DANE-9, -34)
``tls-setting``        TLS No never sends STARTTLS; Required* never sends in clear;
                       Required-Verify* only over a chain to the trusted root
``no-message-lost``    each recipient is delivered (in exactly one mailbox, at the MX the
                       engine names), or deferred (in none), or bounced (in none, after a
                       5yz the world sent for it: to its RCPT, to DATA after it, or, for
                       the whole transaction, to MAIL FROM at one of its domain's MX
                       hosts); never in two mailboxes
``failure-explained``  every recipient not delivered has exactly one ``Delayed`` or
                       ``Bounced`` log line naming it, with its reason; delivered ones none
``clean-path-delivers`` when some MX lets the message through by every rule (reachable,
                       STARTTLS, a certificate that verifies, permitted, DANE satisfied,
                       no scripted refusal anywhere), every recipient is delivered
                       (MX-2, MX-3, APPLY-2, DANE-4: a valid path is never refused)
``healthy-mx-reached`` when a permitted healthy MX exists (as for ``clean-path-delivers``)
                       and the attempt met transport faults elsewhere (the MTAs recorded
                       resets, stalls, broken replies, broken handshakes, 4yz ...), every
                       recipient is delivered in the same attempt, unless an MX refused it
                       permanently first (a 5yz at MAIL, its RCPT or DATA: it may bounce).
                       RFC 5321 §5.1 (try each MX until one succeeds), §4.2.5 (a lost
                       connection is a 451); MX-8, APPLY-2, DANE-4
``smtp-conformance``   the receiving MTAs noted no protocol error from the client
``run-completes``      neither the engine nor the world raised
=====================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from harness.fuzz.driver import FuzzRun
from harness.fuzz.oracle import DestinationFacts, HostFacts, destination_facts
from harness.world.mta.records import MtaSession
from harness.world.mta.script import Script

__all__ = ["INVARIANTS", "Invariant", "Violation", "check_run"]


@dataclass(frozen=True, slots=True)
class Invariant:
    """One rule: its id, one line, and the requirement IDs it covers."""

    id: str
    title: str
    covers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant in one run.

    Attributes:
        invariant: the :class:`Invariant` id.
        detail: what the world (or the log) showed.
        host: the MX host concerned, if any.
        rcpt: the recipient concerned, if any.
    """

    invariant: str
    detail: str
    host: str | None = None
    rcpt: str | None = None

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


_LIST = (
    Invariant(
        "sts-enforce-mx",
        "enforce: never an MX the policy does not permit",
        ("MX-1", "MX-2", "MX-3", "APPLY-1"),
    ),
    Invariant(
        "sts-enforce-tls",
        "enforce: never in clear or over an unverified certificate",
        ("CERT-1", "CERT-2", "CERT-3", "CERT-6", "CERT-10", "APPLY-10"),
    ),
    Invariant(
        "dane-usable",
        "usable DANE: only over TLS the TLSA records authenticate",
        ("DANE-6", "DANE-33", "DANE-35", "COEX-1"),
    ),
    Invariant("dane-unusable", "unusable secure TLSA: never in clear", ("DANE-7", "DANE-19")),
    Invariant("dane-tlsa-error", "a TLSA lookup error: the host is not used", ("DANE-5", "COEX-3")),
    Invariant(
        "dane-mandatory", "Mandatory DANE: only DANE-authenticated hosts", ("DANE-9", "DANE-34")
    ),
    Invariant(
        "tls-setting",
        "the TLS setting's floor holds",
        ("seed:tls-no-success", "seed:tls-required-failure"),
    ),
    Invariant(
        "no-message-lost",
        "delivered once, or deferred, or bounced after a 5yz",
        ("MX-6", "APPLY-7"),
    ),
    Invariant(
        "failure-explained",
        "every failure has exactly one log line",
        ("seed:log:delayed", "seed:log:bounced"),
    ),
    Invariant(
        "clean-path-delivers",
        "a world with a clean path delivers",
        ("MX-2", "MX-3", "APPLY-2", "DANE-4"),
    ),
    Invariant(
        "healthy-mx-reached",
        "a permitted healthy MX: delivered in the same attempt, whatever else breaks",
        ("MX-8", "APPLY-2", "DANE-4"),
    ),
    Invariant("smtp-conformance", "the receiving MTAs saw no protocol error", ()),
    Invariant("run-completes", "the engine and the world did not raise", ()),
)
#: Every invariant by id.
INVARIANTS = {i.id: i for i in _LIST}
# Probing STARTTLS that was not advertised is a deliberate choice some senders make
# (DANE-19's MITM case); the fake MTA notes it, we do not count it.
_TOLERATED = ("client sent STARTTLS although it was not advertised",)


def _mailed(s: MtaSession) -> bool:
    return bool(s.transactions)


def _clear(s: MtaSession) -> bool:
    return s.in_clear or any(not t.over_tls for t in s.transactions)


def _session_checks(f: DestinationFacts, h: HostFacts, s: MtaSession) -> Iterator[Violation]:
    p, where = f.profile, f"session {s.session_id} at {h.name}"
    if p.tls == "no" and s.starttls_attempted:
        yield Violation("tls-setting", f"TLS No, but STARTTLS was sent ({where})", h.name)
    dane_binds = p.dane_on and not (p.dane == "opportunistic" and p.dane_falls_back)
    # SNI is owed under a policy (CERT-10) or usable DANE the sender applies (RFC 7672
    # §8.1); a sender with DANE off owes nothing to TLSA records (postfix-sts at `may`).
    if s.tls_completed and (f.enforce or (h.dane == "usable" and dane_binds)) and s.sni != h.name:
        inv = "sts-enforce-tls" if f.enforce else "dane-usable"
        yield Violation(inv, f"SNI {s.sni!r}, not the MX host ({where})", h.name)
    if not _mailed(s):
        return
    clear, dane_ok = _clear(s), h.dane_pass_possible(p)
    if f.enforce:
        if not h.permitted and not (dane_ok and p.coexistence == "dane-precedence"):
            yield Violation("sts-enforce-mx", f"MAIL FROM at {h.name}, not in the policy", h.name)
        if clear:
            yield Violation("sts-enforce-tls", f"MAIL FROM in clear ({where})", h.name)
        elif not h.pkix_ok and not (dane_ok and p.coexistence != "literal"):
            yield Violation(
                "sts-enforce-tls",
                f"MAIL FROM over certificate {s.cert_served!r}, which does not verify for "
                f"{h.name} ({where})",
                h.name,
            )
    if dane_binds:
        if h.dane == "usable" and (clear or not h.dane_match):
            how = "in clear" if clear else "over a certificate no TLSA record matches"
            yield Violation("dane-usable", f"MAIL FROM {how} ({where})", h.name)
        if h.dane == "unusable" and clear:
            yield Violation("dane-unusable", f"MAIL FROM in clear ({where})", h.name)
        if h.dane == "error":
            yield Violation(
                "dane-tlsa-error", f"MAIL FROM after a TLSA lookup error ({where})", h.name
            )
    dane_authenticated = f.mx_secure and h.dane == "usable" and h.dane_match
    if p.dane == "mandatory" and p.tls != "no" and not dane_authenticated:
        yield Violation(
            "dane-mandatory", f"MAIL FROM without DANE authentication ({where})", h.name
        )
    if p.tls.startswith("required") and clear:
        yield Violation("tls-setting", f"TLS {p.tls}, MAIL FROM in clear ({where})", h.name)
    if p.tls.startswith("required-verify") and not clear and not (h.chains or dane_ok):
        yield Violation(
            "tls-setting",
            f"TLS {p.tls}, MAIL FROM over certificate {s.cert_served!r} that does not chain "
            f"to the trusted root ({where})",
            h.name,
        )
    for error in s.protocol_errors:
        if error not in _TOLERATED:
            yield Violation("smtp-conformance", f"{error} ({where})", h.name)


def _permanent_reply(run: FuzzRun, rcpt: str, hosts: Collection[str] | None = None) -> bool:
    """The world sent a 5yz that concerns ``rcpt``.

    A 5yz to its RCPT, or to DATA after its RCPT was accepted, concerns that one
    recipient; a 5yz to MAIL FROM refuses the whole transaction (RFC 5321 §4.1.1.2:
    no RCPT follows it), so it concerns every recipient bound for that MX. A 5yz to
    the greeting or EHLO does not: the client can still try the next MX (§5.1; the
    catalog's ``transport-ehlo-5xx``). ``hosts`` are the recipient domain's MX hosts
    (None: any session may concern it).
    """
    for s in run.sessions:
        if hosts is not None and s.mx_host not in hosts:
            continue
        for t in s.transactions:
            if (t.mail_reply or "").startswith("5"):
                return True
            mine = [r for r in t.rcpts if r.address.lower() == rcpt]
            if any((r.reply or "").startswith("5") for r in mine):
                return True
            if any(r.accepted for r in mine) and (t.data_reply or "").startswith("5"):
                return True
    return False


def _outcome_checks(run: FuzzRun, rcpt: str, hosts: Collection[str] | None) -> Iterator[Violation]:
    held = [m.mx_host for m in run.messages if rcpt in (r.lower() for r in m.rcpt_to)]
    reports = [d for d in run.deliveries if d.rcpt.lower() == rcpt]
    lines = [
        e
        for e in run.events
        if e.code in ("delivery.delayed", "delivery.bounced")
        and str(e.fields.get("rcpt", "")).lower() == rcpt
    ]
    if len(held) > 1:
        yield Violation("no-message-lost", f"{rcpt} is in {len(held)} mailboxes: {held}", rcpt=rcpt)
    if len(reports) != 1:
        yield Violation("no-message-lost", f"{len(reports)} outcomes for {rcpt}", rcpt=rcpt)
        return
    r = reports[0]
    if r.status == "delivered":
        # An MX of None: the engine does not say where (a black box whose log omits it).
        if len(held) != 1 or r.mx not in (None, held[0]):
            yield Violation(
                "no-message-lost",
                f"{rcpt} reported delivered via {r.mx!r}, but the mailboxes hold it at {held}",
                rcpt=rcpt,
            )
        if lines:
            yield Violation(
                "failure-explained", f"{rcpt} delivered, yet: {lines[0].line}", rcpt=rcpt
            )
        return
    if r.status not in ("deferred", "bounced"):
        yield Violation("no-message-lost", f"{rcpt}: unknown status {r.status!r}", rcpt=rcpt)
        return
    if held:
        yield Violation(
            "no-message-lost",
            f"{rcpt} reported {r.status}, but {held[0]} accepted it (a retry duplicates it)",
            rcpt=rcpt,
        )
    if r.status == "bounced" and not _permanent_reply(run, rcpt, hosts):
        yield Violation(
            "no-message-lost",
            f"{rcpt} bounced, but no MX sent a 5yz for it (reason: {r.reason!r})",
            rcpt=rcpt,
        )
    code = "delivery.delayed" if r.status == "deferred" else "delivery.bounced"
    if len(lines) != 1 or lines[0].code != code:
        seen = [f"{e.code}: {e.line}" for e in lines]
        yield Violation(
            "failure-explained",
            f"{rcpt} {r.status}: want one {code} line, got {seen}",
            rcpt=rcpt,
        )
    elif not str(lines[0].fields.get("reason", "")).strip() or "\n" in lines[0].line:
        yield Violation(
            "failure-explained", f"{rcpt}: the line gives no reason: {lines[0].line!r}", rcpt=rcpt
        )


def _anyone_scripted(run: FuzzRun) -> bool:
    """Some MX has scripted replies: a refusal there may rightly end the attempt."""
    return any(h.script != Script() for h in run.scenario.world.hosts.values())


def check_run(run: FuzzRun) -> list[Violation]:
    """Every invariant broken by ``run`` (see the module docstring)."""
    if run.error is not None:
        last = run.error.strip().splitlines()[-1]
        return [Violation("run-completes", last)]
    spec, sender = run.scenario.world, run.scenario.sender
    rcpts = {r.lower(): None for step in run.scenario.steps for r in step.args.rcpts}
    found: list[Violation] = []
    by_domain: dict[str, DestinationFacts | None] = {}
    for rcpt in rcpts:
        domain = rcpt.rpartition("@")[2]
        if domain not in by_domain:
            by_domain[domain] = destination_facts(spec, sender, domain)
        facts = by_domain[domain]
        found += _outcome_checks(run, rcpt, None if facts is None else facts.hosts)
    for rcpt in rcpts:
        facts = by_domain[rcpt.rpartition("@")[2]]
        status = next((d.status for d in run.deliveries if d.rcpt.lower() == rcpt), None)
        clean = facts.clean_host() if facts is not None else None
        if clean is None or status == "delivered":
            continue
        reason = next((d.reason for d in run.deliveries if d.rcpt.lower() == rcpt), "")
        met = _faults_met(run)
        if met and not _permanent_reply(run, rcpt, facts.hosts if facts else None):
            found.append(
                Violation(
                    "healthy-mx-reached",
                    f"{rcpt} {status} in an attempt where {clean} was healthy and permitted "
                    f"({reason!r}; faults met: {met})",
                    clean,
                    rcpt,
                )
            )
        elif not met and not _anyone_scripted(run):
            found.append(
                Violation(
                    "clean-path-delivers",
                    f"{rcpt} {status}, though {clean} lets it through by every rule ({reason!r})",
                    clean,
                    rcpt,
                )
            )
    for s in run.sessions:
        for facts in by_domain.values():
            if facts is not None and s.mx_host in facts.hosts:
                found += _session_checks(facts, facts.hosts[s.mx_host], s)
    return list(dict.fromkeys(found))


def _faults_met(run: FuzzRun) -> str:
    return "; ".join(f"{s.mx_host} {f}" for s in run.sessions for f in s.faults)
