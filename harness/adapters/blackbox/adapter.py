"""The black-box adapter: a real MTA, from a profile, inside the world's namespace.

Theory of operation
-------------------
:class:`BlackBoxEngine` is an :class:`~harness.adapters.base.EngineUnderTest` for any
profile of ``fixtures/engines/`` (:mod:`harness.adapters.blackbox.profile`). It only
works in a harness network namespace (:mod:`harness.netns`): the runner, the world
and the MTA share it, which :mod:`harness.run.batch.child` arranges.

``start``: make the world answer on 53/443/25 (:class:`~harness.world.ports.StandardPorts`),
write the instance directory (the world's root as ``ca.pem``, an empty ``no-certs``
directory for ``SSL_CERT_DIR``, the rendered templates), start the helpers and then
the MTA, each ready when its profile's ``ready`` line arrives.

``send``: submit over SMTP to the MTA's local port; the final reply's queue id ties
the MTA's later log lines to this message. Then wait -- for log lines, not for time --
until the driver has settled every recipient (delivered, deferred or bounced after
the MTA's first attempt). A recipient's record carries the MX from the log; its TLS
version and whether it was authenticated come from the world's session at that MX
and the MTA's own TLS line (``Verified`` etc., mapped by the profile). Outcomes are
therefore judged from what the world observed, with the MTA's log only naming which
of its sessions is which.

Capabilities come from the profile: black-box MTAs have no clock control, and their
logs are not our event codes, so ``events``/``logs`` expectations do not apply to them
(:func:`harness.run.batch.plan.world_view` drops those, and says so).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosmtplib

from harness.adapters.base import AdapterError
from harness.adapters.blackbox.drivers import Driver, Parsed, driver_for
from harness.adapters.blackbox.proc import ManagedProcess
from harness.adapters.blackbox.profile import (
    BASE_PLACEHOLDERS,
    EngineProfile,
    load_profile,
    render,
)
from harness.netns import current_namespace
from harness.scenario.model import Capability
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.mta.records import MtaSession
from harness.world.ports import StandardPorts
from harness.world.timeline import TimedMta
from harness.world.world import World

__all__ = [
    "LOG_LINE",
    "READY_TIMEOUT",
    "SETTLE_TIMEOUT",
    "BlackBoxEngine",
    "settle_except",
]

READY_TIMEOUT = 20.0
SETTLE_TIMEOUT = 8.0
SUBMIT_PORT = 10025
HELPER_PORT = 8461
HOSTNAME = "sender.harness.test"
#: The event code of a log line that the profile's log map does not turn into an event.
LOG_LINE = "mta.log"
# The MTA's word for a session's trust -> ours (None: the profile's `verified`).
_TRUST = {"verified": None, "trusted": "none", "untrusted": "none", "anonymous": "none"}
_TRUST |= {"secure": None, "insecure": "none", "plain": "clear"}  # chasquid
_TRUST |= {"dane": "dane", "yes": "pkix", "no": "none"}  # Exim's CV=


class BlackBoxEngine:
    """A real MTA under test (see the module docstring).

    Args:
        profile: a profile name (``postfix-sts``) or a loaded profile.
        overrides: extra template values (the benchmark turns connection caching on).
    """

    def __init__(
        self, profile: str | EngineProfile, *, overrides: Mapping[str, str] | None = None
    ) -> None:
        self.profile = profile if isinstance(profile, EngineProfile) else load_profile(profile)
        self.capabilities: frozenset[Capability] = self.profile.capabilities
        self._overrides = dict(overrides or {})
        self._driver: Driver = driver_for(self.profile)
        self._world: World | None = None
        self._ports: StandardPorts | None = None
        self._ctx: dict[str, str] = {}
        self._env: dict[str, str] = {}
        self._helpers: list[ManagedProcess] = []
        self._mta: ManagedProcess | None = None
        self._parsed: list[Parsed] = []
        self._events: list[EventRecord] = []
        self._changed = asyncio.Event()
        self._mid = 0

    # -- EngineUnderTest ---------------------------------------------------------------

    def now(self) -> float:
        """The real clock: a real MTA has no other."""
        return time.time()

    async def start(self, world: World, sender: Mapping[str, Any], workdir: Path) -> None:
        """Write the instance, start the helpers and the MTA (see the module docstring).

        Raises:
            AdapterError: not inside a harness namespace, a binary is missing, or a
                program did not become ready.
        """
        if current_namespace() is None:
            raise AdapterError(
                f"engine {self.profile.name!r} runs only inside a harness network namespace "
                "(use `sts-harness matrix` or harness.run.batch.child)"
            )
        self._world = world
        self._ports = StandardPorts(world)
        self._ports.sync()
        os.chmod(workdir, 0o755)  # the MTA's unprivileged daemons read the instance
        inst = workdir / self.profile.name
        inst.mkdir(mode=0o755, exist_ok=True)
        (inst / "ca.pem").write_bytes(world.ca_pem)
        (inst / "no-certs").mkdir(exist_ok=True)
        self._ctx = {
            "dir": str(inst),
            "ca_file": str(inst / "ca.pem"),
            "no_certs": str(inst / "no-certs"),
            "venv_bin": str(Path(sys.executable).parent),
            "submit_port": str(SUBMIT_PORT),
            "helper_port": str(HELPER_PORT),
            "hostname": HOSTNAME,
            "connection_cache": "no",
        }
        assert set(self._ctx) == set(BASE_PLACEHOLDERS)  # what `profile check` accepts
        self._ctx |= self._driver.prepare(inst, world, sender)
        self._ctx |= self._overrides
        for binary in self.profile.binaries:
            path = render(binary, self._ctx)
            if shutil.which(path) is None:
                raise AdapterError(f"{self.profile.name}: {path!r} is not installed")
        for name, template in self.profile.files.items():
            (inst / name).write_text(render(template, self._ctx), encoding="utf-8")
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(inst),
            "LANG": "C.UTF-8",
            # Trust the world's root only: every TLS stack we run reads these two.
            "SSL_CERT_FILE": self._ctx["ca_file"],
            "SSL_CERT_DIR": self._ctx["no_certs"],
        }
        if users := self._driver.state.get("users_cmd"):
            done = await asyncio.create_subprocess_exec(
                *users, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            _, err = await done.communicate()
            if done.returncode:
                raise AdapterError(f"{self.profile.name}: {users[0]} failed: {err.decode()}")
        for spec in self.profile.helpers:
            proc = self._process(spec.name, spec.argv, spec.env, spec.logs)
            self._helpers.append(proc)
            await proc.start()
            await proc.wait_for(spec.ready, READY_TIMEOUT)
        await self._start_mta()

    async def _start_mta(self) -> None:
        spec = self.profile.mta
        self._mta = self._process(spec.name, spec.argv, spec.env, spec.logs)
        await self._mta.start()
        await self._mta.wait_for(spec.ready, READY_TIMEOUT)

    def _process(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], logs: Sequence[str] = ()
    ) -> ManagedProcess:
        full = self._env | {k: render(v, self._ctx) for k, v in env.items()}
        return ManagedProcess(
            name,
            [render(a, self._ctx) for a in argv],
            env=full,
            cwd=self._ctx["dir"],
            on_line=functools.partial(self._line, name),
            logs=[render(f, self._ctx) for f in logs],
        )

    def _line(self, program: str, stream: str, line: str) -> None:
        at = self._world.dns.clock() if self._world is not None else 0.0
        parsed = self._driver.parse(stream, line)
        for p in parsed:
            self._parsed.append(p)
            self._events.append(EventRecord(p.code, dict(p.fields), p.level, time.time(), at, line))
        if not parsed:
            # Kept for the reports (why did the MTA skip that host?), judged by nothing:
            # black boxes have no `events` or `logs` expectations (world_view).
            rec = EventRecord(LOG_LINE, {"program": program}, "debug", time.time(), at, line)
            self._events.append(rec)
        self._changed.set()

    async def send(
        self, mail_from: str, rcpts: Sequence[str], data: bytes, *, final: bool = False
    ) -> Sequence[DeliveryRecord]:
        """Submit one message and wait until the MTA settled every recipient.

        ``final`` is not supported (no capability ``final``): the runner never passes it.

        Raises:
            AdapterError: the MTA is not running, refused the message, or did not
                settle every recipient within :data:`SETTLE_TIMEOUT`.
        """
        if self._mta is None or not self._mta.running or self._world is None:
            raise AdapterError(f"{self.profile.name} is not running")
        assert self._ports is not None
        self._ports.sync()  # a mutation may have added an MX
        before = len(self._world.sessions())
        # MX hosts still busy with an earlier message (a stall the MTA has not given up
        # on yet): not this message's, so not waited for below.
        busy = {h for h, m in self._world.mtas.items() if m.live_sessions}
        qid = await self._submit(mail_from, rcpts, data)
        self._mid += 1
        settled: dict[str, Mapping[str, Any]] = {}
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                while True:
                    self._changed.clear()
                    settled = self._driver.settle(qid, rcpts, self._parsed)
                    if all(r.lower() in settled for r in rcpts):
                        break
                    await self._changed.wait()
        except TimeoutError:
            missing = [r for r in rcpts if r.lower() not in settled]
            raise AdapterError(
                f"{self.profile.name}: no outcome for {missing} of queue id {qid} within "
                f"{SETTLE_TIMEOUT:g} s; last lines:\n{self._mta.tail()}"
            ) from None
        await settle_except(self._world.mtas, busy)  # this message's sessions are complete
        sessions = self._world.sessions()[before:]  # this message's, by start time
        return [self._record(r, settled[r.lower()], sessions) for r in rcpts]

    async def _submit(self, mail_from: str, rcpts: Sequence[str], data: bytes) -> str:
        sub = self.profile.submit
        port = int(render(sub.port, self._ctx))
        ctx = ssl.create_default_context(cafile=self._ctx["ca_file"])
        ctx.check_hostname = False  # the MTA's own name is not what is under test
        assert self._mta is not None
        mark = len(self._mta.lines)
        try:
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=port, timeout=10, tls_context=ctx, start_tls=None
            )
            async with client:
                local = client.get_transport_info("sockname")
                if sub.auth:
                    user, _, password = render(sub.auth, self._ctx).partition(":")
                    await client.login(user, password)
                # RFC 6531: non-ASCII addresses (an IDN recipient) need SMTPUTF8.
                utf8 = not all(a.isascii() for a in (mail_from, *rcpts))
                options = ["SMTPUTF8"] if utf8 else []
                _, reply = await client.sendmail(mail_from, list(rcpts), data, mail_options=options)
        except aiosmtplib.SMTPException as exc:
            raise AdapterError(f"{self.profile.name} refused the submission: {exc}") from exc
        if sub.queued_log and local:
            rx = render(sub.queued_log, self._ctx | {"client_port": str(local[1])})
            i = await self._mta.wait_for(rx, READY_TIMEOUT, start=mark)
            m = re.search(rx, self._mta.lines[i][1])
        else:
            m = re.search(sub.queued, reply)
        if m is None:
            raise AdapterError(f"{self.profile.name}: no queue id in {reply!r} ({sub.queued!r})")
        return m.group("qid")

    def _record(
        self, rcpt: str, f: Mapping[str, Any], sessions: Sequence[MtaSession]
    ) -> DeliveryRecord:
        status, mx = str(f.get("status")), f.get("mx")
        tls, verified = None, "clear"
        if status == "delivered":
            delivering = [s for s in sessions if any(t.delivered for t in s.transactions)]
            # The MTA's MX name may be a CNAME alias of the host the world knows.
            at_mx = [s for s in delivering if s.mx_host == mx] or delivering
            if at_mx:
                tls = at_mx[-1].tls_version
                mx = mx or at_mx[-1].mx_host
            verified = self._verified(f, mx, rcpt) if tls else "clear"
        reason = str(f.get("reason") or "")
        return DeliveryRecord(self._mid, rcpt, status, mx, tls, verified, reason, None)

    def _verified(self, outcome: Mapping[str, Any], mx: str | None, rcpt: str) -> str:
        proc = outcome.get("proc")
        for p in reversed(self._parsed):
            if p.code != "tls.established":
                continue
            if p.fields.get("mx", mx) == mx and p.fields.get("rcpt", rcpt).lower() == rcpt.lower():
                if proc is not None and p.fields.get("proc") not in (None, proc):
                    continue
                trust = str(p.fields.get("trust", "")).lower()
                return _TRUST.get(trust) or self.profile.verified
        return "none"

    async def advance(self, seconds: float) -> None:
        """Not possible: a real MTA reads the real clock."""
        raise AdapterError(f"{self.profile.name} has no clock control")

    async def restart(self) -> None:
        """Stop and start the MTA; helpers (the policy resolver and its cache) stay.

        Raises:
            AdapterError: the profile has no ``restart`` capability.
        """
        if Capability.RESTART not in self.capabilities or self._mta is None:
            raise AdapterError(f"{self.profile.name} cannot restart")
        await self._mta.stop([render(a, self._ctx) for a in self.profile.mta.stop])
        await self._start_mta()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checking it at each new log line.

        Raises:
            AdapterError: it still does not hold after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    if predicate():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise AdapterError(f"{self.profile.name}: condition not met in {timeout:g} s") from None

    def events(self) -> Sequence[EventRecord]:
        """Every event read from the MTA's and helpers' logs so far."""
        return self._events

    def log_lines(self) -> list[str]:
        """Every raw log line of the MTA (for reports and divergence notes)."""
        return [ln for _, ln in self._mta.lines] if self._mta else []

    async def stop(self) -> None:
        """Stop the MTA, then the helpers in reverse order, waiting for each to exit."""
        errors: list[BaseException] = []
        if self._mta is not None:
            try:
                await self._mta.stop([render(a, self._ctx) for a in self.profile.mta.stop])
            except Exception as exc:
                errors.append(exc)
        for spec, proc in reversed(list(zip(self.profile.helpers, self._helpers, strict=False))):
            try:
                await proc.stop([render(a, self._ctx) for a in spec.stop])
            except Exception as exc:
                errors.append(exc)
        self._helpers, self._mta = [], None
        if errors:
            raise ExceptionGroup(f"{self.profile.name}: stopping failed", errors)  # type: ignore[type-var]


async def settle_except(mtas: Mapping[str, TimedMta], busy: set[str]) -> None:
    """Wait until every MX in ``mtas`` but the ``busy`` ones has no live session.

    In a batch, an MX left stalled by an earlier scenario stays live until the MTA
    gives up on it (chasquid: 10 minutes); waiting for the whole world would make
    every later message of the batch time out.
    """
    for host, mta in mtas.items():
        if host not in busy:
            await mta.settle()
