"""A program under the adapter's control: started, its log lines read as they arrive, stopped.

Theory of operation
-------------------
:class:`ManagedProcess` starts one program with ``asyncio.create_subprocess_exec``
in a session of its own (so its process group id is its pid, and the children it
forks -- Postfix's daemons -- can be ended with it, by that id and nothing else).
Two reader tasks split stdout and stderr into lines; each line is appended to
:attr:`ManagedProcess.lines` and handed to an ``on_line`` callback, and waiters are
woken. Readiness and outcomes are therefore *signals*: :meth:`wait_for` returns as
soon as a matching line arrives (or the program dies, or the timeout passes).

Stopping: the profile's stop command if it has one (``postfix stop``, which returns
before Postfix has exited), else SIGTERM; then the adapter waits for *the program
itself* to exit -- the only reliable "it is gone". After a grace period the whole
process group gets SIGKILL. The reader tasks end at EOF and are awaited, so nothing
outlives :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence

from harness.adapters.base import AdapterError

__all__ = ["LineCallback", "ManagedProcess"]

#: Called with (stream name, line) for every line, in arrival order.
LineCallback = Callable[[str, str], None]
_GRACE = 10.0


class ManagedProcess:
    """One started program and its log lines (see the module docstring).

    Args:
        name: a label for errors.
        argv: the command line.
        env: the full environment.
        cwd: the working directory.
        on_line: called for every line (stdout and stderr).
        logs: files the program writes its log to (Exim): each is followed from its
            current end by a ``tail -F`` of our own, and its lines count as the
            program's (stream ``log``), readiness included.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
        on_line: LineCallback | None = None,
        logs: Sequence[str] = (),
    ) -> None:
        self.name = name
        self._logs = list(logs)
        self._tails: list[asyncio.subprocess.Process] = []
        self.argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._on_line = on_line
        self.lines: list[tuple[str, str]] = []
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        """The program's pid (also its process group id), while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Started and not yet exited."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the program.

        Raises:
            AdapterError: it cannot be executed.
        """
        # Where each log file ends *before* the program starts: it may write its first
        # lines (readiness) before a follower is running; a restart must not re-read the
        # last run's lines.
        ends = [os.path.getsize(log) if os.path.exists(log) else 0 for log in self._logs]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise AdapterError(f"{self.name}: cannot run {self.argv[0]!r}: {exc}") from exc
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read("stdout", self._proc.stdout)),
            asyncio.create_task(self._read("stderr", self._proc.stderr)),
        ]
        for log, end in zip(self._logs, ends, strict=True):
            # tail, not a polling loop of ours: -F waits for the file and follows it
            # (inotify), across a rotation too.
            tail = await asyncio.create_subprocess_exec(
                "tail", "-F", "-s", "0.1", "-c", f"+{end + 1}", log,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            self._tails.append(tail)
            assert tail.stdout is not None
            self._readers.append(asyncio.create_task(self._read("log", tail.stdout)))

    async def _read(self, stream: str, reader: asyncio.StreamReader) -> None:
        while raw := await reader.readline():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append((stream, line))
            if self._on_line is not None:
                self._on_line(stream, line)
            self._changed.set()
        self._changed.set()

    def tail(self, n: int = 15) -> str:
        """The last ``n`` lines, for error messages."""
        return "\n".join(f"  {s}: {ln}" for s, ln in self.lines[-n:])

    async def wait_for(self, pattern: str | re.Pattern[str], timeout: float, start: int = 0) -> int:
        """Wait until a line (from index ``start`` on) matches ``pattern``.

        Returns:
            The index of the matching line in :attr:`lines`.

        Raises:
            AdapterError: the program exited first, or ``timeout`` passed.
        """
        rx = re.compile(pattern)
        pos = start
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for i in range(pos, len(self.lines)):
                        if rx.search(self.lines[i][1]):
                            return i
                    pos = len(self.lines)
                    if self._proc is None or (
                        # Its own output read to the end (a log follower runs on).
                        self._proc.returncode is not None
                        and all(t.done() for t in self._readers[:2])
                    ):
                        code = None if self._proc is None else self._proc.returncode
                        raise AdapterError(
                            f"{self.name} exited (status {code}) before logging "
                            f"{rx.pattern!r}; last lines:\n{self.tail()}"
                        )
                    self._changed.clear()
                    waiter = asyncio.create_task(self._changed.wait())
                    exited = asyncio.create_task(self._proc.wait())
                    try:
                        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for t in (waiter, exited):
                            t.cancel()
                        await asyncio.gather(waiter, exited, return_exceptions=True)
        except TimeoutError:
            raise AdapterError(
                f"{self.name}: no line matching {rx.pattern!r} within {timeout:g} s; "
                f"last lines:\n{self.tail()}"
            ) from None

    async def stop(
        self, stop_argv: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        """Ask the program to stop, wait until it has exited, reap its readers."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                if stop_argv:
                    helper = await asyncio.create_subprocess_exec(
                        *stop_argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                        env=dict(env or self._env),
                    )
                    await helper.wait()
                else:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(_GRACE):
                        await proc.wait()
                except TimeoutError:
                    pass
            # Our program's own process group (its pid): leftovers such as Postfix
            # daemons still finishing a delivery.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        finally:
            for tail in self._tails:  # the log followers end with their program
                with contextlib.suppress(ProcessLookupError):
                    tail.kill()
                await tail.wait()
            self._tails = []
            async with asyncio.timeout(_GRACE):
                await asyncio.gather(*self._readers, return_exceptions=True)
            self._readers = []
