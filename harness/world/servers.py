"""The running servers of one world, where they listen, and what they observed.

:class:`Servers` is the world's registry: the server objects, every host's
:class:`HostInfo`, the engine's endpoint map, and the certificates published in
TLSA records. It refuses two hosts answering on the same (address, service port).
Its observation methods read the servers' logs; :class:`~harness.world.world.World`
owns it, starts what goes in it and exposes the parts a test needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from certs import IssuedCert
from harness.errors import SpecError, WorldError
from harness.world.mta.records import MtaSession, ReceivedMessage
from harness.world.timeline import (
    TimedDns,
    TimedMta,
    TimedPolicyHost,
    TimedProxy,
    TimedReportSink,
    WorldExchange,
    WorldSnapshot,
    merge,
)

__all__ = ["HostInfo", "HostRole", "Servers"]


class HostRole(StrEnum):
    """What a host of the world is."""

    DNS = "dns"
    POLICY = "policy"
    MX = "mx"
    PROXY = "proxy"
    REPORT_SINK = "report-sink"


@dataclass(frozen=True, slots=True)
class HostInfo:
    """Where one host of a running world is.

    Attributes:
        name: its DNS name (``"dns"`` and ``"proxy"`` for those two).
        role: what it is.
        address: its 127.x address.
        port: the port it really listens on.
        service_port: the port the engine dials (25 or the MX host's ``port``, 443; 53
            for the DNS, 0 for the proxy, which the engine is told about directly),
            mapped onto ``port``.
    """

    name: str
    role: HostRole
    address: str
    port: int
    service_port: int


@dataclass(slots=True)
class Servers:
    """The servers of one running world (see the module docstring)."""

    dns: TimedDns
    policy: TimedPolicyHost
    source: str = "<world>"
    mtas: dict[str, TimedMta] = field(default_factory=dict)
    proxy: TimedProxy | None = None
    sink: TimedReportSink | None = None
    hosts: dict[str, HostInfo] = field(default_factory=dict)
    endpoints: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    published: dict[str, IssuedCert] = field(default_factory=dict)

    def register(
        self, name: str, role: HostRole, real: tuple[str, int], service: int, where: str
    ) -> None:
        """Record host ``name`` at ``real``, answering the engine's ``service`` port.

        Raises:
            SpecError: another host already answers on (address, ``service``); ``where``
                is the key path of the address to blame.
        """
        # The engine is told the DNS and proxy addresses directly; every other host's
        # service port (25, an MX host's `port`, 443) is mapped onto its real port.
        key, mapped = (real[0], service), role not in (HostRole.DNS, HostRole.PROXY)
        if mapped and self.endpoints.get(key, real) != real:
            other = next(h.name for h in self.hosts.values() if (h.address, h.service_port) == key)
            reason = f"{name} and {other} would both answer on {real[0]}:{service}"
            raise SpecError(reason, file=self.source, key=where, value=real[0])
        if mapped:
            self.endpoints[key] = real
        self.hosts[name] = HostInfo(name, role, real[0], real[1], service)

    def named_addresses(self) -> dict[str, str]:
        """Host name -> address, for the A records (not the DNS server or the proxy)."""
        return {
            n: h.address
            for n, h in self.hosts.items()
            if h.role not in (HostRole.DNS, HostRole.PROXY)
        }

    def proxy_target(self, host: str, port: int) -> tuple[str, int] | None:
        """Where a CONNECT to (``host``, ``port``) goes: by host name or by address."""
        info = self.hosts.get(host)
        return self.endpoints.get((info.address if info else host, port))

    def mta(self, host: str) -> TimedMta:
        """The MTA of MX host ``host``.

        Raises:
            WorldError: no such MX host.
        """
        mta = self.mtas.get(host.rstrip(".").lower())
        if mta is None:
            raise WorldError(f"no MX host {host!r}; MX hosts: {sorted(self.mtas)}")
        return mta

    def sessions(self, host: str | None = None) -> list[MtaSession]:
        """Finished SMTP sessions at one MX host or all, by start time."""
        mtas = [self.mta(host)] if host else list(self.mtas.values())
        spans = [(m.spans.get(s.session_id, (0.0, None))[0], s) for m in mtas for s in m.sessions]
        return [s for _, s in sorted(spans, key=lambda pair: pair[0])]

    def messages(self, host: str | None = None) -> list[ReceivedMessage]:
        """Messages accepted at one MX host or all."""
        mtas = [self.mta(host)] if host else list(self.mtas.values())
        return [msg for m in mtas for msg in m.messages]

    def timeline(self) -> list[WorldExchange]:
        """Every exchange with every server, by time."""
        return merge(self.dns, self.policy, self.mtas.values(), self.proxy, self.sink)

    def snapshot(self) -> WorldSnapshot:
        """Copies of every log and the timeline."""
        return WorldSnapshot(
            dns_queries=tuple(self.dns.queries()),
            policy_requests=tuple(self.policy.requests()),
            sessions=tuple(self.sessions()),
            messages=tuple(self.messages()),
            proxy_log=tuple(self.proxy.log() if self.proxy else ()),
            reports=tuple(self.sink.reports() if self.sink else ()),
            timeline=tuple(self.timeline()),
        )

    def clear_logs(self) -> None:
        """Forget every log; the servers keep running."""
        self.dns.clear_log()
        self.policy.clear()
        for mta in self.mtas.values():
            mta.clear()
        if self.proxy is not None:
            self.proxy.clear()
        if self.sink is not None:
            self.sink.clear()

    def by_role(self, role: HostRole) -> Mapping[str, HostInfo]:
        """The hosts of one role, by name."""
        return {n: h for n, h in self.hosts.items() if h.role is role}
