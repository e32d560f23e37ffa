"""``sts-engine check``: verify a domain the way the seed advises before configuring it.

One line per check with a verdict: the ``_mta-sts`` TXT record, the policy
(fetched and parsed strictly), each MX against the policy patterns, each MX's
addresses and DNSSEC status, its TLSA records, its STARTTLS, protocol and
certificate (PKIX for the MX name, DANE when TLSA is usable), and the
``_smtp._tls`` TLS-RPT record. The same adapters as delivery are used, so a
check sees exactly what a delivery would; the STARTTLS probe is the delivery's
:func:`~engine.delivery.probe.probe_starttls`, the one the harness's capture uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.config import EngineConfig
from engine.core.cache import TxtAbsent, TxtFound, TxtTempError
from engine.core.dane import dane_reference_ids, dane_verify
from engine.core.discovery import FetchFailed, is_policy_media_type
from engine.core.errors import PolicyError
from engine.core.events import ListSink
from engine.core.mx import normalize_host, policy_permits
from engine.core.pkix import rfc6125_match, verify_chain
from engine.core.policy import Mode, Policy, parse_policy
from engine.core.txt import NoTlsRptRecord, select_tlsrpt_record
from engine.delivery.agent import Engine
from engine.delivery.mtasts import txt_outcome
from engine.delivery.nexthop import DaneState, resolve_host, resolve_mx
from engine.delivery.probe import ProbeStatus, probe_starttls
from engine.io.dialer import Dialer

__all__ = ["CheckItem", "CheckReport", "check_domain"]

PASS, FAIL, WARN, INFO = "PASS", "FAIL", "WARN", "INFO"


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One line of the check."""

    verdict: str
    subject: str
    detail: str


@dataclass(slots=True)
class CheckReport:
    """All checks of one domain."""

    domain: str
    items: list[CheckItem] = field(default_factory=list)

    def add(self, verdict: str, subject: str, detail: str) -> None:
        """Record one check."""
        self.items.append(CheckItem(verdict, subject, detail))

    @property
    def ok(self) -> bool:
        """No check failed."""
        return all(i.verdict != FAIL for i in self.items)

    def lines(self) -> list[str]:
        """Human lines, then the overall verdict."""
        out = [f"{i.verdict:4}  {i.subject}: {i.detail}" for i in self.items]
        overall = PASS if self.ok else FAIL
        out.append(f"{overall:4}  overall: {self.domain}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "domain": self.domain,
            "ok": self.ok,
            "checks": [
                {"verdict": i.verdict, "subject": i.subject, "detail": i.detail} for i in self.items
            ],
        }


async def check_domain(
    config: EngineConfig,
    domain: str,
    *,
    smtp_port: int | None = None,
    dialer: Dialer | None = None,
    timeout: float = 10.0,
) -> CheckReport:
    """Run every check for ``domain``."""
    domain = normalize_host(domain)
    report = CheckReport(domain)
    dialer = dialer or Dialer(port_map={25: smtp_port} if smtp_port else {})
    async with Engine(config, sink=ListSink(), dialer=dialer) as engine:
        policy = await _check_sts(engine, domain, report)
        await _check_mx(engine, domain, report, policy, dialer, timeout)
        await _check_tlsrpt(engine, domain, report)
    return report


async def _check_sts(engine: Engine, domain: str, report: CheckReport) -> Policy | None:
    answer = await engine.resolver.query(f"_mta-sts.{domain}", "TXT")
    txt = txt_outcome(answer)
    subject = f"TXT _mta-sts.{domain}"
    if isinstance(txt, TxtAbsent):
        report.add(INFO, subject, f"no record ({txt.detail}): the domain has no MTA-STS policy")
        return None
    if isinstance(txt, TxtTempError):
        report.add(FAIL, subject, f"lookup error: {txt.detail}")
        return None
    if not isinstance(txt, TxtFound):
        report.add(FAIL, subject, f"{txt.why.reason.value}: {txt.why.detail}")
        return None
    report.add(PASS, subject, f"id={txt.record.id}")
    fetched = await engine.fetcher.fetch(domain)
    subject = f"policy https://mta-sts.{domain}/.well-known/mta-sts.txt"
    if isinstance(fetched, FetchFailed):
        report.add(FAIL, subject, f"{fetched.kind.value}: {fetched.detail}")
        return None
    if not is_policy_media_type(fetched.content_type):
        report.add(FAIL, subject, f"media type {fetched.content_type!r} is not text/plain")
        return None
    try:
        policy = parse_policy(fetched.body, source=subject)
    except PolicyError as exc:
        report.add(FAIL, subject, str(exc))
        return None
    patterns = ", ".join(str(p) for p in policy.mx) or "(none)"
    report.add(PASS, subject, f"mode {policy.mode.value}, max_age {policy.max_age}, mx {patterns}")
    return policy


async def _check_mx(
    engine: Engine,
    domain: str,
    report: CheckReport,
    policy: Policy | None,
    dialer: Dialer,
    timeout: float,
) -> None:
    mx = await engine.resolver.query(domain, "MX")
    lookup = await resolve_mx(engine.resolver, domain, engine.services.rng)
    status = "secure" if mx.secure else "insecure"
    if lookup.status in ("defer", "fail"):
        report.add(FAIL, f"MX {domain}", lookup.detail)
        return
    report.add(PASS, f"MX {domain}", f"{len(lookup.hosts)} host(s), DNSSEC {status}")
    for pref, host in lookup.hosts:
        subject = f"MX {pref} {host}"
        if policy is not None and policy.mode is not Mode.NONE:
            if policy_permits(policy.mx, host):
                report.add(PASS, subject, "matches the policy's mx patterns")
            else:
                verdict = FAIL if policy.mode is Mode.ENFORCE else WARN
                report.add(verdict, subject, "matches no mx pattern of the policy (MX-1)")
        hop = await resolve_host(engine.resolver, host, 25, preference=pref, want_dane=True)
        if not hop.addresses:
            report.add(FAIL, subject, hop.detail)
            continue
        sec = "secure" if hop.address_secure else "insecure"
        report.add(INFO, subject, f"addresses {', '.join(hop.addresses)} (DNSSEC {sec})")
        if hop.dane is DaneState.DNS_ERROR:
            report.add(FAIL, f"TLSA _25._tcp.{host}", hop.detail)
        elif hop.tlsa:
            report.add(PASS, f"TLSA _25._tcp.{hop.tlsa_base}", " / ".join(str(t) for t in hop.tlsa))
        else:
            report.add(INFO, f"TLSA _25._tcp.{host}", "no usable secure TLSA: DANE not applicable")
        await _probe(
            engine, report, host, hop.addresses[0], hop, dialer, timeout, domain, mx.secure
        )


async def _probe(
    engine: Engine,
    report: CheckReport,
    host: str,
    address: str,
    hop: Any,
    dialer: Dialer,
    timeout: float,
    domain: str,
    mx_secure: bool,
) -> None:
    subject = f"SMTP {host} [{address}]"
    probe = await probe_starttls(
        dialer, address, host, timeout=timeout, local_hostname="sts-engine-check.localdomain"
    )
    if probe.status is ProbeStatus.UNREACHABLE:
        if probe.stage in ("connect", "banner"):
            report.add(FAIL, subject, f"cannot connect: {probe.detail}")
        else:
            report.add(FAIL, subject, f"the session broke at {probe.stage}: {probe.detail}")
        return
    if probe.status is ProbeStatus.ABSENT:
        report.add(FAIL, subject, "STARTTLS not offered (starttls-not-supported)")
        return
    tls = probe.tls
    if probe.status is not ProbeStatus.OFFERED or tls is None:
        report.add(FAIL, subject, f"STARTTLS failed: {probe.detail}")
        return
    report.add(PASS, subject, f"STARTTLS {tls.protocol} {tls.cipher}")
    now = engine.clock.now()
    chain = list(tls.chain)
    verdict = verify_chain(chain, engine.services.roots, now)
    if not verdict.ok:
        report.add(FAIL, f"certificate {host}", f"{verdict.result_type}: {verdict.reason}")
    elif not rfc6125_match(verdict.chain[0], normalize_host(host)):
        report.add(FAIL, f"certificate {host}", f"does not name {host} (certificate-host-mismatch)")
    else:
        report.add(PASS, f"certificate {host}", "chains to a trusted root and names the MX host")
    if hop.dane is DaneState.USABLE:
        refs = dane_reference_ids(hop.tlsa_base or host, domain if mx_secure else None, None)
        dv = dane_verify(chain, hop.tlsa, reference_ids=refs, now=now)
        report.add(PASS if dv.ok else FAIL, f"DANE {host}", dv.reason)


async def _check_tlsrpt(engine: Engine, domain: str, report: CheckReport) -> None:
    answer = await engine.resolver.query(f"_smtp._tls.{domain}", "TXT")
    subject = f"TXT _smtp._tls.{domain}"
    if answer.status.temporary:
        report.add(FAIL, subject, f"lookup error: {answer.status.value}")
        return
    selected = select_tlsrpt_record(answer.txt_strings(), source=subject)
    if isinstance(selected, NoTlsRptRecord):
        report.add(INFO, subject, f"no usable TLS-RPT record ({selected.reason})")
        return
    report.add(PASS, subject, "rua " + ", ".join(selected.rua))
