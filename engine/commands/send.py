"""``sts-engine send`` (one delivery attempt) and ``sts-engine check`` (verify a domain)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine import eventloop
from engine.commands import UsageError
from engine.config import EngineConfig, load_config
from engine.core.errors import ConfigError
from engine.io.dialer import Dialer

if TYPE_CHECKING:
    from engine.commands import Subparsers

__all__ = ["register"]

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
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


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
        if not Path(args.ca_file).is_file():
            raise UsageError(f"--ca-file {args.ca_file!r}: no such file")
        config = replace(config, tls=replace(config.tls, ca_file=Path(args.ca_file)))
    return config


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="engine configuration (TOML)")
    parser.add_argument(
        "--resolver",
        metavar="HOST:PORT",
        type=_hostport,
        action="append",
        help="validating resolver to use (repeatable); overrides [dns] resolvers",
    )
    parser.add_argument("--ca-file", metavar="PEM", help="trusted roots; overrides [tls] ca_file")
    parser.add_argument("--json", action="store_true", help="also print a JSON report")
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
    send.add_argument("--smtp-port", type=int, metavar="N", help="dial MX hosts on port N, not 25")
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
    check.add_argument("--smtp-port", type=int, metavar="N", help="probe MX hosts on port N")
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
    config = _config(args)
    data = _read_message(args.message)
    level = args.log_level or config.logging.level
    return eventloop.run(_send_async(config, args, data, level))


async def _send_async(
    config: EngineConfig, args: argparse.Namespace, data: bytes, level: str
) -> int:
    from engine.delivery.agent import Engine
    from engine.logs import MailLogWriter

    writer = MailLogWriter(sys.stdout, level=level)
    async with Engine(config, sink=writer, dialer=_dialer(args)) as engine:
        report = await engine.deliver(args.mail_from, args.rcpts, data)
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
