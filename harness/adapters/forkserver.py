"""A fork server for ``sts-engine``: the engine imported once, one forked child per start.

Theory of operation
-------------------
Starting ``sts-engine serve`` from a fresh interpreter costs about a third of a second,
nearly all of it imports; the catalog starts the gateway once per scenario (twice
with a restart). The fork server is a small process that imports the engine's modules
once (:data:`PRELOAD`), without ever creating an event loop, a thread or a socket to
the world, and then forks a child per request. The child does what the console
script does: ``sys.exit(engine.cli.main(argv))``, with its own standard streams, working
directory and environment, so from ``main`` on its path is the console script's (its
event loop, uvloop by default, is made by ``main`` in the child). Two differences stay:
the modules were imported before the fork, and the child leaves with ``os._exit``
after flushing its streams instead of finalising the interpreter.
``harness.adapters.process`` keeps a test that runs the real console script too.

Protocol (``AF_UNIX``, ``SOCK_SEQPACKET``, so each message keeps its boundary): the
client sends one message, a JSON object ``{"argv": [...], "cwd": ..., "env": {...}}``
with three file descriptors attached (``SCM_RIGHTS``: the child's stdin, stdout and
stderr); the server answers ``pid N`` once the child exists, and ``exit CODE`` when it
has reaped it (a negative code is the signal that ended it), then closes the
connection. The server waits on each child with a pidfd (Linux 5.3), so one
single-threaded ``selectors`` loop serves requests and exits alike; it is never
multi-threaded, which is what makes forking it safe.

The server ends when its parent does (its stdin, a pipe from the parent, reaches
EOF), and kills any child still running then. :func:`shared_server` starts one per
harness process on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PRELOAD", "UNIX_PATH_MAX", "ForkServer", "ForkServerError", "Spawned", "shared_server"]

#: Modules imported before any fork: everything ``sts-engine serve`` needs.
PRELOAD = (
    "engine.cli",
    "engine.commands.serve",
    "engine.gateway.control",
    "engine.gateway.gateway",
    "engine.gateway.listener",
    "engine.logs",
    "engine.io.dialer",
    "engine.io.smtp",
    "engine.tlsrpt.reporter",
    "engine.tlsrpt.poster",
    "engine.tlsrpt.dkim",
    "engine.eventloop",
    "uvloop",
    # Imported at run time by the libraries (httpcore's shielded close picks anyio's
    # backend on first use) and by ``main`` (every command group's module).
    "anyio._backends._asyncio",
    "anyio.streams.tls",
    "anyio.to_thread",
    "engine.commands.destconfig",
    "engine.commands.lint",
    "engine.commands.policy",
    "engine.commands.queue",
    "engine.commands.send",
)
#: The longest path an AF_UNIX socket can have on Linux (``sun_path`` less its NUL).
UNIX_PATH_MAX = 107
_MAX_REQUEST = 1 << 20
_STDIO = 3


class ForkServerError(RuntimeError):
    """The fork server could not be started, or refused a request."""


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become ``sts-engine argv...`` and never return."""
    code: object = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(_STDIO, os.sysconf("SC_OPEN_MAX"))
        # What a fresh interpreter has: ^C raises KeyboardInterrupt, SIGPIPE is ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # Fresh standard streams on the new descriptors, as an interpreter makes them.
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(  # noqa: SIM115
            2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
        )
        sys.argv = ["sts-engine", *request["argv"]]
        from engine.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # the console script would print it and exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def serve(path: str, root: str) -> None:
    """The server's main loop (``python -P harness/adapters/forkserver.py PATH ROOT``).

    ``ROOT`` is the directory the parent imports ``engine`` from: the children run
    that engine, whatever ``sys.path`` would find first.
    """
    sys.path.insert(0, root)
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's ^C is the parent's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")
    children: dict[int, tuple[socket.socket, int]] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "parent":
                    if not os.read(0, 4096):
                        return
                elif key.data == "accept":
                    conn, _ = listener.accept()
                    pid = _spawn(conn)
                    if pid is None:
                        conn.close()
                        continue
                    pidfd = os.pidfd_open(pid)
                    children[pid] = (conn, pidfd)
                    sel.register(pidfd, selectors.EVENT_READ, pid)
                else:
                    pid = int(key.data)
                    conn, pidfd = children.pop(pid)
                    sel.unregister(pidfd)
                    os.close(pidfd)
                    _, status = os.waitpid(pid, 0)
                    with contextlib.suppress(OSError):
                        conn.send(f"exit {os.waitstatus_to_exitcode(status)}".encode())
                    conn.close()
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _spawn(conn: socket.socket) -> int | None:
    try:
        data, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, _STDIO)
    except OSError:
        return None
    try:
        request = json.loads(data)
        if len(fds) != _STDIO or not isinstance(request, dict):
            raise ValueError(f"want a JSON object and {_STDIO} descriptors")
        pid = os.fork()
        if pid == 0:
            conn.close()
            _child(request, fds)
        conn.send(f"pid {pid}".encode())
        return pid
    except (ValueError, OSError) as exc:
        with contextlib.suppress(OSError):
            conn.send(f"error {exc}".encode())
        return None
    finally:
        for fd in fds:
            os.close(fd)


@dataclass(slots=True)
class Spawned:
    """A child of the fork server: its pid, and how to learn its exit code."""

    pid: int
    _conn: socket.socket

    async def wait(self) -> int:
        """The exit code once the server has reaped the child (negative: a signal)."""
        loop = asyncio.get_running_loop()
        try:
            reply = (await loop.sock_recv(self._conn, 4096)).decode()
        finally:
            self._conn.close()
        if not reply.startswith("exit "):
            raise ForkServerError(f"the fork server lost child {self.pid}: {reply!r}")
        return int(reply.split()[1])

    def send_signal(self, sig: int) -> None:
        """Signal the child (nothing if it is gone already)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)


class ForkServer:
    """A running fork server (see the module docstring); :func:`shared_server` makes one."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="sts-forkserver-")
        self.path = str(Path(self._dir) / "fork.sock")
        if len(self.path.encode()) > UNIX_PATH_MAX:
            os.rmdir(self._dir)
            raise ForkServerError(
                f"{self.path!r} is longer than a Unix socket path may be "
                f"({UNIX_PATH_MAX} bytes): set TMPDIR to a shorter directory"
            )
        # Run as a script, not ``-m``: importing the harness package would drag the
        # harness into every child; ``-P`` keeps this directory off ``sys.path``.
        import engine

        root = str(Path(engine.__file__).resolve().parents[1])
        self._proc = subprocess.Popen(
            [sys.executable, "-P", __file__, self.path, root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # blocks once per harness process
        if line != b"ready\n":
            self.close()
            raise ForkServerError(f"the fork server did not start (it said {line!r})")

    async def spawn(
        self, argv: list[str], *, cwd: Path, env: dict[str, str], stdio: tuple[int, int, int]
    ) -> Spawned:
        """Fork ``sts-engine argv...`` with ``stdio`` as its stdin, stdout and stderr.

        Raises:
            ForkServerError: the server refused or is gone.
        """
        loop = asyncio.get_running_loop()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.setblocking(False)
        try:
            await loop.sock_connect(conn, self.path)
            request = json.dumps({"argv": argv, "cwd": str(cwd), "env": env}).encode()
            socket.send_fds(conn, [request], list(stdio))
            reply = (await loop.sock_recv(conn, 4096)).decode()
        except OSError as exc:
            conn.close()
            raise ForkServerError(f"the fork server is gone: {exc}") from exc
        if not reply.startswith("pid "):
            conn.close()
            raise ForkServerError(f"the fork server refused: {reply!r}")
        return Spawned(int(reply.split()[1]), conn)

    def close(self) -> None:
        """Stop the server (it kills children still running) and remove its socket."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)


_SHARED: dict[int, ForkServer] = {}  # by pid: a forked worker starts its own


def shared_server() -> ForkServer:
    """This process's fork server, started on first use and stopped at exit.

    A process that exits without running ``atexit`` handlers (a multiprocessing
    worker) still stops it: the server sees its stdin close.
    """
    server = _SHARED.get(os.getpid())
    if server is None or server._proc.poll() is not None:
        server = _SHARED[os.getpid()] = ForkServer()
        atexit.register(server.close)
    return server


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
