"""``sts-harness serve WORLD.toml``: bring a world up and keep it up until SIGINT/SIGTERM.

It prints where everything is (the DNS, the CA bundle, each host's address and real
port, the endpoint map) and commands to poke at it with dig, curl, swaks and
``sts-engine send`` (with a configuration written for the world, :func:`engine_config`,
so the send applies MTA-STS and DANE), then waits. Stopping tears the world down
cleanly. The output is for people; the one line meant for programs is
``dns: ADDRESS:PORT`` (and ``ready`` at the end); ``--env FILE`` writes the same
addresses as shell variables for a second terminal (``. ./world.env``), which the
README's "First five minutes" uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shlex
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from harness.errors import HarnessError
from harness.world import HostRole, World, read_world_spec

__all__ = ["describe", "engine_config", "env_text", "register", "serve"]

_EXAMPLE = """example:
  sts-harness serve fixtures/worlds/w-sts.toml
  sts-harness serve fixtures/worlds/w-dane.toml --now 2026-01-01T00:00:00Z
  sts-harness serve fixtures/worlds/w-sts.toml --env world.env
      (then, in another shell:  . ./world.env; dig @$DNS_HOST -p $DNS_PORT ...)

The world runs on 127.0.0.0/8 addresses only; stop it with Ctrl-C (SIGINT) or SIGTERM.
"""


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="run a simulated world until interrupted",
        description="Bring up the world described by WORLD.toml (DNS, policy hosts, MXs, "
        "proxy, report sink) on loopback and print where everything is.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("world", type=Path, metavar="WORLD.toml", help="the world spec")
    parser.add_argument(
        "--now",
        metavar="ISO",
        help="issue certificates relative to this time (ISO 8601; default: now)",
    )
    parser.add_argument(
        "--env",
        type=Path,
        metavar="FILE",
        help="also write the world's addresses as shell variables to FILE (removed at exit)",
    )
    parser.set_defaults(handler=_handle)


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _handle(args: argparse.Namespace) -> int:
    try:
        now = _parse_now(args.now)
    except ValueError:
        print(
            f"sts-harness serve: error: --now {args.now!r} is not an ISO 8601 time", file=sys.stderr
        )
        return 2
    return asyncio.run(serve(args.world, now=now, signals=True, env=args.env))


async def serve(
    path: Path,
    *,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Future[World] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    signals: bool = False,
    env: Path | None = None,
) -> int:
    """Serve the world in ``path`` until ``stop`` is set (or SIGINT/SIGTERM with ``signals``).

    Args:
        path: the world spec file.
        now: the time certificates are issued relative to (default: now).
        stop: set it to stop; default a fresh event.
        ready: resolved with the running world once it is up.
        out: where the description goes (default stdout).
        err: where errors go (default stderr).
        signals: stop on SIGINT and SIGTERM (main thread only).
        env: write :func:`env_text` there once the world is up; removed at the end.

    Returns:
        0 after a clean stop, 2 for a bad world file, 1 when the world cannot start.
    """
    out, err = out or sys.stdout, err or sys.stderr
    stop = stop or asyncio.Event()
    try:
        spec = read_world_spec(path)
        world = World(spec, now=now.timestamp() if now else None)
        async with world:
            text = describe(world, path)
            # Signals first: a Ctrl-C right after "ready" is a clean stop (status 0).
            with _on_signals(stop, signals), _env_file(env, world, path):
                out.write(text)  # "ready" comes last: the env file exists by then
                out.flush()
                if ready is not None and not ready.done():
                    ready.set_result(world)
                await stop.wait()
    except HarnessError as exc:
        print(f"sts-harness serve: error: {exc}", file=err)
        return 2
    except BrokenPipeError:
        raise  # stdout's reader has gone: engine.cli.run_quietly ends the command
    except OSError as exc:
        print(f"sts-harness serve: cannot start the world: {exc}", file=err)
        return 1
    return 0


@contextlib.contextmanager
def _env_file(env: Path | None, world: World, path: Path) -> Any:
    if env is None:
        yield
        return
    try:
        env.write_text(env_text(world, path), encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"--env {env}: cannot write: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        env.unlink(missing_ok=True)


def env_text(world: World, path: Path) -> str:
    """The world's addresses as ``export NAME=value`` lines for a POSIX shell: ``DNS_HOST``,
    ``DNS_PORT``, ``CA``, ``ENDPOINTS``, ``CONFIG`` (the engine configuration
    :func:`describe` wrote) and, per host, its name in capitals with ``_`` for every other
    character (``MX1_EXAMPLE_COM=127.10.0.2:40645``), as ``curl --connect-to`` takes it."""
    host, port = world.resolver
    folder = Path(world.ca_file).parent
    values = {
        "DNS_HOST": host,
        "DNS_PORT": str(port),
        "CA": str(world.ca_file),
        "ENDPOINTS": str(folder / "endpoints.json"),
        "CONFIG": str(folder / "engine.toml"),
    }
    for info in world.hosts.values():
        values[re.sub(r"[^A-Z0-9]", "_", info.name.upper())] = f"{info.address}:{info.port}"
    head = f"# sts-harness serve {path}: the running world's addresses; . ./FILE in a shell\n"
    return head + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


@contextlib.contextmanager
def _on_signals(stop: asyncio.Event, enabled: bool) -> Any:
    loop = asyncio.get_running_loop()
    wanted = (signal.SIGINT, signal.SIGTERM) if enabled else ()
    for sig in wanted:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in wanted:
            loop.remove_signal_handler(sig)


def describe(world: World, path: Path) -> str:
    """Where everything of a running world is, with commands to try it (text)."""
    dns_host, dns_port = world.resolver
    ca = world.ca_file
    when = datetime.fromtimestamp(world.clock_now, UTC).isoformat()
    lines = [
        f"world: {path} (certificates issued relative to {when})",
        f"dns: {dns_host}:{dns_port}",
        f"ca: {ca}",
        "hosts:",
    ]
    for info in world.hosts.values():
        dialled = f"{info.address}:{info.service_port} -> " if info.service_port else ""
        lines.append(f"  {info.name:<28} {info.role:<12} {dialled}{info.address}:{info.port}")
    endpoints = Path(ca).parent / "endpoints.json"
    endpoints.write_text(
        json.dumps({f"{a}:{p}": f"{ra}:{rp}" for (a, p), (ra, rp) in world.endpoint_map.items()})
    )
    lines.append(f"endpoint map: {endpoints}")
    for (addr, port), (real_addr, real_port) in world.endpoint_map.items():
        lines.append(f"  {addr}:{port} -> {real_addr}:{real_port}")
    lines.append("try:")
    for name, d in world.spec.domains.items():
        lines.append(f"  dig @{dns_host} -p {dns_port} +dnssec _mta-sts.{name} TXT")
        if d.has_policy_host:
            info = world.hosts[d.policy_host_name]
            url = f"https://{info.name}:{info.port}/.well-known/mta-sts.txt"
            lines.append(
                f"  curl --cacert {ca} --resolve {info.name}:{info.port}:{info.address} {url}"
            )
    for info in world.hosts.values():
        if info.role is HostRole.MX:
            lines.append(
                f"  swaks --server {info.address}:{info.port} --tls --tls-sni {info.name} "
                f"--tls-verify --tls-ca-path {ca} --to postmaster@{info.name}"
            )
    config = Path(ca).parent / "engine.toml"
    config.write_text(engine_config(world, path))
    first = next(iter(world.spec.domains), "example.com")
    lines.append(
        f"  printf 'Subject: hi\\n\\nhello\\n' | {_engine_script()} send --config {config} "
        f"--endpoints {endpoints} --from a@sender.example --to rcpt@{first} -"
    )
    lines.append(f"  ({config}: MTA-STS on and DANE opportunistic for every domain of the world)")
    lines.append("ready; stop with Ctrl-C (SIGINT) or SIGTERM")
    return "\n".join(lines) + "\n"


def engine_config(world: World, path: Path) -> str:
    """An engine configuration for ``world``: its resolver and CA, and for every domain
    the settings someone reproducing an MTA-STS or DANE problem wants (issue 16 item 1:
    without them ``sts-engine send`` runs on the built-in defaults, TLS No, in clear).

    Each domain gets TLS Preferred, DANE Opportunistic (applied where the zone is signed
    and publishes TLSA) and MTA-STS on; the Default entry stays TLS Preferred alone.
    """
    host, port = world.resolver
    out = [
        f"# Written by `sts-harness serve {path}` for the world it serves; removed at exit.",
        "[destination_controls.default]",
        'tls = "preferred"',
    ]
    for name in world.spec.domains:
        out += ["", f"[destination_controls.{json.dumps(name)}]"]
        out += ['tls = "preferred"', 'dane = "opportunistic"', "mta_sts = true"]
    out += ["", "[dns]", f"resolvers = [{json.dumps(f'{host}:{port}')}]"]
    out += ["", "[tls]", f"ca_file = {json.dumps(str(world.ca_file))}", ""]
    return "\n".join(out)


def _engine_script() -> str:
    """``sts-engine`` of this interpreter's environment (``.venv/bin/sts-engine`` when it
    is below the working directory), so the command runs as printed without an
    activated environment; plain ``sts-engine`` when there is none."""
    script = Path(sys.executable).parent / "sts-engine"
    if not script.exists():
        return "sts-engine"
    with contextlib.suppress(ValueError):
        return str(script.absolute().relative_to(Path.cwd()))
    return str(script)
