"""How the ``sts-engine`` adapter makes its gateway: configuration, DKIM key, launch.

:func:`gateway_toml` writes the gateway's configuration from a scenario's ``[sender]``
the way the in-process adapters build theirs (the world's resolver and root, the
harness's short DNS and fetch timeouts), plus what only a process needs: a queue in the
work directory, a listener on 127.0.0.1 port 0, and the TLS-RPT settings and DKIM key
of :mod:`harness.adapters.gateway`.

Two launchers start ``sts-engine ARGV...`` with its stdout and stderr on pipes the
adapter reads: :func:`fork_launch` asks the fork server
(:mod:`harness.adapters.forkserver`) for a child running ``engine.cli.main(argv)``;
:func:`exec_launch` executes the installed console script, a fresh interpreter each
time (the path users take, and slower).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.adapters.base import AdapterError
from harness.adapters.forkserver import shared_server
from harness.adapters.gateway import (
    REPORT_CONTACT,
    REPORT_DELAY,
    REPORT_DKIM_DOMAIN,
    REPORT_DKIM_SELECTOR,
    REPORT_ORGANIZATION,
    dkim_key_record,
    new_dkim_key,
)
from harness.adapters.process_io import LINE_LIMIT, pipe_reader
from harness.adapters.sender import sender_toml
from harness.adapters.wiring import DNS_TIMEOUT, FETCH_TIMEOUT
from harness.world.spec.model import RecordSpec
from harness.world.world import World

__all__ = ["Launcher", "Running", "dkim_key", "exec_launch", "fork_launch", "gateway_toml"]

_KEY: tuple[bytes, RecordSpec] | None = None  # one DKIM key per harness process


def dkim_key() -> tuple[bytes, RecordSpec]:
    """The key and its DNS record (loading an RSA key is slow too: both made once)."""
    global _KEY
    if _KEY is None:
        pem = new_dkim_key()
        record = dkim_key_record(pem, selector=REPORT_DKIM_SELECTOR, domain=REPORT_DKIM_DOMAIN)
        _KEY = (pem, record)
    return _KEY


def gateway_toml(sender: Mapping[str, Any], world: World, workdir: Path, key_file: Path) -> str:
    """The gateway's configuration: ``[sender]`` plus what the harness fills in.

    Args:
        sender: the scenario's ``[sender]`` table.
        world: the running world (resolver, root, proxy).
        workdir: where the queue and its neighbours live.
        key_file: the DKIM private key report mail is signed with.
    """
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in sender.items()}
    host, port = world.resolver
    dns = data.setdefault("dns", {})
    dns["resolvers"] = [f"{host}:{port}"]
    dns.setdefault("timeout", DNS_TIMEOUT)
    data.setdefault("policy_fetch", {}).setdefault("timeout", FETCH_TIMEOUT)
    data.setdefault("tls", {})["ca_file"] = str(world.ca_file)
    data["queue"] = {"path": str(workdir / "queue.sqlite")}
    data["listener"] = {"host": "127.0.0.1", "port": 0}
    data["tlsrpt"] = {
        "organization_name": REPORT_ORGANIZATION,
        "contact_info": REPORT_CONTACT,
        "delay": REPORT_DELAY,
        "jitter": 0.0,
        "dkim_selector": REPORT_DKIM_SELECTOR,
        "dkim_domain": REPORT_DKIM_DOMAIN,
        "dkim_key_file": str(key_file),
    }
    proxy = world.hosts.get("proxy")
    return sender_toml(data, (proxy.address, proxy.port) if proxy else None)


@dataclass(slots=True)
class Running:
    """A started gateway: its pid, its output streams, how to wait for it and signal it."""

    pid: int
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    wait: Callable[[], Awaitable[int]]
    signal: Callable[[int], None]


async def fork_launch(argv: list[str], cwd: Path, env: dict[str, str]) -> Running:
    """``sts-engine ARGV...`` forked by this process's fork server."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        child = await shared_server().spawn(argv, cwd=cwd, env=env, stdio=(null, out_w, err_w))
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    stdout, stderr = await pipe_reader(out_r), await pipe_reader(err_r)
    return Running(child.pid, stdout, stderr, child.wait, child.send_signal)


async def exec_launch(argv: list[str], cwd: Path, env: dict[str, str]) -> Running:
    """``sts-engine ARGV...``: the installed console script, a fresh interpreter.

    Raises:
        AdapterError: the console script is not installed beside this interpreter.
    """
    script = Path(sys.executable).with_name("sts-engine")
    if not script.exists():
        raise AdapterError(f"the sts-engine console script is not installed ({script})")
    proc = await asyncio.create_subprocess_exec(
        str(script), *argv, cwd=cwd, env=env, limit=LINE_LIMIT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # gone already
            proc.send_signal(sig)

    return Running(proc.pid, proc.stdout, proc.stderr, proc.wait, send)


#: How a gateway is started: (argv, working directory, environment) -> :class:`Running`.
Launcher = Callable[[list[str], Path, dict[str, str]], Awaitable[Running]]
