"""How our engine is wired to a running world: the parts the in-process adapters share.

Both :mod:`harness.adapters.inprocess` (the engine alone) and
:mod:`harness.adapters.gateway` (the whole gateway) build our code in the runner's
loop and aim it at the world the same way, through its configuration only, as an
operator would (the engine has no test hooks):

* :func:`config_for` turns a scenario's ``[sender]`` into an engine configuration that
  names the world's resolver and trusted root, with short timeouts unless the
  scenario says otherwise: every SMTP stage :data:`SMTP_TIMEOUT`, the policy fetch
  :data:`FETCH_TIMEOUT`, DNS :data:`DNS_TIMEOUT` (fault scenarios stay fast);
* :class:`LiveEndpoints` is the world's endpoint map read at each lookup, for a
  loopback-only :class:`~engine.io.dialer.Dialer` (a mutation that adds an MX adds a
  server, and the engine must reach it);
* :func:`world_roots` is the world's CA, the engine's trust store;
* :class:`StampingSink` keeps each event with the world's clock and its rendered
  mail_logs line (debug level), so the runner can interleave events with the
  world's exchanges.

The process adapter (:mod:`harness.adapters.process`) gives ``sts-engine serve`` the
same timeouts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from engine.config import EngineConfig, parse_config
from engine.core.events import LogEvent
from engine.logs import MailLogWriter
from harness.adapters.sender import sender_toml
from harness.scenario.observation import EventRecord
from harness.world.world import World

__all__ = [
    "DNS_TIMEOUT",
    "FETCH_TIMEOUT",
    "SMTP_TIMEOUT",
    "LiveEndpoints",
    "StampingSink",
    "config_for",
    "world_roots",
]

SMTP_TIMEOUT = 2.0
FETCH_TIMEOUT = 1.0
DNS_TIMEOUT = 0.5


class LiveEndpoints(Mapping[tuple[str, int], tuple[str, int]]):
    """The world's endpoint map, read at each lookup (mutations add servers)."""

    def __init__(self, world: World) -> None:
        self._world = world

    def __getitem__(self, key: tuple[str, int]) -> tuple[str, int]:
        return self._world.endpoint_map[key]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._world.endpoint_map)

    def __len__(self) -> int:
        return len(self._world.endpoint_map)


class StampingSink:
    """Keeps events as :class:`EventRecord` s: JSON-ready fields, world time, log line."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._render = MailLogWriter(io.StringIO(), level="debug")  # only .line() is used
        self.events: list[EventRecord] = []

    def emit(self, event: LogEvent) -> None:
        fields = json.loads(json.dumps(dict(event.fields), default=str))
        line = self._render.line(event) or ""
        at = self._world.dns.clock()
        self.events.append(EventRecord(event.code, fields, event.level, event.at, at, line))


def world_roots(world: World) -> list[bytes]:
    """The world's CA certificates (DER): the engine's trust store for this world."""
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(world.ca_pem)]


def config_for(sender: Mapping[str, Any], world: World) -> EngineConfig:
    """The engine configuration for a scenario's ``[sender]`` in ``world``.

    The world's resolver, its CA file and its proxy (when it has one) are filled in;
    the DNS and policy fetch timeouts are :data:`DNS_TIMEOUT` and
    :data:`FETCH_TIMEOUT` unless ``[sender]`` sets them.

    Raises:
        engine.core.errors.ConfigError: ``[sender]`` is not a valid engine configuration.
    """
    proxy = world.hosts.get("proxy")
    text = sender_toml(sender, (proxy.address, proxy.port) if proxy else None)
    config = parse_config(text, file="[sender]")
    dns = sender.get("dns", {})
    fetch = sender.get("policy_fetch", {})
    return replace(
        config,
        dns=replace(
            config.dns,
            resolvers=(world.resolver,),
            timeout=config.dns.timeout if "timeout" in dns else DNS_TIMEOUT,
        ),
        policy_fetch=replace(
            config.policy_fetch,
            timeout=config.policy_fetch.timeout if "timeout" in fetch else FETCH_TIMEOUT,
        ),
        tls=replace(config.tls, ca_file=world.ca_file),
    )
