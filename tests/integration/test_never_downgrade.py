"""The invariant that matters most: never downgrade, never lose a message.

Hypothesis draws whole worlds (policy mode, one to three MX hosts with random
membership in the policy's ``mx`` patterns, a certificate profile and a STARTTLS
behaviour per MX, TLSA records correct / wrong / absent in a secure or insecure zone,
DNS faults on the ``_mta-sts`` TXT and on TLSA lookups) and Destination Controls (TLS
setting, DANE option, MTA-STS on or off), brings the world up on loopback, delivers
one message once, and then judges **only what the world observed** (the receiving
MTAs' session records), never what the engine says about itself:

* under an active ``enforce`` policy (RFC 8461 §5): no MAIL FROM reaches an MX that
  matches no pattern, none goes in clear, and none goes over a certificate that does
  not verify for the MX host, unless usable DANE authenticated that very certificate
  (seed row 2; AMB-24 hybrid keeps the MX allow-list);
* under usable DANE (RFC 7672 §2.2): none goes in clear and none over a certificate
  that matches no TLSA record; a TLSA lookup error makes the host unusable (DANE-5,
  AMB-25); Mandatory DANE never delivers without usable DANE (DANE-34);
* the TLS settings: Required* never send in clear, No never sends STARTTLS;
* no message is lost: every recipient ends delivered (and then exactly one MX holds
  it) or deferred (and then none does); nothing here may bounce, since every failure
  in these worlds is a TLS or policy failure.

The oracle for "verifies for the MX host" is the certificate profile table of
``certs/profiles.py``: only ``valid``, ``via-intermediate`` and ``wildcard`` chain to
the trusted root, are current and carry a SAN DNS-ID for the host.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from engine.core.controls import TlsSetting
from harness.fuzz import CERT_PROFILES
from harness.fuzz.oracle import PKIX_OK  # RFC 8461 §4.2 for the host
from tests.integration.sim import SENDER, simulation

DOMAIN = "example.com"
RCPT = f"rcpt@{DOMAIN}"
TLS_SETTINGS = tuple(t.value for t in TlsSetting)
STARTTLS = ("offered", "absent", "refused", "broken-close")
REQUIRED = frozenset({"required", "required-verify", "required-verify-hosted"})
WRONG_TLSA = "3 1 1 " + "5a" * 32

_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
EXAMPLES = int(os.environ.get("NEVER_DOWNGRADE_EXAMPLES", 0)) or {"dev": 25, "ci": 60}.get(
    _PROFILE, 400
)


@dataclass(frozen=True)
class Host:
    name: str
    cert: str
    starttls: str
    tlsa: str  # correct | wrong | absent
    tlsa_fault: str | None  # servfail | drop | None
    listed: bool  # named by an exact `mx:` pattern


@dataclass(frozen=True)
class Scenario:
    mode: str
    hosts: tuple[Host, ...]
    wildcard: bool  # the policy also has `mx: *.example.com`
    dnssec: str
    txt_fault: str | None
    tls: str
    dane: str
    mta_sts: bool

    def permitted(self, host: Host) -> bool:
        return host.listed or self.wildcard

    @property
    def policy(self) -> str:
        patterns = [h.name for h in self.hosts if h.listed]
        if self.wildcard:
            patterns.append(f"*.{DOMAIN}")
        if not patterns:
            patterns = ["other.example.net"]  # an enforce policy needs an mx line
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {p}" for p in patterns)]
        return "\n".join([*lines, "max_age: 86400"]) + "\n"

    @property
    def enforce_active(self) -> bool:
        """An enforce policy is in force: MTA-STS evaluated and the TXT answered."""
        return self.mode == "enforce" and self.mta_sts and self.tls != "no" and not self.txt_fault

    def dane_usable(self, host: Host) -> bool:
        """A secure TLSA RRset with a usable record was there to be found (RFC 7672 §2.2)."""
        return (
            self.dane != "none"
            and self.tls != "no"
            and self.dnssec == "secure"
            and host.tlsa != "absent"
            and host.tlsa_fault is None
        )

    def world(self) -> dict[str, Any]:
        hosts: dict[str, Any] = {}
        dns: dict[str, Any] = {}
        for h in self.hosts:
            spec: dict[str, Any] = {"cert": h.cert, "starttls": h.starttls}
            if h.tlsa == "correct":
                spec["tlsa"] = [[3, 1, 1]]
            elif h.tlsa == "wrong":
                spec["tlsa_raw"] = [WRONG_TLSA]
            hosts[h.name] = spec
            if h.tlsa_fault:
                dns[f"_25._tcp.{h.name}"] = {"TLSA": h.tlsa_fault}
        if self.txt_fault:
            dns[f"_mta-sts.{DOMAIN}"] = {"TXT": self.txt_fault}
        domain = {
            "dnssec": self.dnssec,
            "mx": [[10 * (i + 1), h.name] for i, h in enumerate(self.hosts)],
            "mta_sts_txt": ["v=STSv1; id=R1"],
            "policy": self.policy,
        }
        world: dict[str, Any] = {"domains": {DOMAIN: domain}, "hosts": hosts}
        if dns:
            world["dns"] = dns
        return world


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(1, 3))
    hosts = tuple(
        Host(
            name=f"mx{i}.{DOMAIN}",
            # Weighted towards hosts that can succeed, so both outcomes are common.
            cert=draw(st.sampled_from(("valid",) * 6 + CERT_PROFILES)),
            starttls=draw(st.sampled_from(("offered",) * 5 + STARTTLS)),
            tlsa=draw(st.sampled_from(("correct", "correct", "wrong", "absent"))),
            tlsa_fault=draw(st.sampled_from((None, None, None, "servfail", "drop"))),
            listed=draw(st.booleans()),
        )
        for i in range(1, count + 1)
    )
    tls = draw(st.sampled_from(TLS_SETTINGS))
    return Scenario(
        mode=draw(st.sampled_from(("enforce", "enforce", "testing", "none"))),
        hosts=hosts,
        wildcard=draw(st.booleans()),
        dnssec=draw(st.sampled_from(("secure", "insecure"))),
        txt_fault=draw(st.sampled_from((None, None, None, "servfail", "drop", "nxdomain"))),
        tls=tls,
        dane=draw(st.sampled_from(("none", "none", "opportunistic", "mandatory"))),
        # docs/gateway-behaviour.md §3 [SEED]: MTA-STS cannot be switched on with TLS No.
        mta_sts=tls != "no" and draw(st.booleans()),
    )


async def deliver_once(s: Scenario) -> tuple[Any, list[Any], list[Any]]:
    async with simulation(s.world(), tls=s.tls, dane=s.dane, mta_sts=s.mta_sts) as sim:
        report = await sim.send(RCPT)
        note("\n".join(sim.lines("info")))
        return report, sim.world.sessions(), sim.world.messages()


def check(s: Scenario, report: Any, sessions: list[Any], messages: list[Any]) -> None:
    by_name = {h.name: h for h in s.hosts}
    for session in sessions:
        host = by_name[session.mx_host]
        mailed = bool(session.transactions)
        note(f"{host}: tls={session.tls_version} clear={session.in_clear} mail={mailed}")
        if s.tls == "no":
            # docs/gateway-behaviour.md §1.1: never STARTTLS, even when offered.
            assert not session.starttls_attempted, session
        if not mailed:
            continue
        if s.tls in REQUIRED:
            assert not session.in_clear, f"{s.tls}: MAIL in clear at {host.name}"
        if s.enforce_active:
            # RFC 8461 §4.1, §5 (MX-1, MX-6, CERT-1..8).
            assert s.permitted(host), f"enforce: MAIL at {host.name}, which matches no pattern"
            assert not session.in_clear and session.tls_completed, f"enforce: clear at {host}"
            dane_ok = s.dane_usable(host) and host.tlsa == "correct"
            assert host.cert in PKIX_OK or dane_ok, f"enforce: unverified cert at {host}"
        if s.dane_usable(host):
            # RFC 7672 §2.2, §3 (DANE-6, DANE-19, DANE-35): TLS, and a matching TLSA record.
            assert not session.in_clear and session.tls_completed, f"DANE: clear at {host}"
            assert host.tlsa == "correct", f"DANE: chain matching no TLSA at {host}"
        if s.dane != "none" and s.tls != "no" and s.dnssec == "secure" and host.tlsa_fault:
            raise AssertionError(f"DANE-5: MAIL at {host.name} after a TLSA lookup error")
        if s.dane == "mandatory" and s.tls != "no":
            assert s.dane_usable(host), f"DANE-34: mandatory DANE, MAIL at {host.name}"
    # Nothing is lost, and nothing bounces for a TLS or policy failure.
    (r,) = report.recipients
    event(f"outcome: {r.status}" + (" (enforce)" if s.enforce_active else ""))
    assert r.status in ("delivered", "deferred"), r
    delivered = [m for m in messages if RCPT in m.rcpt_to and m.mail_from == SENDER]
    if r.status == "delivered":
        assert len(delivered) == 1 and delivered[0].mx_host == r.mx, (r, delivered)
    else:
        assert delivered == [], (r, delivered)
        assert r.reason, r


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_never_downgrade_never_lose_in_random_worlds(s: Scenario) -> None:
    note(repr(s))
    report, sessions, messages = asyncio.run(deliver_once(s))
    check(s, report, sessions, messages)
