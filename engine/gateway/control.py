"""The gateway's control channel: a Unix socket beside the queue, JSON lines.

Theory of operation
-------------------
``sts-engine serve`` listens on ``sts-engine.ctl`` beside the queue database
(:func:`control_path`), mode 0600, so only the gateway's own user can talk to it.
Each request is one JSON object on one line and gets one JSON object back on one
line; a connection may carry any number of them, answered in order. Every reply has
``"ok"``; a refused request has ``"ok": false`` and an ``"error"`` sentence.

``{"op": "status"}``
    the process, its loop and clock, the next due time and the queue's counts
    (``sts-engine status`` prints this);
``{"op": "settle"}``
    run rounds until nothing is due now (:meth:`~engine.gateway.gateway.Gateway.run_due`):
    when the reply comes, what every message queued so far set off at this moment
    is done, DSNs and report mail included;
``{"op": "message", "mid": N}``
    the queue's verdict for each recipient of message N, with that recipient's last
    attempt if the gateway still remembers it (MX, TLS protocol, verification,
    reason, RFC 8460 result type: the fields of ``sts-engine send --json``);
``{"op": "reload"}``
    re-read the configuration now, between rounds (``sts-engine commit``); the reply
    says whether every change took effect (``applied``) and what happened (``detail``:
    a ``[listener]`` host or port needs a restart);
``{"op": "advance", "seconds": S}``
    only when the gateway runs on a manual clock (``serve --clock manual=...``, for
    the conformance harness): walk the clock S seconds forward with a round at every
    due time (:meth:`~engine.gateway.gateway.Gateway.advance`).

Rounds never overlap: ``settle`` and ``advance`` take the gateway's round lock, as
the serve loop does. ``extra`` (given by ``serve``) adds its fields to the replies of
``status``, ``settle`` and ``advance``; ``serve`` reports how many events it has
written, so a reader of its logs knows how far to read.

Why a socket and not signals: a signal cannot answer. ``settle`` must say *when* the
work is done, and ``status`` must say what it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import eventloop

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.gateway.gateway import Gateway

__all__ = ["ControlBusy", "ControlError", "ControlServer", "control_path", "request"]

_LINE_LIMIT = 64 * 1024


class ControlError(Exception):
    """The control socket cannot be used: not there, or it answered nonsense."""


class ControlBusy(ControlError):
    """Another gateway already answers on the control socket (the same queue)."""


def control_path(config: EngineConfig) -> Path:
    """The control socket: ``sts-engine.ctl`` beside the queue database."""
    return Path(config.queue.path).with_name("sts-engine.ctl")


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


class ControlServer:
    """Serves the control requests of one gateway (async context manager).

    Args:
        gateway: the running gateway.
        path: the socket's path (see :func:`control_path`).
        extra: fields added to ``status``, ``settle`` and ``advance`` replies.

    Raises:
        ControlBusy: at ``__aenter__``, another gateway answers on ``path``.
        ControlError: at ``__aenter__``, the socket cannot be made there (e.g. a
            path longer than AF_UNIX allows).
    """

    def __init__(
        self,
        gateway: Gateway,
        path: Path,
        *,
        extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.gateway, self.path = gateway, path
        self._extra = extra or dict
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ControlServer:
        path = self.path
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                if _answers(path):
                    raise ControlBusy(f"another gateway answers on {str(path)!r}")
                path.unlink()  # left by a gateway that died
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(path), limit=_LINE_LIMIT
            )
        except OSError as exc:
            raise ControlError(f"cannot listen on {str(path)!r}: {exc}") from exc
        os.chmod(path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._answer(line), default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass  # the client went away, or sent a line over the limit
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "a request is one JSON object per line"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "a request is one JSON object per line"}
        op = req.get("op")
        try:
            if op == "status":
                return self._status()
            if op == "settle":
                rounds = await self.gateway.run_due()
                return {"ok": True, "rounds": rounds, "now": self.gateway.clock.now()} | dict(
                    self._extra()
                )
            if op == "advance":
                return await self._advance(req.get("seconds"))
            if op == "message":
                return self._message(req.get("mid"))
            if op == "reload":
                applied, detail = await self.gateway.reload()
                return {"ok": True, "applied": applied, "detail": detail}
        except Exception as exc:  # a reply, not a dead socket: the caller must learn it
            return {"ok": False, "error": f"{op} failed: {exc!r}"}
        known = "status, settle, message, advance, reload"
        return {"ok": False, "error": f"unknown op {op!r}; known: {known}"}

    def _status(self) -> dict[str, Any]:
        from engine.gateway.gateway import SettableClock

        gw = self.gateway
        listener = gw.listener.address if gw.listener is not None else None
        return {
            "ok": True,
            "pid": os.getpid(),
            "loop": eventloop.loop_name(asyncio.get_running_loop()),
            "clock": "manual" if isinstance(gw.clock, SettableClock) else "wall",
            "now": gw.clock.now(),
            "next_wake": gw.next_wake(),
            "queue": {state.value: n for state, n in gw.queue.counts().items()},
            "listener": list(listener) if listener else None,
        } | dict(self._extra())

    async def _advance(self, seconds: object) -> dict[str, Any]:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return {"ok": False, "error": f"advance needs seconds >= 0, not {seconds!r}"}
        try:
            rounds = await self.gateway.advance(float(seconds))
        except TypeError:
            return {"ok": False, "error": "advance needs a manual clock (serve --clock manual=T)"}
        return {"ok": True, "rounds": rounds, "now": self.gateway.clock.now()} | dict(self._extra())

    def _message(self, mid: object) -> dict[str, Any]:
        if not isinstance(mid, int) or isinstance(mid, bool):
            return {"ok": False, "error": f"message needs an integer mid, not {mid!r}"}
        msg = self.gateway.queue.message(mid)
        if msg is None:
            return {"ok": False, "error": f"no message MID {mid}"}
        tried = self.gateway.attempts.get(mid, {})
        rows = []
        for r in msg.recipients:
            a = tried.get(r.rid)
            attempt = None
            if a is not None:
                attempt = {
                    "outcome": a.status,
                    "mx": a.mx,
                    "address": a.address,
                    "tls": a.tls,
                    "verification": a.verified,
                    "reason": a.reason or None,
                    "result_type": a.result_type,
                    "reply": a.reply,
                }
            rows.append(
                {
                    "rid": r.rid,
                    "rcpt": r.rcpt,
                    "state": r.state.value,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                    "last_attempt": attempt,
                }
            )
        return {"ok": True, "mid": mid, "done": msg.done_at is not None, "recipients": rows}


def request(path: Path, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    """One blocking request to the control socket at ``path`` (for commands).

    Raises:
        ControlError: nothing answers there, or the answer is not a JSON object.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"no running gateway answers on {str(path)!r}: {exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"{str(path)!r} answered {data[:80]!r}, not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{str(path)!r} answered {reply!r}, not an object")
    return reply
