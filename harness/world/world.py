"""World: the whole simulated network of a scenario, brought up from a world spec.

Theory of operation
-------------------
A :class:`World` is an async context manager. ``__aenter__`` takes a /24 of loopback
addresses (:mod:`harness.world.addresses`), gives each host one (the spec may pin
them), mints certificates at the world's ``now`` (the harness's fake clock, so
"expired" means expired *then*), and starts, in the caller's event loop:

* one :class:`~harness.world.dns.server.FakeDns` on ``<block>.53`` (UDP and TCP);
* one :class:`~harness.world.web.policy_host.PolicyHost` serving every ``mta-sts.<domain>``;
* one :class:`~harness.world.mta.server.ReceivingMta` per MX host;
* a :class:`~harness.world.web.proxy.Proxy` and a
  :class:`~harness.world.web.report_sink.ReportSink` when the spec asks.

Every server binds port 0 and is listening when its ``__aenter__`` returns, so the
world is ready when ours returns: no sleeps, no polling. Each is entered on one
``AsyncExitStack``; ``__aexit__`` (or a failure half-way through ``__aenter__``)
unwinds it in reverse, then gives the address block back and removes the world's
temporary directory. No task, socket, thread or file outlives the ``async with``.

The engine needs three things: the resolver address (:attr:`World.resolver`), the
endpoint map (:attr:`World.endpoint_map`: ``(address, service port) -> (address, real
port)``, the service port being 25, an MX host's ``port``, or 443) and the trusted
root (:attr:`World.ca_pem`, :attr:`World.ca_file`).

State: the :class:`~harness.world.spec.WorldSpec` is the single source of truth.
A mutation (``update_domain``, ``update_policy``, ``set_dns``, ``rotate_cert`` ...)
makes a new spec, starts what is new (a policy host, an MX), pushes changed
responses and certificates to the servers, and rebuilds every zone from the spec
(:func:`~harness.world.spec.zones.build_zones`). Mutations are coroutines because
some bind sockets; await them between steps.

Observations: the servers' own logs, and :meth:`World.timeline`, one time-ordered
list of DNS queries, policy fetches, SMTP sessions, proxy requests and reports.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from certs import CertFactory, CertProfile, IssuedCert, KeyType
from engine.core.tomlnode import key_path
from harness.errors import SpecError, WorldError
from harness.world.addresses import DEFAULT_ALLOCATOR, AddressBlock, LoopbackAllocator
from harness.world.dns.records import TXT, ZoneError, canonical_name
from harness.world.mta.records import MtaSession, ReceivedMessage
from harness.world.mta.server import ServerCert
from harness.world.servers import HostInfo, HostRole, Servers
from harness.world.spec import DomainSpec, HostSpec, PolicyHostSpec, WorldSpec, load_world_spec
from harness.world.spec.changes import changed_dns, changed_domain, changed_policy
from harness.world.spec.model import RecordSpec
from harness.world.spec.zones import build_zones
from harness.world.timeline import (
    TimedDns,
    TimedMta,
    TimedPolicyHost,
    TimedProxy,
    TimedReportSink,
    WorldExchange,
    WorldSnapshot,
    monotonic_clock,
)
from harness.world.web.behaviour import ProxyFault

__all__ = ["Now", "World", "shared_cert_factory"]

#: A fixed time (POSIX seconds or datetime) or a clock function such as ``ManualClock.now``.
Now = float | datetime | Callable[[], float]
_SHARED: list[CertFactory] = []
_STATUSES = frozenset({"secure", "insecure", "bogus"})


def shared_cert_factory() -> CertFactory:
    """The process-wide factory worlds use when given none (its CAs are made once)."""
    if not _SHARED:
        _SHARED.append(CertFactory())
    return _SHARED[0]


class World:
    """A simulated world (async context manager); see the module docstring.

    Args:
        spec: a :class:`~harness.world.spec.WorldSpec`, or a dict loaded from TOML.
        now: the time certificates are issued relative to: POSIX seconds, a datetime,
            or a function read at each issue (``ManualClock.now``). Default: the
            certificate factory's reference time.
        certs: the certificate factory (default :func:`shared_cert_factory`).
        allocator: where address blocks come from (default: the process-wide one).
        source: the file name spec errors carry (when ``spec`` is a dict).
        prefix: the key path of the world table in that file (``"world"`` in a scenario).

    Raises:
        SpecError: the spec dict is invalid (at construction), or two hosts would answer
            on one address and port (at ``__aenter__``).

    Example::

        async with World(tomllib.load(f), now=clock.now) as w:
            engine = Engine(resolver=w.resolver, endpoints=w.endpoint_map, ca=w.ca_file)
    """

    def __init__(
        self,
        spec: WorldSpec | Mapping[str, Any],
        *,
        now: Now | None = None,
        certs: CertFactory | None = None,
        allocator: LoopbackAllocator | None = None,
        source: str = "<world>",
        prefix: str = "",
    ) -> None:
        self.spec = spec if isinstance(spec, WorldSpec) else load_world_spec(spec, source, prefix)
        self.certs = certs or shared_cert_factory()
        self._now = now
        self._allocator = allocator or DEFAULT_ALLOCATOR
        self._stack: AsyncExitStack | None = None
        self._block: AddressBlock | None = None
        self._tmpdir: Path | None = None
        self._servers: Servers | None = None

    # -- life cycle ------------------------------------------------------------------

    async def __aenter__(self) -> World:
        if self._stack is not None:
            raise RuntimeError("World is already running")
        stack = self._stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            self._stack = None
            await stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _start(self, stack: AsyncExitStack) -> None:
        block = self._block = self._allocator.block()
        stack.callback(self._reset)
        clock = monotonic_clock()
        dns = TimedDns(address=block.dns, clock=clock)
        policy = TimedPolicyHost(clock=clock)
        await stack.enter_async_context(dns)
        await stack.enter_async_context(policy)
        sv = self._servers = Servers(dns, policy, self.spec.source)
        sv.register("dns", HostRole.DNS, dns.address, 53, "")
        for domain in self.spec.domains.values():
            await self._sync_policy_host(domain)
        for host in self.spec.hosts.values():
            await self._start_mta(host)
        if (r := self.spec.report_sink) is not None:
            cert = _pair(self._issue((r.name,), r.cert, None))
            sink = TimedReportSink(
                r.name, address=r.address or block.take(), cert=cert, clock=clock
            )
            await stack.enter_async_context(sink)
            sv.sink = sink
            for path, statuses in r.statuses:
                sink.script(path, *statuses)
            where = key_path(key_path(self.spec.prefix, "report_sink"), "address")
            sv.register(r.name, HostRole.REPORT_SINK, sink.endpoint, 443, where)
        if (p := self.spec.proxy) is not None:
            address = p.address or block.take()
            proxy = TimedProxy(sv.proxy_target, address=address, fault=p.fault, clock=clock)
            await stack.enter_async_context(proxy)
            sv.proxy = proxy
            sv.register("proxy", HostRole.PROXY, (proxy.address, proxy.port), 0, "")
        self._refresh_dns()

    def _reset(self) -> None:
        if self._block is not None:
            self._block.release()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._block = self._tmpdir = self._servers = None

    @property
    def servers(self) -> Servers:
        """The running servers, their hosts and endpoints.

        Raises:
            RuntimeError: the world is not running.
        """
        if self._servers is None:
            raise RuntimeError("the world's servers exist only inside `async with`")
        return self._servers

    # -- what the engine needs -------------------------------------------------------

    @property
    def resolver(self) -> tuple[str, int]:
        """(address, port) of the fake DNS (UDP and TCP)."""
        return self.servers.dns.address

    @property
    def endpoint_map(self) -> dict[tuple[str, int], tuple[str, int]]:
        """``(address, service port) -> (address, real port)`` for every MX and HTTPS host.

        The service port is 443 for HTTPS hosts and 25, or the host's ``port``, for MX hosts.
        """
        return dict(self.servers.endpoints)

    @property
    def ca_pem(self) -> bytes:
        """The root every ``valid`` certificate chains to (what the engine trusts), PEM."""
        return self.certs.ca_bundle_pem

    @property
    def ca_file(self) -> Path:
        """:attr:`ca_pem` in a file in the world's temporary directory (removed at exit).

        Raises:
            RuntimeError: the world is not running.
        """
        if self._stack is None:
            raise RuntimeError("World.ca_file exists only inside `async with`")
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="world-"))
        path = self._tmpdir / "ca.pem"
        if not path.exists():
            path.write_bytes(self.ca_pem)
        return path

    @property
    def clock_now(self) -> float:
        """The time certificates are issued at now (POSIX seconds)."""
        now = self._now
        if now is None:
            return self.certs.now.timestamp()
        if callable(now):
            return float(now())
        return now.timestamp() if isinstance(now, datetime) else float(now)

    @property
    def hosts(self) -> Mapping[str, HostInfo]:
        """Every host of the running world by name (also ``"dns"`` and ``"proxy"``)."""
        return MappingProxyType(self.servers.hosts)

    def address_of(self, name: str) -> str:
        """The 127.x address of host ``name``.

        Raises:
            WorldError: no such host.
        """
        info = self.servers.hosts.get(name.rstrip(".").lower())
        if info is None:
            raise WorldError(f"no host {name!r} in this world; hosts: {sorted(self.hosts)}")
        return info.address

    # -- servers and observations -------------------------------------------------------

    @property
    def dns(self) -> TimedDns:
        """The fake DNS; its log: ``w.dns.queries(name, qtype)``."""
        return self.servers.dns

    @property
    def policy_host(self) -> TimedPolicyHost:
        """The server of every policy host; its log: ``w.policy_host.requests(host)``."""
        return self.servers.policy

    @property
    def mtas(self) -> Mapping[str, TimedMta]:
        """The receiving MTAs by MX host name (``.sessions``, ``.messages``)."""
        return MappingProxyType(self.servers.mtas)

    def mta(self, host: str) -> TimedMta:
        """The receiving MTA of MX host ``host`` (WorldError if there is none)."""
        return self.servers.mta(host)

    @property
    def proxy(self) -> TimedProxy | None:
        """The proxy (``.log()``), if the spec has one."""
        return self.servers.proxy

    @property
    def report_sink(self) -> TimedReportSink | None:
        """The report sink (``.reports()``), if the spec has one."""
        return self.servers.sink

    def sessions(self, host: str | None = None) -> list[MtaSession]:
        """Finished SMTP sessions at MX host ``host`` or at all of them, by start time."""
        return self.servers.sessions(host)

    def messages(self, host: str | None = None) -> list[ReceivedMessage]:
        """Messages accepted at MX host ``host`` or at all of them (the mailboxes)."""
        return self.servers.messages(host)

    def timeline(self) -> list[WorldExchange]:
        """Every DNS query, policy fetch, SMTP session, proxy request and report, by time."""
        return self.servers.timeline()

    def snapshot(self) -> WorldSnapshot:
        """Copies of every log, and the timeline, as of now."""
        return self.servers.snapshot()

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until no SMTP session is live at any MX (so session records are final)."""
        for mta in self.servers.mtas.values():
            await mta.settle(timeout)

    # -- mutations ---------------------------------------------------------------------

    async def update_domain(self, domain: str, **changes: Any) -> None:
        """Change a domain's keys (as in its TOML table), or add a new domain.

        Example: ``await w.update_domain("example.com", mta_sts_txt=["v=STSv1; id=B2"])``.

        Raises:
            SpecError: an unknown key or bad value (``update_domain: domains."d".key``).
        """
        await self._set_domain(changed_domain(self.spec, domain, changes))

    async def update_policy(
        self, domain: str, body: str | bytes | None = None, **response: Any
    ) -> None:
        """Change a policy body and/or the policy host's response.

        Args:
            domain: the policy domain.
            body: the new body (None: keep it).
            response: :class:`~harness.world.web.policy_host.PolicyResponse` fields
                (``status``, ``content_type``, ``headers`` ...), or ``cert`` (a profile).

        Raises:
            SpecError: an unknown domain or field, or a bad value.
        """
        await self._set_domain(changed_policy(self.spec, domain, body, response))

    async def set_dns(
        self, name: str, rrtype: str | None, behaviour: str | None, *, delay_ms: int = 0
    ) -> None:
        """Make (``name``, ``rrtype``) misbehave or take a DNSSEC status; None clears.

        Args:
            name: the owner name.
            rrtype: a type such as ``"TXT"``, or None (or ``"*"``) for every type.
            behaviour: a behaviour (``servfail``, ``drop`` ...) or a status (``secure``,
                ``insecure``, ``bogus``); None removes the rule.
            delay_ms: delay before the reply (behaviours only).

        Raises:
            SpecError: an unknown behaviour.
        """
        self.spec = changed_dns(self.spec, name, rrtype, behaviour, delay_ms)
        self._refresh_dns()

    async def add_records(self, *records: RecordSpec) -> None:
        """Publish extra raw records, as ``[[records]]`` entries appended to the spec.

        Example: ``await w.add_records(RecordSpec("sel._domainkey.sender.example",
        TXT(("v=DKIM1; ...",))))``. They stay across later changes, like ``[[records]]``.
        """
        self.spec = replace(self.spec, records=(*self.spec.records, *records))
        self._refresh_dns()

    def txt(self, name: str) -> list[bytes] | None:
        """The TXT RRset at ``name`` as served now (each RR's strings joined), read from
        the zones without a query (so nothing lands in the DNS log); None if no data.

        Used by harness-side checks (a report's DKIM key, RPT-10). CNAMEs are not
        followed and behaviours (``servfail`` ...) are not applied.
        """
        try:
            canon = canonical_name(name)
        except ZoneError:
            return None
        zone = self.servers.dns.zone_for(canon)
        if zone is None:
            return None
        found = zone.lookup(canon, "TXT")
        if found.kind != "data":
            return None
        return [b"".join(r.rdata.strings) for r in found.records if isinstance(r.rdata, TXT)]

    async def rotate_cert(
        self,
        host: str,
        profile: CertProfile | str,
        *,
        names: tuple[str, ...] | None = None,
        update_tlsa: bool = False,
    ) -> IssuedCert:
        """Serve a new certificate at an MX host or policy host from the next handshake.

        Args:
            host: an MX host name, or ``mta-sts.<domain>``.
            profile: the new certificate's profile (issued at :attr:`clock_now`).
            names: the names it is for (default: as before).
            update_tlsa: also publish TLSA records for the new certificate (MX hosts);
                by default the TLSA records keep describing the old one.

        Returns:
            The new certificate.

        Raises:
            WorldError: no such host.
        """
        key, profile = host.rstrip(".").lower(), CertProfile(profile)
        if key in self.servers.mtas:
            h = self.spec.hosts[key]
            h = replace(h, cert=profile, names=names or h.names)
            self.spec = replace(self.spec, hosts=MappingProxyType({**self.spec.hosts, key: h}))
            cert = self._issue(h.names or (key,), profile, h.key_type, h.cn)
            # The SNI-selected certificates stay as they were; only the default changes.
            self.servers.mtas[key].rotate_cert(_server_cert(cert), sni_certs=self._sni_certs(h))
            if update_tlsa:
                self.servers.published[key] = cert
                self._refresh_dns()
            return cert
        for d in self.spec.domains.values():
            if d.policy_host_name == key and d.has_policy_host:
                ph = d.policy_host or PolicyHostSpec()
                ph = replace(ph, cert=profile, names=names or ph.names)
                await self._set_domain(replace(d, policy_host=ph))
                return self._issue(ph.names or (key,), profile, ph.key_type)
        raise WorldError(f"no MX or policy host {host!r}; MX hosts: {sorted(self.mtas)}")

    async def set_proxy_fault(self, fault: ProxyFault | str) -> None:
        """Switch the proxy's fault (``none``, ``refuse``, ``hang``).

        Raises:
            WorldError: the world has no proxy.
        """
        if self.servers.proxy is None:
            raise WorldError("this world has no [proxy]")
        self.servers.proxy.fault = ProxyFault(fault)

    # -- internals -----------------------------------------------------------------------

    def _issue(
        self,
        names: tuple[str, ...],
        profile: CertProfile,
        key: KeyType | None,
        cn: str | None = None,
    ) -> IssuedCert:
        now = None if self._now is None else self.clock_now
        return self.certs.issue(*names, profile=profile, now=now, key_type=key, common_name=cn)

    def _sni_certs(self, h: HostSpec) -> dict[str, ServerCert] | None:
        """``sni_certs``: each certificate issued for the SNI name it is served for."""
        issued = {n: _server_cert(self._issue((n,), p, h.key_type)) for n, p in h.sni_certs}
        return issued or None

    async def _start_mta(self, h: HostSpec) -> None:
        assert self._stack is not None and self._block is not None
        sv = self.servers
        cert = self._issue(h.names or (h.name,), h.cert, h.key_type, h.cn) if h.cert else None
        mta = TimedMta(
            h.address or self._block.take(),
            h.name,
            cert=_server_cert(cert) if cert else None,
            sni_certs=self._sni_certs(h),
            starttls=h.starttls,
            tls_min=h.tls_min,
            tls_max=h.tls_max,
            script=h.script,
            clock=sv.dns.clock,
        )
        await self._stack.enter_async_context(mta)
        sv.mtas[h.name] = mta
        if cert is not None:
            sv.published[h.name] = cert
        where = key_path(key_path(key_path(self.spec.prefix, "hosts"), h.name), "address")
        sv.register(h.name, HostRole.MX, mta.address, h.port, where)

    async def _sync_policy_host(self, d: DomainSpec) -> None:
        assert self._block is not None
        if not d.has_policy_host:
            return
        sv, ph, name = self.servers, d.policy_host or PolicyHostSpec(), d.policy_host_name
        cert = _pair(self._issue(ph.names or (name,), ph.cert, ph.key_type))
        body = (d.policy or "").encode("utf-8", "surrogateescape")
        response = replace(ph.response, body=body)
        if name in sv.hosts:
            if sv.policy.tls_range(name) != (ph.tls_min, ph.tls_max):
                where = key_path(key_path(self.spec.prefix, "domains"), d.name)
                raise SpecError(
                    "a running policy host keeps its TLS version range (tls_min, tls_max)",
                    file=self.spec.source,
                    key=f"{where}.policy_host",
                    value=(ph.tls_min, ph.tls_max),
                )
            sv.policy.set_response(name, response)
            sv.policy.set_cert(name, cert)
            return
        address = ph.address or self._block.take()
        real = await sv.policy.add_host(
            name,
            address=address,
            cert=cert,
            response=response,
            tls_min=ph.tls_min,
            tls_max=ph.tls_max,
        )
        where = key_path(key_path(self.spec.prefix, "domains"), d.name) + ".policy_host.address"
        sv.register(name, HostRole.POLICY, real, 443, where)

    async def _set_domain(self, d: DomainSpec) -> None:
        hosts = dict(self.spec.hosts)
        new = [HostSpec(t) for _, t in d.mx if t and t not in hosts]
        hosts.update((h.name, h) for h in new)
        domains = {**self.spec.domains, d.name: d}
        self.spec = replace(
            self.spec, domains=MappingProxyType(domains), hosts=MappingProxyType(hosts)
        )
        if self._servers is None:
            return  # not running: __aenter__ uses the new spec
        for h in new:
            await self._start_mta(h)
        await self._sync_policy_host(d)
        self._refresh_dns()

    def _refresh_dns(self) -> None:
        sv = self._servers
        if sv is None:
            return
        named = sv.named_addresses()
        for d in self.spec.domains.values():
            if not d.has_policy_host:  # a removed policy host keeps serving, but has no name
                named.pop(d.policy_host_name, None)
        zones = build_zones(self.spec, named, sv.published)
        for apex in set(sv.dns.zones) - {z.apex for z in zones}:
            sv.dns.remove_zone(apex)
        for zone in zones:
            sv.dns.set_zone(zone)
        sv.dns.clear_behaviours()
        for rule in self.spec.dns:
            if rule.action not in _STATUSES:
                sv.dns.set_behaviour(rule.name, rule.action, rule.rrtype, delay_ms=rule.delay_ms)


def _pair(cert: IssuedCert) -> tuple[bytes, bytes]:
    return cert.chain_pem, cert.private_key_pem


def _server_cert(cert: IssuedCert) -> ServerCert:
    return ServerCert(cert.chain_pem, cert.private_key_pem)
