"""What the ``sts-engine`` process adapter reads and says: its logs, its control socket.

Theory of operation
-------------------
The gateway under test writes every event twice, in the same order: a ``mail_logs``
line on stdout (``--log-level debug``) and a JSON object on stderr (``--json-log
/dev/stderr``) whose ``text`` is that line's text. :class:`ProcessLog` reads both pipes
as they come and pairs them into :class:`~harness.scenario.observation.EventRecord` s:
code, fields, level and clock from the JSON, and the line *the process printed*, after
checking that it is exactly ``<ctime> <Level>: <text>`` of its JSON twin (events in
:data:`engine.logs.INTERNAL` print no line). Anything else on stderr (a warning, a
traceback) is kept as noise; the adapter fails the run on it.

No polling, no sleeps: every control reply that ends a step (``settle``, ``advance``)
says how many events the process had written by then (:mod:`engine.gateway.control`), and
:meth:`ProcessLog.caught_up` waits, on the pipes' own readiness, until that many JSON
lines and their printed lines have arrived. Both were written (line-buffered) before
the reply was sent, so the wait ends as soon as the pipes are read.

:class:`Control` is the adapter's side of the control socket: one connection, JSON
lines, an :class:`~harness.adapters.base.AdapterError` for a refused request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.logs import INTERNAL, format_ctime
from harness.adapters.base import AdapterError
from harness.scenario.observation import EventRecord

__all__ = ["LINE_LIMIT", "Control", "ProcessLog", "pipe_reader"]

#: The longest log line read (a DNS encache line with many records is long).
LINE_LIMIT = 16 * 1024 * 1024
_CONTROL_TIMEOUT = 60.0


async def pipe_reader(fd: int) -> asyncio.StreamReader:
    """A stream reader over the read end ``fd`` of a pipe (the reader owns it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


class ProcessLog:
    """The events of one gateway process, paired from its two log streams.

    Args:
        stdout: the process's stdout (``mail_logs`` lines).
        stderr: its stderr (JSON events, and any noise).
        stamp: event clock -> world time (for the run's timeline).
        records: where paired events go (shared across restarts).
    """

    def __init__(
        self,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        stamp: Callable[[float], float],
        records: list[EventRecord],
    ) -> None:
        self.records = records
        self.json: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.noise: list[str] = []
        self._stamp = stamp
        self._paired = self._used_lines = 0
        self._wake = asyncio.Event()
        self._eof = 0
        self._tasks = [
            asyncio.create_task(self._read(stdout, self._line)),
            asyncio.create_task(self._read(stderr, self._event)),
        ]

    async def _read(self, stream: asyncio.StreamReader, take: Callable[[str], None]) -> None:
        try:
            while raw := await stream.readline():
                take(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
                self._wake.set()
        finally:
            self._eof += 1
            self._wake.set()

    def _line(self, text: str) -> None:
        self.lines.append(text)

    def _event(self, text: str) -> None:
        try:
            rec = json.loads(text)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and "code" in rec:
            self.json.append(rec)
        elif text.strip():
            self.noise.append(text)

    @property
    def ended(self) -> bool:
        """Both streams reached EOF (the process is gone)."""
        return self._eof >= 2

    def _pair(self) -> None:
        """Turn every JSON event whose printed line has arrived into a record."""
        while self._paired < len(self.json):
            rec = self.json[self._paired]
            code, level, at = str(rec["code"]), str(rec.get("level", "info")), float(rec["at"])
            line = ""
            if code not in INTERNAL:
                if self._used_lines >= len(self.lines):
                    return
                line = self.lines[self._used_lines]
                want = f"{format_ctime(at)} {level.capitalize()}: {rec.get('text', '')}"
                if line != want:
                    raise AdapterError(
                        f"the gateway's stdout and JSON log disagree at event {self._paired} "
                        f"({code}): printed {line!r}, JSON says {want!r}"
                    )
                self._used_lines += 1
            fields = rec.get("fields") or {}
            self.records.append(EventRecord(code, fields, level, at, self._stamp(at), line))
            self._paired += 1

    async def until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        """Wait, on the pipes, until ``done()`` holds.

        Raises:
            AdapterError: the process ended first, or ``timeout`` passed.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._wake.clear()
                    self._pair()
                    if done():
                        return
                    if self.ended:
                        raise AdapterError(f"the gateway ended before {what}{self.stderr_tail()}")
                    await self._wake.wait()
        except TimeoutError:
            raise AdapterError(f"no {what} after {timeout:g} s{self.stderr_tail()}") from None

    async def caught_up(self, events: int, timeout: float = _CONTROL_TIMEOUT) -> None:
        """Wait until the first ``events`` events and their lines are paired."""
        await self.until(lambda: self._paired >= events, f"{events} events", timeout)

    def ready_port(self) -> int | None:
        """The listener's port, once its ``listener.ready`` event is in."""
        self._pair()
        for rec in self.json:
            if rec.get("code") == "listener.ready":
                return int(rec["fields"]["port"])
        return None

    async def drain(self) -> None:
        """Read both streams to their end (after the process exited) and pair the rest."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pair()
        if self._paired < len(self.json):
            missing = len(self.json) - self._paired
            raise AdapterError(f"{missing} events have no printed line{self.stderr_tail()}")

    async def aclose(self) -> None:
        """Stop reading (the process may still run)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stderr_tail(self) -> str:
        """``: <the last lines of stderr noise>``, or nothing."""
        return f": {' / '.join(self.noise[-6:])}" if self.noise else ""


class Control:
    """A connection to a gateway's control socket (:mod:`engine.gateway.control`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its reply.

        Raises:
            AdapterError: no answer, or ``"ok": false`` (its error is quoted).
        """
        (reply,) = await self.pipeline({"op": op, **args})
        return reply

    async def pipeline(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        """Send several requests at once; their replies, in order (the gateway answers
        one connection's requests one after the other, so each sees the ones before).

        Raises:
            AdapterError: no answer, or a reply with ``"ok": false`` (its error is quoted).
        """
        ops = ", ".join(str(r.get("op")) for r in requests)
        lines = []
        try:
            async with asyncio.timeout(_CONTROL_TIMEOUT):
                if self._conn is None:
                    self._conn = await asyncio.open_unix_connection(str(self.path))
                reader, writer = self._conn
                writer.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
                await writer.drain()
                for _ in requests:
                    lines.append(await reader.readline())
        except (OSError, TimeoutError) as exc:
            await self.aclose()
            raise AdapterError(f"control {ops}: {exc!r}") from exc
        if not all(lines):
            await self.aclose()
            raise AdapterError(f"control {ops}: the gateway closed its control socket")
        replies: list[dict[str, Any]] = [json.loads(line) for line in lines]
        for req, reply in zip(requests, replies, strict=True):
            if not reply.get("ok"):
                raise AdapterError(f"control {req.get('op')}: {reply.get('error')}")
        return replies

    async def aclose(self) -> None:
        """Close the connection (a new request opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()
            with contextlib.suppress(OSError):
                await conn[1].wait_closed()
