"""A small simulated world for gateway tests, built from the harness pieces.

Domains:

* ``example.com``: MTA-STS ``enforce`` (mx1.example.com), TLSRPT record with an
  https rua at the report sink and a mailto rua at sender.example;
* ``sender.example``: plain MX (mx.sender.example) where DSNs and mailed reports land;
* ``slow.example`` (optional): an MX that hangs after DATA (crash tests).

Everything binds 127.x.y.z port 0; the engine reaches it through the endpoint map.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from certs import CertFactory
from engine.core.clock import ManualClock
from engine.io.dialer import Dialer
from harness.world.addresses import DEFAULT_ALLOCATOR
from harness.world.dns.server import FakeDns
from harness.world.dns.zones import DnssecStatus, Zone
from harness.world.mta.script import Script, StartTls
from harness.world.mta.server import ReceivingMta, ServerCert
from harness.world.web.behaviour import PolicyResponse
from harness.world.web.policy_host import PolicyHost
from harness.world.web.report_sink import ReportSink

START = 1_767_225_600.0 + 3600.0  # 2026-01-01T01:00:00Z
POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 604800\n"
_FACTORY: list[CertFactory] = []


def factory() -> CertFactory:
    if not _FACTORY:
        _FACTORY.append(CertFactory(now=START))
    return _FACTORY[0]


class HangingMx:
    """A minimal MX that reads a whole message and then either answers or hangs.

    ``data_seen`` is set once the final ``.`` arrives: the readiness signal that a
    delivery is in progress (no sleeps).
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.hang = True
        self.data_seen = asyncio.Event()
        self.messages: list[bytes] = []
        self.delivered = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def __aenter__(self) -> HangingMx:
        self._server = await asyncio.start_server(self._session, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            writer.write(b"220 mx.slow.example ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250 mx.slow.example\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = b""
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        body += chunk
                    self.data_seen.set()
                    if self.hang:
                        await asyncio.Event().wait()  # never answers: the client is killed
                    self.messages.append(body)
                    self.delivered.set()
                    writer.write(b"250 2.0.0 accepted\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()


@dataclass
class Sim:
    """The running world and what the gateway needs to reach it."""

    dns: FakeDns
    policy: PolicyHost
    mx1: ReceivingMta
    sender_mx: ReceivingMta
    sink: ReportSink
    slow: HangingMx | None
    endpoints: dict[tuple[str, int], tuple[str, int]]
    ca_file: Path
    clock: ManualClock = field(default_factory=lambda: ManualClock(START))

    def dialer(self) -> Dialer:
        return Dialer(endpoint_map=dict(self.endpoints), loopback_only=True)

    def config_text(self, queue: Path, **profile: str) -> str:
        host, port = self.dns.address
        extra = "".join(f"{k} = {v}\n" for k, v in profile.items())
        return (
            f'[dns]\nresolvers = ["{host}:{port}"]\ntimeout = 2.0\n'
            f'[tls]\nca_file = "{self.ca_file}"\n'
            f'[queue]\npath = "{queue}"\n'
            '[listener]\nhost = "127.0.0.1"\nport = 0\n'
            '[destination_controls.default]\ntls = "preferred"\n'
            '[destination_controls."example.com"]\ntls = "required-verify-hosted"\nmta_sts = true\n'
            + extra
        )

    def endpoints_json(self, path: Path) -> Path:
        rows = [[a, p, ra, rp] for (a, p), (ra, rp) in self.endpoints.items()]
        path.write_text(json.dumps({"endpoints": rows, "loopback_only": True}))
        return path


def _server_cert(name: str) -> ServerCert:
    cert = factory().issue(name)
    return ServerCert(cert.chain_pem, cert.private_key_pem)


class SimWorld:
    """``async with SimWorld(tmp_path) as sim`` builds the world described above."""

    def __init__(self, tmp: Path, *, slow: bool = False, mx1_script: Script | None = None) -> None:
        self.tmp, self.slow, self.mx1_script = tmp, slow, mx1_script
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Sim:
        stack = self._stack
        block = DEFAULT_ALLOCATOR.block()
        stack.callback(block.release)
        a_mx1, a_sender, a_sts, a_sink, a_slow = (block.take() for _ in range(5))
        endpoints: dict[tuple[str, int], tuple[str, int]] = {}
        mx1 = await stack.enter_async_context(
            ReceivingMta(
                a_mx1,
                "mx1.example.com",
                cert=_server_cert("mx1.example.com"),
                script=self.mx1_script,
            )
        )
        sender_mx = await stack.enter_async_context(
            ReceivingMta(a_sender, "mx.sender.example", cert=_server_cert("mx.sender.example"))
        )
        policy = await stack.enter_async_context(PolicyHost())
        cert = factory().issue("mta-sts.example.com")
        endpoints[(a_sts, 443)] = await policy.add_host(
            "mta-sts.example.com",
            address=a_sts,
            cert=(cert.chain_pem, cert.private_key_pem),
            response=PolicyResponse(body=POLICY.encode()),
        )
        scert = factory().issue("rpt.example")
        sink = await stack.enter_async_context(
            ReportSink("rpt.example", address=a_sink, cert=(scert.chain_pem, scert.private_key_pem))
        )
        endpoints[(a_sink, 443)] = sink.endpoint
        endpoints[(a_mx1, 25)] = mx1.address
        endpoints[(a_sender, 25)] = sender_mx.address
        slow = None
        if self.slow:
            slow = await stack.enter_async_context(HangingMx(a_slow))
            endpoints[(a_slow, 25)] = (a_slow, slow.port)
        rua = "https://rpt.example/tlsrpt,mailto:tlsrpt@sender.example"
        zones = [
            Zone("example.com", DnssecStatus.INSECURE)
            .mx(10, "mx1.example.com")
            .a("mx1.example.com", a_mx1)
            .txt("_mta-sts.example.com", "v=STSv1; id=20260101")
            .a("mta-sts.example.com", a_sts)
            .txt("_smtp._tls.example.com", f"v=TLSRPTv1; rua={rua}"),
            Zone("sender.example", DnssecStatus.INSECURE)
            .mx(10, "mx.sender.example")
            .a("mx.sender.example", a_sender),
            Zone("rpt.example", DnssecStatus.INSECURE).a("rpt.example", a_sink),
            Zone("slow.example", DnssecStatus.INSECURE)
            .mx(10, "mx.slow.example")
            .a("mx.slow.example", a_slow),
        ]
        dns = await stack.enter_async_context(FakeDns(zones, address=block.dns))
        ca_file = self.tmp / "ca.pem"
        ca_file.write_bytes(factory().ca_bundle_pem)
        return Sim(dns, policy, mx1, sender_mx, sink, slow, endpoints, ca_file)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


__all__ = ["POLICY", "START", "HangingMx", "Sim", "SimWorld", "StartTls"]
