"""Helpers for running the engine against a simulated world.

Strategy: a test writes the world as a spec dict (the TOML format of
``harness/world/spec/reader.py``) and the Destination Controls of the one domain it sends to,
then ``async with simulation(world, tls=..., dane=..., mta_sts=...) as sim`` brings the
world up on loopback and builds an :class:`~engine.delivery.agent.Engine` aimed at it the
way the in-process adapter does (:func:`harness.adapters.inprocess.engine_for`): the
world's resolver, its endpoint map (loopback-only dialer) and its root CA, a
:class:`~engine.core.clock.ManualClock` the world issues certificates at, and short
configured timeouts (SMTP 2 s per stage, policy fetch 1 s, DNS 0.5 s) so timeout
cases finish quickly without a single sleep.

``sim.send()`` makes one delivery attempt and waits for the receiving MTAs to finish
their session records (``World.settle``), so assertions may read both what the
engine said (``sim.events``, ``sim.lines()``) and what the world saw
(``sim.world.sessions()``).
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs import CertFactory
from engine.config import parse_config
from engine.core.cache import MemoryPolicyStore, PolicyStore
from engine.core.clock import ManualClock
from engine.core.events import ListSink, LogEvent
from engine.delivery.agent import DeliveryReport, Engine
from engine.logs import render_text
from harness.adapters.inprocess import engine_for
from harness.adapters.wiring import DNS_TIMEOUT, FETCH_TIMEOUT, SMTP_TIMEOUT
from harness.world import World, shared_cert_factory

DOMAIN = "example.com"
RCPT = f"rcpt@{DOMAIN}"
SENDER = "sender@sender.example"
MESSAGE = b"From: sender@sender.example\r\nTo: rcpt@example.com\r\nSubject: hi\r\n\r\nhello\r\n"

P_ENF = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 86400\n"


def cert_factory() -> CertFactory:
    """The process-wide certificate factory (the worlds' own: its CAs are made once);
    every world of these tests issues from it, and the engine trusts its root."""
    return shared_cert_factory()


def roots_of(pem: bytes) -> list[bytes]:
    """DER of every certificate in a PEM bundle."""
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def sts_world(
    *,
    policy: str | None = P_ENF,
    txt: str | None = "v=STSv1; id=A1",
    mx: Iterable[tuple[int, str]] = ((10, "mx1.example.com"), (20, "mx2.example.com")),
    hosts: Mapping[str, Mapping[str, Any]] | None = None,
    policy_host: Mapping[str, Any] | None = None,
    dnssec: str = "insecure",
    domain: str = DOMAIN,
    **extra: Any,
) -> dict[str, Any]:
    """W-STS (requirements §0.2) with overrides: the world spec dict."""
    d: dict[str, Any] = {"dnssec": dnssec, "mx": [list(m) for m in mx]}
    if txt is not None:
        d["mta_sts_txt"] = [txt]
    if policy is not None:
        d["policy"] = policy
    if policy_host is not None:
        d["policy_host"] = dict(policy_host)
    spec: dict[str, Any] = {"domains": {domain: d}}
    if hosts:
        spec["hosts"] = {name: dict(h) for name, h in hosts.items()}
    spec.update(extra)
    return spec


def controls_toml(
    *,
    tls: str = "preferred",
    dane: str = "none",
    mta_sts: bool = False,
    domain: str = DOMAIN,
    routes: Mapping[str, list[str]] | None = None,
    proxy: str | None = None,
    extra_profile: Mapping[str, Any] | None = None,
) -> str:
    """Engine configuration text: one Destination Controls entry for ``domain``."""
    lines = [
        f'[destination_controls."{domain}"]',
        f'tls = "{tls}"',
        f'dane = "{dane}"',
        f"mta_sts = {'true' if mta_sts else 'false'}",
    ]
    for key, value in (extra_profile or {}).items():
        lines.append(f"{key} = {_toml(value)}")
    if routes:
        lines.append("[routes]")
        for name, targets in routes.items():
            lines.append(f'"{name}" = [{", ".join(_toml(t) for t in targets)}]')
    lines += ["[policy_fetch]", f"timeout = {FETCH_TIMEOUT}"]
    if proxy is not None:
        lines.append(f'proxy = "{proxy}"')
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@dataclass
class Simulation:
    """A running world and an engine aimed at it."""

    world: World
    engine: Engine
    clock: ManualClock
    sink: ListSink
    reports: list[DeliveryReport] = field(default_factory=list)

    @property
    def events(self) -> list[LogEvent]:
        """Every event the engine emitted, in order."""
        return self.sink.events

    async def send(
        self, *rcpts: str, final: bool = False, mail_from: str = SENDER
    ) -> DeliveryReport:
        """One delivery attempt of a small message; waits for the MTAs' session records."""
        report = await self.engine.deliver(mail_from, list(rcpts or (RCPT,)), MESSAGE, final=final)
        await self.world.settle(SMTP_TIMEOUT * 3)
        self.reports.append(report)
        return report

    def lines(self, level: str = "info") -> list[str]:
        """The ``mail_logs`` lines at ``level``, time prefix stripped (``Info: ...``)."""
        keep = {"info": ("info", "warning"), "debug": ("debug", "info", "warning")}[level]
        return [f"{e.level.capitalize()}: {render_text(e)}" for e in self.events if e.level in keep]

    def texts(self, level: str = "info") -> list[str]:
        """The line texts at ``level``, without time and level."""
        return [line.split(": ", 1)[1] for line in self.lines(level)]

    def codes(self, *codes: str) -> list[LogEvent]:
        """The events with one of ``codes``."""
        return [e for e in self.events if e.code in codes]

    def reset(self) -> None:
        """Forget events (between sends)."""
        self.sink.events.clear()

    async def restart(self) -> None:
        """A new engine on the same configuration, clock and policy store (CACHE-12).

        Also the way to drop the policy fetcher's pooled HTTPS connections, whose
        certificate was judged when they were opened.
        """
        old = self.engine
        self.engine = Engine(
            old.config,
            clock=self.clock,
            sink=self.sink,
            store=old.services.store,
            dialer=old.services.dialer,
            roots=old.services.roots,
            smtp_timeouts=old.services.smtp_timeouts,
            rng=random.Random(7),
        )
        await old.aclose()


@asynccontextmanager
async def simulation(
    world_spec: Mapping[str, Any],
    *,
    tls: str = "preferred",
    dane: str = "none",
    mta_sts: bool = False,
    domain: str = DOMAIN,
    routes: Mapping[str, list[str]] | None = None,
    use_proxy: bool = False,
    extra_profile: Mapping[str, Any] | None = None,
    store: PolicyStore | None = None,
    clock: ManualClock | None = None,
    certs: CertFactory | None = None,
) -> AsyncIterator[Simulation]:
    """Bring up ``world_spec`` and an engine with one Destination Controls entry."""
    clock = clock or ManualClock()
    async with World(world_spec, now=clock.now, certs=certs or cert_factory()) as w:
        proxy = f"{w.proxy.address}:{w.proxy.port}" if use_proxy and w.proxy else None
        text = controls_toml(
            tls=tls,
            dane=dane,
            mta_sts=mta_sts,
            domain=domain,
            routes=routes,
            proxy=proxy,
            extra_profile=extra_profile,
        )
        host, port = w.resolver
        text += f'[dns]\nresolvers = ["{host}:{port}"]\ntimeout = {DNS_TIMEOUT}\n'
        sink = ListSink()
        # Wired to the world as the in-process adapter wires a scenario's engine.
        engine = engine_for(
            w,
            parse_config(text),
            clock=clock,
            sink=sink,
            store=store if store is not None else MemoryPolicyStore(),
            seed=7,
        )
        sim = Simulation(w, engine, clock, sink)
        try:
            yield sim
        finally:
            await sim.engine.aclose()


# --- assertions about what the world saw --------------------------------------------------


def mail_sessions(w: World, host: str | None = None) -> list[Any]:
    """Sessions in which MAIL FROM was sent."""
    return [s for s in w.sessions(host) if s.transactions]


def assert_no_mail_anywhere(w: World) -> None:
    """DEFER (requirements §0.3): no MAIL/RCPT/DATA was sent to any host."""
    for s in w.sessions():
        assert not s.transactions, f"MAIL FROM reached {s.mx_host}: {s}"
        assert not {"MAIL", "RCPT", "DATA"} & set(s.commands), s


def assert_delivered_to(w: World, host: str, *, tls: bool) -> None:
    """The message arrived at ``host`` only, over TLS (or in clear)."""
    got = w.messages()
    assert [m.mx_host for m in got] == [host], got
    assert got[0].in_clear is (not tls), got[0]


#: Events whose line says *why* a delivery or a fetch failed.
WHY_CODES = (
    "tls.verify.deferring",
    "tls.failed",
    "tls.required.failed",
    "delivery.host.skipped",
    "sts.fetch.failed",
    "smtp.connect.error",
)


def one_reason(sim: Simulation, code: str, result_type: str | None) -> LogEvent:
    """Exactly one line says why the (single) failure happened; its JSON names the type.

    ``code`` is emitted once and, when ``result_type`` is given, carries it as
    ``result_type`` (RFC 8460 §4.3). No other *why* line appears, except
    ``tls.required.failed``, which follows a TLS failure line as its consequence
    (the seed's troubleshooting pair).
    """
    found = sim.codes(code)
    debug = "\n".join(sim.lines("debug"))
    assert len(found) == 1, f"{code}: {found}\n{debug}"
    if result_type is not None:
        assert found[0].fields.get("result_type") == result_type, found[0]
    others = [
        e.code
        for e in sim.codes(*WHY_CODES)
        if e.code != code and not (e.code == "tls.required.failed" and code.startswith("tls."))
    ]
    assert others == [], f"more than one reason: {code} and {others}\n{debug}"
    return found[0]


def substitute(template: str, values: Mapping[str, object]) -> str:
    """Fill ``<name>`` placeholders of a seed line."""
    return re.sub(r"<(\w+)>", lambda m: str(values[m.group(1)]), template)
