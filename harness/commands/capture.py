"""``sts-harness capture DOMAIN``: a delivery problem seen in the field, as a scenario file.

The command records what the domain serves (:func:`harness.capture.capture_domain`),
writes the scenario that reproduces it (:func:`harness.capture.capture_scenario`),
and, with ``--deliver``, makes one real delivery attempt with the same Destination
Controls and records its outcome as the step's expectations. Without ``--deliver``
nothing is sent and the expectations are left, commented, for you to fill in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from engine.config import parse_config
from engine.core.events import ListSink
from engine.delivery.agent import Engine, load_roots
from engine.io.dialer import Dialer
from harness.adapters.sender import sender_toml
from harness.capture import Capture, FixedClock, capture_domain, capture_scenario

__all__ = ["record_delivery", "register", "scenario_text"]

_EXAMPLE = """example:
  sts-harness capture example.com --resolver 127.0.0.1:53 -o scenarios/regressions/x.toml
  sts-harness capture example.com --resolver 127.0.9.53:5353 --ca-file world/ca.pem \\
      --endpoints world/endpoints.json --deliver --to rcpt@example.com

exit status: 0 written, 2 usage error
"""
_TLS = (
    "no",
    "preferred",
    "required",
    "preferred-verify",
    "required-verify",
    "required-verify-hosted",
)


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def register(subparsers: Any) -> None:
    """Add the ``capture`` command."""
    p = subparsers.add_parser(
        "capture",
        help="record a domain's DNS, policy and MX certificates as a scenario file",
        description="Record a domain's DNS answers, MTA-STS policy response and MX "
        "certificate properties into a scenario file whose world reproduces them.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("domain")
    p.add_argument(
        "--resolver",
        type=_hostport,
        action="append",
        metavar="HOST:PORT",
        help="validating resolver (repeatable; default 127.0.0.1:53)",
    )
    p.add_argument("--ca-file", type=Path, metavar="PEM", help="trusted roots (default: system)")
    p.add_argument(
        "--endpoints",
        type=Path,
        metavar="FILE",
        help='endpoint map {"ADDR:PORT": "ADDR:PORT"}; implies loopback-only',
    )
    p.add_argument("--at", type=float, metavar="POSIX", help="judge certificates at this time")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per operation")
    p.add_argument("--tls", choices=_TLS, default="preferred", help="TLS setting to replay with")
    p.add_argument("--dane", choices=("none", "opportunistic", "mandatory"), default="none")
    p.add_argument("--no-mta-sts", action="store_true", help="replay with MTA-STS off")
    p.add_argument("--from", dest="mail_from", default="capture@sts-harness.invalid")
    p.add_argument("--to", dest="rcpt", metavar="ADDRESS", help="default: postmaster@DOMAIN")
    p.add_argument(
        "--deliver",
        action="store_true",
        help="make one real delivery attempt and record its outcome",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: standard output")
    p.set_defaults(handler=_handle)


def _dialer(path: Path | None) -> Dialer:
    if path is None:
        return Dialer()
    raw = json.loads(path.read_text())
    mapping = {_hostport(k): _hostport(v) for k, v in raw.items()}
    return Dialer(endpoint_map=mapping, loopback_only=True)  # a simulated world


async def record_delivery(
    sender: Mapping[str, Any],
    *,
    resolvers: list[tuple[str, int]],
    roots: list[bytes],
    dialer: Dialer,
    mail_from: str,
    rcpt: str,
    at: float | None = None,
) -> dict[str, Any]:
    """One real delivery attempt with ``sender``'s controls; its outcome as ``[steps.expect]``."""
    config = parse_config(sender_toml(sender), file="[sender]")
    config = replace(config, dns=replace(config.dns, resolvers=tuple(resolvers)))
    clock = FixedClock(at) if at is not None else None
    data = f"To: <{rcpt}>\r\nSubject: sts-harness capture\r\n\r\ncaptured delivery\r\n".encode()
    async with Engine(config, sink=ListSink(), dialer=dialer, roots=roots, clock=clock) as e:
        report = await e.deliver(mail_from, [rcpt], data)
    (r,) = report.recipients
    expect: dict[str, Any] = {"outcome": r.status}
    if r.status == "delivered" and r.mx:
        expect.update(via=r.mx, tls=r.tls or "none", verified=r.verified)
    return expect


def scenario_text(doc: Mapping[str, Any], capture: Capture, recorded: bool) -> str:
    """The scenario file: a comment saying what was seen, the TOML, the open questions."""
    head = [
        f"# Captured from {capture.domain} by `sts-harness capture` (certificates judged "
        f"at {int(capture.at)}). Addresses are the world's own (loopback)."
    ]
    for m in capture.hosts:
        cert = m.cert
        seen = f"{cert.validity}, chains={cert.chains}, names={list(cert.names)}" if cert else "-"
        head.append(
            f"#   MX {m.preference} {m.host}: STARTTLS {m.starttls} "
            f"{'/'.join(m.tls_versions)} cert {seen} {m.detail}".rstrip()
        )
    if capture.policy is not None:
        p = capture.policy
        head.append(f"#   policy: {p.behaviour} {p.status or ''} {p.content_type or ''} {p.detail}")
    tail = (
        ""
        if recorded
        else (
            "\n# [steps.expect] left for you to fill in (no live delivery was made), e.g.\n"
            '# outcome = "delivered"\n# via = "mx1.example.com"\n# verified = "pkix"\n'
        )
    )
    return "\n".join(head) + "\n\n" + tomli_w.dumps(dict(doc)) + tail


async def _run(args: argparse.Namespace) -> str:
    resolvers = args.resolver or [("127.0.0.1", 53)]
    roots = load_roots(args.ca_file)
    dialer = _dialer(args.endpoints)
    capture = await capture_domain(
        args.domain,
        resolvers=resolvers,
        roots=roots,
        dialer=dialer,
        at=args.at,
        timeout=args.timeout,
    )
    entry: dict[str, Any] = {"tls": args.tls, "dane": args.dane}
    entry["mta_sts"] = args.tls != "no" and not args.no_mta_sts
    sender = {"destination_controls": {"default": {"tls": "preferred"}, capture.domain: entry}}
    rcpt = args.rcpt or f"postmaster@{capture.domain}"
    expect = None
    if args.deliver:
        expect = await record_delivery(
            sender,
            resolvers=resolvers,
            roots=roots,
            dialer=dialer,
            mail_from=args.mail_from,
            rcpt=rcpt,
            at=args.at,
        )
    send = {"from": args.mail_from, "to": [rcpt]}
    doc = capture_scenario(capture, sender=sender, send=send, expect=expect)
    return scenario_text(doc, capture, expect is not None)


def _handle(args: argparse.Namespace) -> int:
    if args.ca_file is not None and not args.ca_file.is_file():
        sys.stderr.write(f"sts-harness capture: --ca-file {str(args.ca_file)!r}: no such file\n")
        return 2
    try:
        text = asyncio.run(_run(args))
    except (OSError, ValueError, argparse.ArgumentTypeError) as exc:
        sys.stderr.write(f"sts-harness capture: {exc}\n")
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        sys.stderr.write(f"wrote {args.output}\n")
    return 0
