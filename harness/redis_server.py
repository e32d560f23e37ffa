"""A throwaway ``redis-server`` for the cluster tests and benchmark (docs/cluster.md).

Debian's ``redis-server`` runs in the foreground on a Unix socket in a directory of
its own (no TCP port: ``--port 0``), with nothing written to disk. It is ready when
it says so on its standard output ("Ready to accept connections"), read as a
signal, never polled. :meth:`RedisServer.stop` and :meth:`RedisServer.start` take it
away and bring it back on the same socket (an outage), :meth:`RedisServer.pause`
freezes it (``SIGSTOP``: connections hang, the case the gateway's timeouts are for).

We start it ourselves rather than with pytest-redis: the tests need a Unix socket
path that survives a restart and a frozen server, and the benchmark (no pytest)
needs it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["REDIS_MISSING", "RedisServer", "redis_server_path"]

#: The skip reason where the server is missing.
REDIS_MISSING = "redis-server is not installed (apt-get install redis-server)"
_READY = b"ready to accept connections"  # 7.0: "The server is now ready ..."
_START_TIMEOUT = 20.0


def redis_server_path() -> str | None:
    """Where ``redis-server`` is, or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class RedisServer:
    """One ``redis-server`` on a Unix socket (async context manager).

    Args:
        directory: where the socket goes (default: a new short temporary directory,
            since a socket path may not exceed about 100 bytes).

    Raises:
        FileNotFoundError: ``redis-server`` is not installed (:data:`REDIS_MISSING`).
    """

    def __init__(self, directory: Path | None = None) -> None:
        executable = redis_server_path()
        if executable is None:
            raise FileNotFoundError(REDIS_MISSING)
        self._executable = executable
        self._own_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="rds")) if directory is None else directory
        self.socket = self.directory / "redis.sock"
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        #: How many times it was started.
        self.starts = 0

    @property
    def url(self) -> str:
        """``unix:///.../redis.sock``: what ``[cluster] redis`` takes."""
        return f"unix://{self.socket}"

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def start(self) -> None:
        """Start it (again), and return once it accepts connections.

        Raises:
            RuntimeError: it is running already, or it exited or stayed silent.
        """
        if self._proc is not None:
            raise RuntimeError("redis-server is running already")
        self._proc = proc = await asyncio.create_subprocess_exec(
            self._executable, "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(self.directory), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--logfile", "",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        said: list[bytes] = []
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                while not said or _READY not in said[-1].lower():
                    line = await proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"redis-server exited: {b''.join(said)!r}")
                    said.append(line)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            self._proc = None
            raise
        self._drain = asyncio.create_task(self._read_rest(proc.stdout))
        self.starts += 1

    @staticmethod
    async def _read_rest(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass  # keep the pipe from filling

    async def stop(self) -> None:
        """Stop it (SIGTERM; SIGKILL if it does not go); the socket goes with it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
            proc.terminate()
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._drain is not None:
            await self._drain
            self._drain = None

    def pause(self) -> None:
        """Freeze it: connections stay open and nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
