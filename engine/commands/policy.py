"""``sts-engine policy list|show|purge|refresh``: the persistent MTA-STS policy cache.

The cache is the SQLite file ``policy-cache.sqlite`` beside the queue
(:func:`engine.gateway.gateway.policy_cache_path`), the same one a running gateway
uses; WAL journaling lets both open it at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from engine import eventloop
from engine.commands import command_group, config_command
from engine.commands.serve import load_config_or_usage

if TYPE_CHECKING:
    from engine.commands import Subparsers
    from engine.config import EngineConfig
    from engine.io.store import SqlitePolicyStore

__all__ = ["register"]

_EPILOG = """\
examples:
  sts-engine policy list --config gateway.toml
  sts-engine policy show example.com --config gateway.toml
  sts-engine policy refresh example.com --config gateway.toml
  sts-engine policy purge example.com --config gateway.toml
"""


def register(subparsers: Subparsers) -> None:
    """Add ``policy list|show|purge|refresh`` to the ``policy`` group."""
    group = command_group(
        subparsers,
        "policy",
        help="MTA-STS policies: lint bodies, inspect the cache",
        epilog=_EPILOG,
    )
    for name, text in (
        ("list", "list cached policies"),
        ("show", "show one cached policy, its fetch failure and last use"),
        ("purge", "forget a domain's cached policy (the next delivery rediscovers it)"),
        ("refresh", "fetch a domain's policy now and update the cache"),
    ):
        p = config_command(group, name, help=text, epilog=_EPILOG)
        if name != "list":
            p.add_argument("domain")
        p.set_defaults(handler=_HANDLERS[name])


def _store(config: EngineConfig) -> SqlitePolicyStore:
    from engine.gateway.gateway import policy_cache_path
    from engine.io.store import SqlitePolicyStore

    return SqlitePolicyStore(policy_cache_path(config))


def _when(at: float | None) -> str:
    from engine.logs import format_ctime

    return "-" if at is None else format_ctime(at)


def _list(args: argparse.Namespace) -> int:
    store = _store(load_config_or_usage(args.config))
    try:
        entries = sorted(store.all(), key=lambda e: e.domain)
    finally:
        store.close()
    for e in entries:
        mx = " ".join(str(p) for p in e.policy.mx)
        sys.stdout.write(
            f"{e.domain}  mode {e.policy.mode.value}  id {e.txt_id}  "
            f"expires {_when(e.expires_at)}  mx {mx}\n"
        )
    sys.stdout.write(f"{len(entries)} cached polic{'y' if len(entries) == 1 else 'ies'}\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    store = _store(load_config_or_usage(args.config))
    domain = args.domain.lower().rstrip(".")
    try:
        entry, failure, used = store.get(domain), store.get_failure(domain), store.last_used(domain)
    finally:
        store.close()
    if entry is None and failure is None:
        sys.stderr.write(f"sts-engine: no cached policy for {domain!r}\n")
        return 1
    sys.stdout.write(f"{domain}\n")
    if entry is not None:
        sys.stdout.write(f"  id: {entry.txt_id}\n  fetched: {_when(entry.fetched_at)}\n")
        sys.stdout.write(f"  expires: {_when(entry.expires_at)}\n  last used: {_when(used)}\n")
        for line in entry.policy.lines():
            sys.stdout.write(f"    {line}\n")
    if failure is not None:
        sys.stdout.write(
            f"  last fetch failure: {_when(failure.failed_at)} id {failure.txt_id} "
            f"{failure.result_type.value} {failure.detail}\n"
        )
    return 0


def _purge(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    store = _store(config)
    domain = args.domain.lower().rstrip(".")
    try:
        found = store.get(domain) is not None
        store.delete(domain)
        store.clear_failure(domain)
    finally:
        store.close()
    sys.stdout.write(f"{domain}: {'purged' if found else 'nothing cached'}\n")
    if config.cluster.redis is not None:
        # docs/cluster.md: else the next cold delivery here brings the shared entry back.
        if eventloop.run(_forget_shared(config, domain)):
            sys.stdout.write(f"{domain}: purged from the cluster's shared cache too\n")
        else:
            sys.stdout.write(f"{domain}: the cluster's Redis did not answer; purge again\n")
            return 1
    return 0 if found else 1


async def _forget_shared(config: EngineConfig, domain: str) -> bool:
    from engine.core.events import ListSink
    from engine.delivery.agent import SystemClock
    from engine.io.redis_link import RedisLink
    from engine.io.redis_policy import RedisPolicyShare

    c = config.cluster
    assert c.redis is not None
    link = RedisLink(
        c.redis, timeout=max(c.timeout, 1.0), retry_after=c.retry_after, prefix=c.prefix,
        sink=ListSink(), clock=SystemClock(),
    )  # fmt: skip
    async with link:
        return await RedisPolicyShare(link, lease=0.0, wait=0.0).forget(domain)


def _refresh(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    return eventloop.run(_refresh_async(config, args.domain.lower().rstrip(".")))


async def _refresh_async(config: EngineConfig, domain: str) -> int:
    from engine.delivery.agent import Engine
    from engine.delivery.mtasts import discover_policy, refresh_policy
    from engine.logs import MailLogWriter

    store = _store(config)
    try:
        async with Engine(config, sink=MailLogWriter(sys.stdout, level="debug"), store=store) as e:
            entry = store.get(domain)
            common = {
                "resolver": e.resolver,
                "fetcher": e.fetcher,
                "store": store,
                "clock": e.clock,
                "sink": e.sink,
            }
            if entry is not None:
                result = await refresh_policy(entry, **common)  # type: ignore[arg-type]
            else:
                result = await discover_policy(domain, **common)  # type: ignore[arg-type]
    finally:
        store.close()
    if result.policy is None:
        sys.stdout.write(f"{domain}: no policy ({result.reason})\n")
        return 1
    sys.stdout.write(f"{domain}: mode {result.policy.mode.value} ({result.source})\n")
    return 0


_HANDLERS = {"list": _list, "show": _show, "purge": _purge, "refresh": _refresh}
