"""The ``sts-engine`` adapter: ``sts-engine serve`` as a real process, rootless.

Theory of operation
-------------------
What users run is judged: the gateway as its own process, on its default event loop
(uvloop), with its SMTP listener, SQLite queue, scheduler and TLS reporter, fed over
SMTP and observed through its logs. No network namespace and no root: the gateway
already takes the world's resolver and root from its configuration, and the world's
endpoint map from a hidden ``--endpoints`` file (loopback only).

``start`` writes ``gateway.toml`` from the scenario's ``[sender]``
(:func:`~harness.adapters.process_launch.gateway_toml`), writes the endpoint map, and
starts ``sts-engine serve`` with ``--json-log /dev/stderr --log-level debug
--smtp-timeout 2``. It is ready when its ``listener.ready`` event names the port; the
control socket's ``status`` then confirms it runs on its default loop. The endpoint
map is rewritten (atomically) before every request whenever a step changed the world,
and the gateway's dialer reads it again when it changed.

``send`` submits the message over SMTP (aiosmtplib, SMTPUTF8 when an address needs
it; one connection per process, as an injector keeps one), then asks the control
socket to ``settle``: the reply comes when the message's first attempt and all it set
off at that moment (DSNs, report mail) are done. The records are the queue's verdict
per recipient with the MX, TLS and verification of its last attempt (the control
socket's ``message``), exactly what the in-process ``gateway`` adapter reports.
Events and lines: :mod:`harness.adapters.process_io`.

Time. By default the process runs on the wall clock and ``now`` is the wall clock
(the world issues certificates at it). A scenario that needs ``clock`` (an
``advance`` step) gets ``--clock manual=T`` (hidden, harness-only): the process's
clock starts at T and moves only through the control socket's ``advance``, which walks
every due time with a round at each, as the gateway adapter does in process. The
process, its loop, queue, listener and scheduler are the same either way.

``restart``: ``SIGTERM``, wait for the exit (status 0), start again on the same
queue, policy cache and report state. ``final`` (APPLY-6) is not offered: no operator
command makes an attempt the last one, and editing the queue file under a running
gateway would not be what a user runs (``gateway`` and ``inprocess`` cover it).

Launch (:mod:`harness.adapters.process_launch`): by default a fork server
(:mod:`harness.adapters.forkserver`) that imported the engine once forks a child per
start running ``engine.cli.main(argv)``; engine ``sts-engine-exec`` runs the installed
``sts-engine`` console script instead. The process's stderr must stay empty but for
its JSON events, and it must exit with status 0 at every stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiosmtplib

from engine import eventloop
from engine.core.clock import ManualClock
from engine.io.smtp import SmtpTimeouts
from harness.adapters.base import AdapterError
from harness.adapters.forkserver import UNIX_PATH_MAX
from harness.adapters.process_io import Control, ProcessLog
from harness.adapters.process_launch import (
    Launcher,
    Running,
    dkim_key,
    exec_launch,
    fork_launch,
    gateway_toml,
)
from harness.adapters.wiring import SMTP_TIMEOUT
from harness.scenario.model import Capability
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.world import World

__all__ = ["READY_TIMEOUT", "STOP_TIMEOUT", "ProcessEngine", "exec_engine"]

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_GRACE = 10.0
_QUEUED = re.compile(r"queued as MID (\d+)")
_STATUS = {"delivered": "delivered", "bounced": "bounced"}


class ProcessEngine:
    """:class:`~harness.adapters.base.EngineUnderTest` for ``sts-engine serve`` as a process.

    Args:
        launcher: how the process starts (default: the fork server).
    """

    capabilities = frozenset(Capability) - {Capability.FINAL}
    #: Why a capability is missing (skip reasons, ``sts-harness coverage``).
    missing_why: ClassVar[dict[Capability, str]] = {
        Capability.FINAL: "no operator command makes an attempt the last before a bounce",
    }

    def __init__(self, launcher: Launcher | None = None) -> None:
        self._launch = launcher or fork_launch
        self._clock: ManualClock | None = None
        self._world: World | None = None
        self._workdir: Path | None = None
        self._argv: list[str] = []
        self._records: list[EventRecord] = []
        self._proc: Running | None = None
        self._log: ProcessLog | None = None
        self._control: Control | None = None
        self._smtp: aiosmtplib.SMTP | None = None
        self._port = 0
        self._endpoints: dict[tuple[str, int], tuple[str, int]] | None = None
        self._offset = 0.0
        #: The control socket's ``status`` at each start (pid, loop, clock ...).
        self.starts: list[dict[str, Any]] = []

    def plan(self, needs: frozenset[Capability]) -> None:
        """Before ``start``: a scenario that moves the clock gets a manual one."""
        self._clock = ManualClock() if Capability.CLOCK in needs else None

    def now(self) -> float:
        """The process's clock: the manual one it was given, else the wall clock."""
        return self._clock.now() if self._clock is not None else time.time()

    def events(self) -> Sequence[EventRecord]:
        """Every event so far (paired JSON and printed line)."""
        return self._records

    async def start(self, world: World, sender: Mapping[str, Any], workdir: Path) -> None:
        """Write the configuration and endpoint map, publish the DKIM key, start."""
        self._world, self._workdir = world, workdir
        control = workdir / "sts-engine.ctl"
        if len(str(control).encode()) > UNIX_PATH_MAX:
            raise AdapterError(
                f"the gateway's control socket {str(control)!r} would be longer than a Unix "
                f"socket path may be ({UNIX_PATH_MAX} bytes): set TMPDIR to a shorter directory"
            )
        key = workdir / "dkim.pem"
        pem, record = dkim_key()
        key.write_bytes(pem)
        # RFC 8460 §3 / RPT-10: the reporting domain publishes the signing key (s=tlsrpt).
        await world.add_records(record)
        config = workdir / "gateway.toml"
        try:
            config.write_text(gateway_toml(sender, world, workdir, key), encoding="utf-8")
        except (TypeError, ValueError) as exc:
            raise AdapterError(f"cannot configure the gateway: {exc}") from exc
        self._argv = [
            "serve", "--config", str(config), "--json-log", "/dev/stderr",
            "--log-level", "debug", "--grace", str(_GRACE),
            "--endpoints", str(workdir / "endpoints.json"),
            "--smtp-timeout", str(SmtpTimeouts.uniform(SMTP_TIMEOUT).command),
        ]  # fmt: skip
        # Real clock: the process stamps events with time.time(); the world's timeline
        # counts from its start (monotonic). Manual clock: stamped as they are read.
        self._offset = time.time() - world.dns.clock()
        self._sync_endpoints()
        await self._open()

    def _stamp(self, at: float) -> float:
        assert self._world is not None
        return self._world.dns.clock() if self._clock is not None else at - self._offset

    def _sync_endpoints(self) -> None:
        """Write the world's endpoint map if it changed (atomically: write, rename)."""
        assert self._world is not None and self._workdir is not None
        current = self._world.endpoint_map
        if current == self._endpoints:
            return
        rows = [[a, p, ra, rp] for (a, p), (ra, rp) in sorted(current.items())]
        path = self._workdir / "endpoints.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"endpoints": rows}), encoding="utf-8")
        os.replace(tmp, path)
        self._endpoints = current

    async def _open(self) -> None:
        assert self._workdir is not None
        argv = list(self._argv)
        if self._clock is not None:
            argv.append(f"--clock=manual={self._clock.now()!r}")
        env = {k: v for k, v in os.environ.items() if k != "STS_ENGINE_LOOP"}  # its default
        self._proc = proc = await self._launch(argv, self._workdir, env)
        self._log = log = ProcessLog(proc.stdout, proc.stderr, self._stamp, self._records)
        try:
            await log.until(lambda: log.ready_port() is not None, "listener.ready", READY_TIMEOUT)
        except AdapterError:
            if not log.ended:
                proc.signal(signal.SIGKILL)
            code = await self._reap()
            raise AdapterError(
                f"cannot configure the gateway: {' / '.join(log.noise) or 'no message'}"
                f" (exit status {code})"
            ) from None
        self._port = log.ready_port() or 0
        self._control = Control(self._workdir / "sts-engine.ctl")
        status = await self._control.request("status")
        # What users run: the gateway's default loop (uvloop where installed).
        default = "uvloop" if eventloop.loop_available("uvloop") else "asyncio"
        if status["loop"] != default:
            raise AdapterError(f"sts-engine serve runs on {status['loop']}, not {default}")
        self.starts.append(status)

    async def _reap(self) -> int:
        """Wait for the process to exit and read its streams to the end."""
        proc, log, self._proc = self._proc, self._log, None
        if proc is None:
            return 0
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                code = await proc.wait()
        except TimeoutError:
            proc.signal(signal.SIGKILL)
            code = await proc.wait()
        if log is not None:
            await log.drain()
        return code

    async def _close(self) -> None:
        """Quit the SMTP connection, SIGTERM the gateway, check how it ended."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
        if self._control is not None:
            await self._control.aclose()
        if self._proc is None:
            return
        self._proc.signal(signal.SIGTERM)
        log = self._log
        code = await self._reap()
        if code != 0:
            tail = log.stderr_tail() if log else ""
            raise AdapterError(f"sts-engine serve exited with status {code}{tail}")
        if log is not None and log.noise:
            raise AdapterError(f"sts-engine serve wrote to stderr{log.stderr_tail()}")

    async def _request(self, op: str, **args: Any) -> dict[str, Any]:
        (reply,) = await self._pipeline({"op": op, **args})
        return reply

    async def _pipeline(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        """Control requests; then wait until the log holds every event they reported."""
        if self._control is None or self._log is None:
            raise AdapterError("the gateway is not running")
        replies = await self._control.pipeline(*requests)
        counts = [int(r["events"]) for r in replies if "events" in r]
        if counts:
            await self._log.caught_up(max(counts))
        return replies

    async def _submit(self, mail_from: str, rcpts: Sequence[str], data: bytes) -> int:
        if self._smtp is None or not self._smtp.is_connected:
            self._smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=self._port, timeout=READY_TIMEOUT, start_tls=False
            )
            await self._smtp.connect()
        addresses = [mail_from, *rcpts]
        options = [] if all(a.isascii() for a in addresses) else ["SMTPUTF8"]
        try:
            _, reply = await self._smtp.sendmail(mail_from, list(rcpts), data, mail_options=options)
        except aiosmtplib.SMTPException as exc:
            raise AdapterError(f"the gateway refused the message: {exc}") from exc
        found = _QUEUED.search(reply)
        if found is None:
            raise AdapterError(f"no MID in the gateway's reply {reply!r}")
        return int(found.group(1))

    async def send(
        self, mail_from: str, rcpts: Sequence[str], data: bytes, *, final: bool = False
    ) -> Sequence[DeliveryRecord]:
        """Submit over SMTP, settle, and read the queue's verdict per recipient."""
        if final:
            raise AdapterError("engine 'sts-engine' has no capability 'final'")
        self._sync_endpoints()
        mid = await self._submit(mail_from, rcpts, data)
        # One write: settle, then the message's verdict once settled.
        _, msg = await self._pipeline({"op": "settle"}, {"op": "message", "mid": mid})
        out = []
        for row in msg["recipients"]:
            status = _STATUS.get(row["state"], "deferred")
            a = row["last_attempt"]
            if a is None:
                out.append(DeliveryRecord(mid, row["rcpt"], status, reason=row["last_error"] or ""))
                continue
            out.append(
                DeliveryRecord(
                    mid,
                    row["rcpt"],
                    status,
                    a["mx"],
                    a["tls"],
                    a["verification"],
                    a["reason"] or "",
                    a["result_type"],
                )
            )
        return out

    async def advance(self, seconds: float) -> None:
        """Move the process's manual clock, with a round at every due time."""
        if self._clock is None:
            raise AdapterError("this run has no manual clock (the scenario needs no 'clock')")
        self._sync_endpoints()
        reply = await self._request("advance", seconds=seconds)
        self._clock.set(float(reply["now"]))

    async def restart(self) -> None:
        """SIGTERM, a clean exit, and a new process on the same files."""
        await self._close()
        self._sync_endpoints()
        await self._open()

    async def stop(self) -> None:
        """Stop the process (also after a failed start)."""
        try:
            await self._close()
        finally:
            if self._log is not None:
                await self._log.aclose()


def exec_engine() -> ProcessEngine:
    """``--engine sts-engine-exec``: the gateway started by ``exec``, not forked."""
    return ProcessEngine(exec_launch)
