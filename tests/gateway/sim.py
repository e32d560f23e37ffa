"""A small simulated world for gateway tests: one :class:`~harness.world.World` spec.

The world is built the one way every test builds a world, ``World(spec)``; this module
only names its parts for the gateway tests and adds :class:`HangingMx`, an MX that
hangs after DATA on demand (the crash tests), beside it.

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
from typing import Any

from certs import CertFactory
from engine.core.clock import ManualClock
from engine.io.dialer import Dialer
from harness.world import World
from harness.world.mta.script import MxStartTls, Script
from harness.world.timeline import TimedDns, TimedMta, TimedPolicyHost, TimedReportSink

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

    world: World
    dns: TimedDns
    policy: TimedPolicyHost
    mx1: TimedMta
    sender_mx: TimedMta
    sink: TimedReportSink
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


RUA = "https://rpt.example/tlsrpt,mailto:tlsrpt@sender.example"


def world_spec(*, slow: bool = False) -> dict[str, Any]:
    """The world described above, as a world spec (``slow``: with ``slow.example``)."""
    spec: dict[str, Any] = {
        "domains": {
            "example.com": {
                "mx": [[10, "mx1.example.com"]],
                "mta_sts_txt": ["v=STSv1; id=20260101"],
                "policy": POLICY,
                "tlsrpt_txt": [f"v=TLSRPTv1; rua={RUA}"],
            },
            "sender.example": {"mx": [[10, "mx.sender.example"]]},
        },
        "report_sink": {"name": "rpt.example"},
    }
    if slow:  # its MX in the world only for the address; HangingMx answers there
        spec["domains"]["slow.example"] = {"mx": [[10, "mx.slow.example"]]}
    return spec


class SimWorld:
    """``async with SimWorld(tmp_path) as sim`` builds the world described above."""

    def __init__(self, tmp: Path, *, slow: bool = False, mx1_script: Script | None = None) -> None:
        self.tmp, self.slow, self.mx1_script = tmp, slow, mx1_script
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Sim:
        stack = self._stack
        clock = ManualClock(START)
        spec = world_spec(slow=self.slow)
        w = await stack.enter_async_context(
            World(spec, now=clock.now, certs=factory(), source="<gateway sim>")
        )
        mx1 = w.mta("mx1.example.com")
        if self.mx1_script is not None:
            mx1.script = self.mx1_script
        endpoints = dict(w.endpoint_map)
        slow = None
        if self.slow:
            address = w.address_of("mx.slow.example")
            slow = await stack.enter_async_context(HangingMx(address))
            endpoints[(address, 25)] = (address, slow.port)
        sink = w.report_sink
        assert sink is not None
        ca_file = self.tmp / "ca.pem"
        ca_file.write_bytes(w.ca_pem)
        sender_mx = w.mta("mx.sender.example")
        return Sim(w, w.dns, w.policy_host, mx1, sender_mx, sink, slow, endpoints, ca_file, clock)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


__all__ = ["POLICY", "RUA", "START", "HangingMx", "MxStartTls", "Sim", "SimWorld", "world_spec"]
