"""``sts-engine send`` (one delivery attempt) and ``sts-engine check`` (verify a domain)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine import eventloop
from engine.commands import UsageError
from engine.config import EngineConfig, load_config
from engine.core.errors import ConfigError
from engine.core.events import LogEvent
from engine.io.dialer import Dialer

if TYPE_CHECKING:
    from engine.commands import Subparsers

__all__ = ["register", "settings_events"]

EXIT_DELIVERED, EXIT_DEFERRED, EXIT_BOUNCED = 0, 75, 69  # sysexits: EX_TEMPFAIL, EX_UNAVAILABLE

_SEND_EPILOG = """\
example:
  sts-engine send --config engine.toml --from alice@example.org --to bob@example.com \\
      --resolver 127.0.0.53:5353 --ca-file roots.pem --log-level debug --json message.eml

exit status: 0 delivered, 75 deferred, 69 bounced, 2 usage or configuration error
"""

_CHECK_EPILOG = """\
example:
  sts-engine check example.com --resolver 127.0.0.53:5353 --ca-file roots.pem
  sts-engine check example.com --json

exit status: 0 every check passed, 1 a check failed, 2 usage error
"""


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} of {text!r} is not in 1..65535")
    return host.strip("[]"), int(port)


def _resolver(text: str) -> tuple[str, int]:
    """``--resolver ADDRESS:PORT``: a resolver is an IP address (no name to resolve it by)."""
    host, port = _hostport(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} in {text!r} is not an IP address") from None
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return int(text)


def _mailbox(option: str, text: str) -> str:
    """An envelope address checked as the listener checks MAIL and RCPT (RFC 5321 §4.1.2)."""
    from engine.gateway.inbound import Refusal, parse_mail, parse_rcpt

    utf8 = "" if text.isascii() else " SMTPUTF8"
    try:
        if option == "--from":
            return parse_mail(f"FROM:<{text}>{utf8}", max_size=1 << 62).address
        if "@" not in text:
            raise Refusal(f"553 5.1.3 Bad recipient address syntax: no domain in {text!r}")
        return parse_rcpt(f"TO:<{text}>", smtputf8=bool(utf8))
    except Refusal as exc:
        reason = exc.reply.split(" ", 2)[-1]  # drop the reply and enhanced codes
        raise UsageError(f"{option} {text!r}: {reason}") from None


def _config(args: argparse.Namespace) -> EngineConfig:
    try:
        # --ca-file names the trust anchors, so the file need not (it must otherwise).
        config = (
            load_config(args.config, trust_anchors_required=not args.ca_file)
            if args.config
            else EngineConfig()
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    if args.resolver:
        config = replace(config, dns=replace(config.dns, resolvers=tuple(args.resolver)))
    if args.ca_file:
        _check_ca_file(args.ca_file)
        config = replace(config, tls=replace(config.tls, ca_file=Path(args.ca_file)))
    return config


def _check_ca_file(name: str) -> None:
    """``--ca-file`` must be a readable PEM file holding at least one certificate."""
    from engine.delivery.agent import load_roots

    path = Path(name)
    if not path.is_file():
        raise UsageError(f"--ca-file {name!r}: no such file")
    problems: list[str] = []
    try:
        roots = load_roots(path, on_skip=problems.append)
    except OSError as exc:
        raise UsageError(f"--ca-file {name!r}: cannot read it ({exc.strerror})") from None
    if not roots:
        why = f" ({problems[0]})" if problems else ""
        raise UsageError(f"--ca-file {name!r}: no PEM certificate in it{why}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="engine configuration (TOML)")
    parser.add_argument(
        "--resolver",
        metavar="HOST:PORT",
        type=_resolver,
        action="append",
        help="validating resolver to use (repeatable); overrides [dns] resolvers",
    )
    parser.add_argument("--ca-file", metavar="PEM", help="trusted roots; overrides [tls] ca_file")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON report on stdout (log lines, if any, go to stderr)",
    )
    parser.add_argument(
        "--endpoints",
        metavar="JSON",
        help='endpoint map {"ADDR:PORT": "ADDR:PORT"} (as `sts-harness serve` writes it); '
        "implies loopback-only dialling",
    )


def register(subparsers: Subparsers) -> None:
    """Add ``send`` and ``check``."""
    send = subparsers.add_parser(
        "send",
        help="make one delivery attempt and print the mail_logs lines",
        description="Make one delivery attempt of one message and print the mail_logs lines.",
        epilog=_SEND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(send)
    send.add_argument("--from", dest="mail_from", required=True, metavar="ADDRESS")
    send.add_argument("--to", dest="rcpts", required=True, action="append", metavar="ADDRESS")
    send.add_argument(
        "--smtp-port", type=_port, metavar="N", help="dial MX hosts on port N, not 25"
    )
    send.add_argument("--log-level", choices=["info", "debug"], default=None)
    send.add_argument("message", nargs="?", default="-", help="message file, or - for stdin")
    send.set_defaults(handler=_send)

    check = subparsers.add_parser(
        "check",
        help="verify a domain's MTA-STS, DANE and TLS-RPT setup",
        description="Verify a domain before configuring it, as the seed advises: TXT, policy, "
        "each MX against the patterns, each MX's STARTTLS and certificate, TLSA and DNSSEC "
        "status, and the TLS-RPT record.",
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(check)
    check.add_argument("domain")
    check.add_argument("--smtp-port", type=_port, metavar="N", help="probe MX hosts on port N")
    check.set_defaults(handler=_check)


def _dialer(args: argparse.Namespace) -> Dialer:
    port_map = {25: args.smtp_port} if getattr(args, "smtp_port", None) else {}
    if not args.endpoints:
        return Dialer(port_map=port_map)
    try:
        raw = json.loads(Path(args.endpoints).read_text())
        mapping = {_hostport(k): _hostport(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"--endpoints {args.endpoints!r}: {exc}") from exc
    # A simulated world: never dial anything outside loopback.
    return Dialer(endpoint_map=mapping, loopback_only=True, port_map=port_map)


def _read_message(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read message {name!r}: {exc.strerror}") from exc


def _send(args: argparse.Namespace) -> int:
    mail_from = _mailbox("--from", args.mail_from)
    rcpts = [_mailbox("--to", r) for r in args.rcpts]
    config = _config(args)
    dialer = _dialer(args)
    data = _read_message(args.message)
    level = args.log_level or config.logging.level
    return eventloop.run(_send_async(config, args, dialer, (mail_from, rcpts, data), level))


def settings_events(
    config: EngineConfig, config_file: str | None, rcpts: list[str], at: float
) -> list[LogEvent]:
    """One ``send.settings`` event per recipient domain: what applies and where from.

    Args:
        config: the configuration the attempt runs with.
        config_file: the ``--config`` file, or None for the built-in defaults.
        rcpts: the recipients, in order (one event per domain, first seen first).
        at: the time of the events.
    """
    events: list[LogEvent] = []
    for domain in dict.fromkeys(r.rpartition("@")[2].lower().rstrip(".") for r in rcpts):
        profile = config.profile_for(domain)
        if config_file is None:
            source = "built-in defaults: no --config"
        elif profile is config.default_profile:
            source = f"{config_file}, Default profile"
        else:
            source = f"{config_file}, profile {domain}"
        routes = config.routes_for(domain)
        fields: dict[str, object] = {
            "domain": domain,
            "tls": profile.tls.value,
            "dane": profile.dane.value,
            "mta_sts": "on" if profile.mta_sts else "off",
            "source": source,
            "route": " ".join(f"{r.host}:{r.port}" for r in routes),
        }
        events.append(LogEvent("send.settings", fields, "info", at))
    return events


async def _send_async(
    config: EngineConfig,
    args: argparse.Namespace,
    dialer: Dialer,
    envelope: tuple[str, list[str], bytes],
    level: str,
) -> int:
    from engine.delivery.agent import Engine, SystemClock
    from engine.logs import MailLogWriter

    mail_from, rcpts, data = envelope
    # --json: stdout is the report alone (a tool reads it); the log lines go to stderr.
    writer = MailLogWriter(sys.stderr if args.json else sys.stdout, level=level)
    for event in settings_events(config, args.config, rcpts, SystemClock().now()):
        writer.emit(event)  # the first lines: what the attempt runs with, and why
    async with Engine(config, sink=writer, dialer=dialer) as engine:
        report = await engine.deliver(mail_from, rcpts, data)
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    return {"delivered": EXIT_DELIVERED, "deferred": EXIT_DEFERRED}.get(report.status, EXIT_BOUNCED)


def _check(args: argparse.Namespace) -> int:
    from engine.commands.domain_check import check_domain

    config = _config(args)
    report = eventloop.run(check_domain(config, args.domain, dialer=_dialer(args)))
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        for line in report.lines():
            sys.stdout.write(line + "\n")
    return 0 if report.ok else 1
