"""``sts-engine serve`` (run the gateway), ``commit`` (reload it) and ``status`` (ask it).

``serve`` writes a pid file beside the queue (``sts-engine.pid``) and listens on a
control socket there (``sts-engine.ctl``, :mod:`engine.gateway.control`); ``status`` asks
that socket how the gateway is doing. ``commit``
validates the configuration, then sends the process in that file ``SIGHUP``.
The gateway re-reads its configuration between delivery rounds, so the queue
stays open and no delivery in progress is cut. ``SIGTERM``/``SIGINT`` stop the
listener at once, let the round in progress finish for up to ``--grace``
seconds, and close the databases; anything still leased is recovered at the
next start (at-least-once delivery).

Two options are hidden because only the conformance harness needs them (it runs
this command as a process against a simulated world): ``--endpoints FILE``, the
world's map from (address, standard port) to where its servers really listen,
re-read when it changes and always loopback-only; and ``--clock manual=T``, a clock
that starts at POSIX time T and moves only through the control channel's
``advance`` (so a scenario can let days pass in milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine import eventloop
from engine.commands import UsageError
from engine.config import MIN_MESSAGE_SIZE, EngineConfig, check_listener, load_config, relay_network
from engine.core.errors import ConfigError

if TYPE_CHECKING:
    from engine.commands import Subparsers
    from engine.core.clock import Clock
    from engine.gateway.gateway import GatewaySettings
    from engine.io.dialer import Dialer
    from engine.io.smtp import SmtpTimeouts

__all__ = ["load_config_or_usage", "parse_clock", "pid_file_path", "register"]

_SERVE_EPILOG = """\
example:
  sts-engine serve --config gateway.toml
  sts-engine serve --config gateway.toml --relay-network 10.0.0.0/8 \\
      --tls-cert listener.pem --tls-key listener.key --log-level debug

signals: SIGTERM/SIGINT stop cleanly, SIGHUP reloads the configuration (sts-engine commit)
exit status: 0 clean stop, 2 usage or configuration error
"""

_COMMIT_EPILOG = """\
example:
  sts-engine destconfig edit example.com --config gateway.toml
  sts-engine commit --config gateway.toml

exit status: 0 reloaded, 1 no running gateway or a change it could not apply (say,
[listener] port: that needs a restart), 2 configuration error
"""

_STATUS_EPILOG = """\
example:
  sts-engine status --config gateway.toml
  sts-engine status --config gateway.toml --mid 17     (one message: verdicts, last attempts)

exit status: 0 answered, 1 no running gateway (or no such message), 2 configuration error
"""


def load_config_or_usage(path: str) -> EngineConfig:
    """Load a configuration, turning its errors (file, key, value) into exit status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def pid_file_path(config: EngineConfig) -> Path:
    """Where a running gateway writes its pid: ``sts-engine.pid`` beside the queue."""
    return Path(config.queue.path).with_name("sts-engine.pid")


def register(subparsers: Subparsers) -> None:
    """Add ``serve`` and ``commit``."""
    serve = subparsers.add_parser(
        "serve",
        help="run the gateway: SMTP listener, queue, deliveries, TLS reports",
        description="Run the gateway: the SMTP injection listener, the durable queue and its "
        "scheduler, proactive MTA-STS policy refresh and TLS-RPT reporting.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", required=True, metavar="FILE", help="configuration (TOML)")
    serve.add_argument("--hostname", default="sts-engine.localdomain", help="our host name")
    serve.add_argument(
        "--relay-network",
        action="append",
        metavar="CIDR",
        help="client network allowed to relay (repeatable; replaces [listener] relay_networks, "
        "default loopback only)",
    )
    serve.add_argument(
        "--max-size",
        type=int,
        metavar="BYTES",
        help=f"largest message (>= {MIN_MESSAGE_SIZE}; default [listener] max_message_size)",
    )
    serve.add_argument(
        "--tls-cert", metavar="PEM", help="offer STARTTLS with this chain ([listener] tls_cert)"
    )
    serve.add_argument("--tls-key", metavar="PEM", help="the key of --tls-cert")
    serve.add_argument("--log-level", choices=["info", "debug"], default=None)
    serve.add_argument("--json-log", metavar="FILE", help="also write JSON event lines here")
    serve.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a stop waits for deliveries in progress",
    )
    serve.add_argument("--smtp-port", type=int, metavar="N", help="dial MX hosts on port N")
    serve.add_argument(
        "--smtp-timeout",
        type=float,
        metavar="SECONDS",
        help="bound every SMTP stage by SECONDS (default: RFC 5321 4.5.3.2's per stage)",
    )
    serve.add_argument("--endpoints", metavar="FILE", help=argparse.SUPPRESS)  # harness only
    serve.add_argument("--clock", default="wall", help=argparse.SUPPRESS)  # harness only
    serve.set_defaults(handler=_serve)

    commit = subparsers.add_parser(
        "commit",
        help="tell a running gateway to reload its configuration",
        description="Validate the configuration, then make the running gateway reload it "
        "(SIGHUP to the pid in sts-engine.pid beside the queue). The queue and deliveries "
        "in progress are kept.",
        epilog=_COMMIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commit.add_argument("--config", required=True, metavar="FILE", help="configuration (TOML)")
    commit.set_defaults(handler=_commit)

    status = subparsers.add_parser(
        "status",
        help="ask a running gateway how it is doing (JSON)",
        description="Ask the running gateway, over its control socket (sts-engine.ctl beside "
        "the queue), for its process, loop, clock, next due time and queue counts; or, with "
        "--mid, for one message's per-recipient verdicts and last attempts. Prints JSON.",
        epilog=_STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--config", required=True, metavar="FILE", help="configuration (TOML)")
    status.add_argument("--mid", type=int, metavar="MID", help="one message instead")
    status.set_defaults(handler=_status)


def parse_clock(text: str) -> Clock | None:
    """``--clock``: ``wall`` (None: the system clock) or ``manual=T`` (POSIX seconds).

    Raises:
        UsageError: anything else.
    """
    if text == "wall":
        return None
    kind, _, value = text.partition("=")
    try:
        start = float(value)
    except ValueError:
        start = -1.0
    if kind != "manual" or not start >= 0:
        raise UsageError(f"--clock must be 'wall' or 'manual=<POSIX seconds>', not {text!r}")
    from engine.core.clock import ManualClock

    return ManualClock(start)


def _timeouts(args: argparse.Namespace) -> SmtpTimeouts | None:
    if args.smtp_timeout is None:
        return None
    if not (math.isfinite(args.smtp_timeout) and args.smtp_timeout > 0):
        raise UsageError(f"--smtp-timeout must be more than 0 seconds, not {args.smtp_timeout}")
    from engine.io.smtp import SmtpTimeouts

    return SmtpTimeouts.uniform(args.smtp_timeout)


def _dialer(args: argparse.Namespace) -> Dialer:
    from engine.io.dialer import Dialer, EndpointFile, EndpointFileError

    if args.endpoints:
        try:
            endpoints = EndpointFile(args.endpoints)
        except EndpointFileError as exc:
            raise UsageError(f"--endpoints: {exc}") from exc
        # A simulated world: never dial anything outside loopback.
        return Dialer(endpoint_map=endpoints, loopback_only=True)
    return Dialer(port_map={25: args.smtp_port} if args.smtp_port else {})


def _check_options(args: argparse.Namespace) -> list[str]:
    """The numeric and network options, each refused in one line; the relay networks."""
    if args.max_size is not None and args.max_size < MIN_MESSAGE_SIZE:
        # RFC 5321 §4.5.3.1.10: 64K octets at least; 0 never meant "unlimited".
        raise UsageError(
            f"--max-size must be at least {MIN_MESSAGE_SIZE} bytes, not {args.max_size}"
        )
    if not (math.isfinite(args.grace) and args.grace >= 0):
        raise UsageError(f"--grace must be 0 seconds or more, not {args.grace}")
    if args.smtp_port is not None and not 0 < args.smtp_port <= 65535:
        raise UsageError(f"--smtp-port must be a port number 1..65535, not {args.smtp_port}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    networks = []
    for text in args.relay_network or []:
        try:
            networks.append(relay_network(text))
        except ValueError as exc:
            raise UsageError(f"--relay-network: {exc}") from None
    return networks


def _settings(args: argparse.Namespace, config: EngineConfig) -> GatewaySettings:
    from engine.gateway.gateway import GatewaySettings
    from engine.tlsrpt.reporter import ReportSettings

    networks = _check_options(args)
    if networks:
        try:
            check_listener(replace(config.listener, relay_networks=tuple(networks)))
        except ValueError as exc:
            raise UsageError(f"--relay-network: {exc}") from None
    return GatewaySettings(
        hostname=args.hostname,
        relay_networks=tuple(networks) or None,
        max_message_size=args.max_size,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        report=ReportSettings(
            organization_name=config.tlsrpt.organization_name,
            contact_info=config.tlsrpt.contact_info,
            delay_seconds=config.tlsrpt.delay,
            jitter_seconds=config.tlsrpt.jitter,
            dkim_selector=config.tlsrpt.dkim_selector,
            dkim_domain=config.tlsrpt.dkim_domain,
            dkim_key_pem=_read_key(config.tlsrpt.dkim_key_file),
        ),
    )


def _read_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"[tlsrpt] dkim_key_file {str(path)!r}: {exc.strerror}") from exc


def _serve(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    settings = _settings(args, config)
    clock = parse_clock(args.clock)
    timeouts = _timeouts(args)
    dialer = _dialer(args)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return eventloop.run(_serve_async(config, settings, args, clock, timeouts, dialer))


async def _serve_async(
    config: EngineConfig,
    settings: GatewaySettings,
    args: argparse.Namespace,
    clock: Clock | None,
    timeouts: SmtpTimeouts | None,
    dialer: Dialer,
) -> int:
    from engine.core.events import LogEvent
    from engine.gateway.control import ControlBusy, ControlError, ControlServer, control_path
    from engine.gateway.gateway import Gateway
    from engine.gateway.listener import ListenerError
    from engine.gateway.queue import QueueUnavailable
    from engine.logs import JsonLogWriter, MailLogWriter

    writer = MailLogWriter(sys.stdout, level=args.log_level or config.logging.level)
    sinks: list[MailLogWriter | JsonLogWriter] = [writer]
    json_file = open(args.json_log, "a", encoding="utf-8", buffering=1) if args.json_log else None  # noqa: SIM115
    if json_file is not None:
        sinks.append(JsonLogWriter(json_file))

    class _Fanout:
        written = 0  # events written so far: the control channel reports it

        def emit(self, event: LogEvent) -> None:
            for s in sinks:
                s.emit(event)
            self.written += 1

    fanout = _Fanout()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    pid_file = pid_file_path(config)
    status = 0
    try:
        # A queue refused at start-up (damaged, empty, read-only ...) is one line:
        # what is wrong and how to recover (docs/hardening.md, Queue recovery).
        gateway = Gateway(
            config,
            clock=clock,
            sink=fanout,
            settings=settings,
            dialer=dialer,
            smtp_timeouts=timeouts,
        )
        async with gateway as gw, contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(
                    ControlServer(
                        gw, control_path(config), extra=lambda: {"events": fanout.written}
                    )
                )
            except ControlBusy as exc:  # two gateways must never share one queue
                raise UsageError(f"{exc}; is a gateway already running on this queue?") from exc
            except ControlError as exc:
                # The gateway works without it; operators lose `sts-engine status` only.
                fanout.emit(
                    LogEvent("control.unavailable", {"detail": str(exc)}, "warning", gw.clock.now())
                )

            def _stop() -> None:
                stop.set()
                if gw.listener is not None:
                    gw.listener.stop_accepting()  # stop accepting at once
                gw.notify()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, _stop)
            loop.add_signal_handler(signal.SIGHUP, gw.request_reload)
            loop.add_signal_handler(signal.SIGUSR1, gw.notify)  # `queue retry`
            pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
            if gw.listener is not None:
                host, port = gw.listener.address
                if settings.relay_networks is not None:  # --relay-network replaced the file's
                    for warning in check_listener(gw.listener.config):
                        fanout.emit(
                            LogEvent(
                                "config.warning", {"detail": warning}, "warning", gw.clock.now()
                            )
                        )
                fanout.emit(
                    LogEvent("listener.ready", {"host": host, "port": port}, "info", gw.clock.now())
                )
            task = asyncio.create_task(gw.serve(stop, timed=clock is None))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                # The serve loop supervises every round, so this is a bug: stop taking
                # mail it would not deliver, say so in one line, exit non-zero.
                status = 1
                _stop()
                fanout.emit(
                    LogEvent(
                        "gateway.stopped",
                        {"detail": _ended(task)},
                        "warning",
                        gw.clock.now(),
                    )
                )
            await stopping
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=args.grace)
            except TimeoutError:
                # Leases stay `inflight`; the next start recovers them (no loss).
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:  # said in one line above (or ended while stopping): exit 1
                status = 1
    except ListenerError as exc:  # its certificate, users file or address: one line
        raise UsageError(str(exc)) from None
    except QueueUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        if json_file is not None:
            json_file.close()
    return status


def _ended(task: asyncio.Task[None]) -> str:
    """Why the serve loop ended on its own, in one line."""
    if task.cancelled():
        return "the delivery loop was cancelled"
    exc = task.exception()
    if exc is None:
        return "the delivery loop returned"
    text = " ".join(str(exc).split())
    return f"the delivery loop failed: {type(exc).__name__}: {text}"[:300]


def _status(args: argparse.Namespace) -> int:
    from engine.gateway.control import ControlError, control_path, request

    config = load_config_or_usage(args.config)
    path = control_path(config)
    try:
        if args.mid is None:
            reply = request(path, "status")
        else:
            reply = request(path, "message", mid=args.mid)
    except ControlError as exc:
        sys.stderr.write(f"sts-engine: {exc}\n")
        return 1
    if not reply.get("ok"):
        sys.stderr.write(f"sts-engine: {reply.get('error', 'the gateway refused')}\n")
        return 1
    reply.pop("ok", None)
    sys.stdout.write(json.dumps(reply, indent=2) + "\n")
    return 0


def _commit(args: argparse.Namespace) -> int:
    from engine.gateway.control import ControlError, control_path, request

    config = load_config_or_usage(args.config)  # never ask a gateway to load a bad file
    try:
        # The control socket answers once the reload is done, with what it did.
        reply = request(control_path(config), "reload")
    except ControlError:
        reply = None
    if reply is not None and "applied" in reply:
        if reply["applied"]:
            sys.stdout.write(f"{reply['detail']}\n")
            return 0
        sys.stderr.write(f"sts-engine: {reply['detail']}\n")
        return 1
    # No control socket (or an older gateway): the signal, whose result is in the log.
    pid_file = pid_file_path(config)
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"sts-engine: no running gateway ({pid_file}): {exc}\n")
        return 1
    sys.stdout.write(f"reload requested from gateway pid {pid} (its log says how it went)\n")
    return 0
