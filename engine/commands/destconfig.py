"""``sts-engine destconfig list|show|new|edit``: Destination Controls, as on the appliance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.commands import UsageError, command_group, config_command
from engine.commands.serve import load_config_or_usage
from engine.config import parse_config
from engine.core.controls import DaneOption, TlsSetting
from engine.core.errors import ConfigError

if TYPE_CHECKING:
    from engine.commands import Subparsers

__all__ = ["register"]

_EPILOG = """\
examples:
  sts-engine destconfig list --config gateway.toml
  sts-engine destconfig show example.com --config gateway.toml
  sts-engine destconfig new example.com --config gateway.toml          (asks the questions)
  sts-engine destconfig edit example.com --config gateway.toml \\
      --tls required-verify-hosted --dane none --mta-sts on --yes        (for scripts)
  sts-engine commit --config gateway.toml                               (apply to a running gateway)
"""


def register(subparsers: Subparsers) -> None:
    """Add the ``destconfig`` group."""
    group = command_group(
        subparsers,
        "destconfig",
        help="list, show, add or edit Destination Controls entries",
        epilog=_EPILOG,
    )
    for name, text in (
        ("list", "list every entry, inherited values resolved"),
        ("show", "show one domain's entry, inherited values resolved"),
    ):
        p = config_command(group, name, help=text, epilog=_EPILOG)
        if name == "show":
            p.add_argument("domain")
        p.set_defaults(handler=_list if name == "list" else _show)
    for name in ("new", "edit"):
        text = f"{name} a domain's entry (asks the appliance's questions unless --yes)"
        p = config_command(group, name, help=text, epilog=_EPILOG)
        p.add_argument("domain")
        p.add_argument("--tls", choices=[s.value for s in TlsSetting])
        p.add_argument("--dane", choices=[d.value for d in DaneOption])
        p.add_argument("--mta-sts", choices=["on", "off"])
        p.add_argument("--max-concurrency", type=int, metavar="N")
        p.add_argument("--max-messages-per-connection", type=int, metavar="N")
        p.add_argument("--bounce-profile", metavar="NAME")
        p.add_argument("--yes", action="store_true", help="no questions: flags and defaults")
        p.set_defaults(handler=_new_or_edit, mode=name)


def _explicit(path: Path, domain: str) -> dict[str, Any]:
    from engine.commands.destconfig_flow import read_toml

    table = read_toml(path).get("destination_controls", {})
    for key, value in table.items():
        if key.lower().rstrip(".") == domain:
            return dict(value)
    return {}


def _print_entry(path: Path, name: str) -> None:
    from engine.commands.destconfig_flow import profile_rows

    config = load_config_or_usage(str(path))
    profile = config.default_profile if name == "default" else config.profile_for(name)
    explicit = (
        _explicit(path, name)
        if name != "default"
        else dict.fromkeys(
            (
                "tls",
                "dane",
                "mta_sts",
                "max_concurrency",
                "max_messages_per_connection",
                "bounce_profile",
                "ip_sort_pref",
            )
        )
    )
    sys.stdout.write(f"{name if name != 'default' else 'Default'}\n")
    for label, value in profile_rows(profile, explicit, routed=bool(config.routes_for(name))):
        sys.stdout.write(f"    {label}: {value}\n")


def _list(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    _print_entry(Path(args.config), "default")
    for domain in sorted(config.profiles):
        _print_entry(Path(args.config), domain)
    return 0


def _show(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    domain = args.domain.lower().rstrip(".")
    if domain != "default" and domain not in config.profiles:
        sys.stderr.write(f"sts-engine: no destconfig entry for {domain!r} (the Default applies)\n")
    _print_entry(Path(args.config), domain)
    return 0


def _ask(prompt: str) -> str:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise UsageError("input ended before the questions were answered")
    return line.rstrip("\r\n")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.tls:
        out["tls"] = args.tls
    if args.dane:
        out["dane"] = args.dane
    if args.mta_sts:
        out["mta_sts"] = args.mta_sts == "on"
    if args.max_concurrency is not None:
        out["max_concurrency"] = args.max_concurrency
    if args.max_messages_per_connection is not None:
        out["max_messages_per_connection"] = args.max_messages_per_connection
    if args.bounce_profile:
        out["bounce_profile"] = args.bounce_profile
    return out


def _new_or_edit(args: argparse.Namespace) -> int:
    from engine.commands.destconfig_flow import Dialogue, merge_profile, read_toml, write_profile

    path = Path(args.config)
    config = load_config_or_usage(args.config)
    domain = args.domain.lower().rstrip(".")
    exists = domain in config.profiles
    if args.mode == "new" and exists:
        raise UsageError(f"{domain!r} already has an entry; use `destconfig edit`")
    if args.mode == "edit" and not exists:
        raise UsageError(f"{domain!r} has no entry; use `destconfig new`")
    values = _flags(args)
    if not args.yes:
        dialogue = Dialogue(
            ask=_ask,
            say=_say,
            current=config.profile_for(domain),
            bounce_profiles=sorted(config.bounce_profiles),
            routed=bool(config.routes_for(domain)),
        )
        values = {**dialogue.run(), **values}
    text = merge_profile(read_toml(path), domain, values)
    try:
        # Validate before writing: never leave an invalid file for a gateway to reload.
        parse_config(text, file=str(path), base_dir=path.parent)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    write_profile(path, text)
    _say(f"{domain}: saved to {path}. Use `sts-engine commit --config {path}` to apply.")
    return 0
