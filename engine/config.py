"""The engine's TOML configuration: load, validate, resolve.

Theory of operation
-------------------
One file, read through :class:`~engine.core.tomlnode.TomlNode` and validated
strictly: an unknown key is an error naming the file and the dotted key path; a
bad value names the file, the key, the value and what is allowed. Nothing is
printed; advice comes back in :attr:`EngineConfig.warnings`.

Layout::

    [destination_controls.default]        # the Default entry
    tls = "preferred"                     # no | preferred | required | preferred-verify
                                          # | required-verify | required-verify-hosted
    [destination_controls."example.com"]  # a domain entry; missing keys inherit
    tls = "required-verify-hosted"        # from the Default entry (docs/gateway-behaviour.md §1)
    mta_sts = true
    [routes]
    "example.com" = ["relay.example.net:2525"]
    [bounce_profiles.default]
    max_retries = 100
    [dns]           resolvers = ["127.0.0.53:5353"], trust_ad = false, timeout = 5.0,
                    retransmit = 1.0
    [identity]      names = ["mx20.example.com"]   # MX names that are this sender
    [tls]           ca_file = "roots.pem"
    [policy_fetch]  timeout = 10.0, max_body = 65536, proxy = "127.0.0.9:3128"
    [logging]       level = "info"
    [queue]         path = "queue.sqlite"
    [listener]      host = "127.0.0.1", port = 2525
    [cluster]       redis = "redis://redis.example.net:6379/0"  # shared state (docs/cluster.md)

Domain keys are compared as lower-case A-labels without the root dot, so
``profile_for("BÜCHER.example.")`` finds ``[destination_controls."xn--bcher-kva.example"]``.
Relative paths are taken from the configuration file's directory.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from engine.core.controls import (
    Coexistence,
    DaneOption,
    DestinationProfile,
    IpSortPref,
    PostStarttlsFailure,
    Route,
    RouteSts,
    TlsSetting,
)
from engine.core.errors import ConfigError, MxPatternError
from engine.core.mx import is_domain, normalize_host
from engine.core.retry import BounceProfile, Growth
from engine.core.tomlnode import TomlNode, key_path

__all__ = [
    "DEFAULT_PROFILE_STS_WARNING",
    "DEFAULT_RELAY_NETWORKS",
    "MIN_MESSAGE_SIZE",
    "MIN_RECIPIENTS",
    "ClusterConfig",
    "DnsConfig",
    "EngineConfig",
    "IdentityConfig",
    "ListenerConfig",
    "LoggingConfig",
    "PolicyFetchConfig",
    "QueueConfig",
    "TlsConfig",
    "TlsRptConfig",
    "check_listener",
    "load_config",
    "parse_config",
    "relay_network",
]

DEFAULT_PROFILE_STS_WARNING = (
    "mta_sts is on in the default destination profile, so every domain without its own "
    "entry gets MTA-STS; the seed advises enabling it per domain instead"
)
HostPort = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """``[dns]``: resolvers as (address, port); empty means the system's.

    Attributes:
        resolvers: where queries go, in order.
        timeout: seconds per lookup.
        retransmit: seconds before an unanswered UDP query to a trusted resolver is sent
            again, doubling each time, within ``timeout`` (RFC 1123 §6.1.3.3); 0 never.
        trust_ad: whether the resolvers' AD bit is believed: True for all, False for
            none, None (the default) for loopback resolvers only (DANE-1, RFC 7672
            §2.1.1: AD counts only from a validating resolver over a secure channel).
    """

    resolvers: tuple[HostPort, ...] = ()
    timeout: float = 5.0
    retransmit: float = 1.0
    trust_ad: bool | None = None


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """``[identity]``: the host names that are this sender (lower-case A-labels).

    An MX RRset listing one of them makes the sender a relay for that domain: RFC 5321
    §5.1's loop rule then drops every MX at that preference or worse (MX-8).
    """

    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[tls]``: trust anchors for MX and policy-host certificates.

    A configuration file must name them: ``ca_file = "roots.pem"`` (a PEM file of
    trusted roots) or ``ca_file = "system"`` (the system's store, which must exist);
    ``ca_file`` None here means the system's store.
    """

    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class PolicyFetchConfig:
    """``[policy_fetch]``: HTTPS policy fetch limits and the optional CONNECT proxy."""

    timeout: float = 10.0
    max_body: int = 65_536  # RFC 8461 §3.3: a 64 KiB cap is suggested
    proxy: HostPort | None = None


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """``[logging]``: ``info`` or ``debug``."""

    level: str = "info"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[queue]``: the SQLite store path."""

    path: Path = Path("queue.sqlite")


DEFAULT_RELAY_NETWORKS = ("127.0.0.0/8", "::1/128")
# RFC 5321 §4.5.3.1.10: a server must take messages of at least 64K octets.
MIN_MESSAGE_SIZE = 65_536
# RFC 5321 §4.5.3.1.8: a server must buffer at least 100 recipients per transaction.
MIN_RECIPIENTS = 100
OPEN_RELAY_WARNING = (
    "OPEN RELAY: [listener] relay_networks includes {networks} and allow_open_relay = true: "
    "any host that reaches {host} port {port} can send mail anywhere through this gateway"
)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """``[listener]``: the injection listener: where it binds, who may relay, its limits.

    Attributes:
        host: the address to bind (an IP address or host name; ``0.0.0.0`` or ``::`` for
            every interface, spelled out: an empty host is refused).
        port: the port (0: the kernel picks one).
        relay_networks: client networks (CIDR) that may relay without AUTH.
        allow_open_relay: allow a relay network of every address (``0.0.0.0/0``,
            ``::/0``); without it such a network is an error, with it a loud warning.
        tls_cert, tls_key: the listener's own STARTTLS certificate chain and key (PEM),
            both or neither.
        users_file: SMTP AUTH users (``name:argon2-hash`` lines); AUTH PLAIN and LOGIN
            are offered after STARTTLS only when it is set (it needs ``tls_cert``).
        max_message_size: the largest message in bytes (the ``SIZE`` keyword, RFC 1870).
        max_recipients: recipients per transaction; past it ``452 4.5.3``.
        max_connections: sessions at once; past it new clients get ``421 4.7.0``.
        max_connections_per_client: sessions at once from one client address.
        idle_timeout: seconds without a command (or a line of DATA) before ``421 4.4.2``.
        session_timeout: seconds a session may last at all before ``421 4.4.2``.
        max_auth_failures: failed AUTH attempts in one session; the last is answered
            ``421 4.7.0`` and the session closed.
        max_auth_failures_per_client: failed AUTH attempts from one client address within
            ``auth_failure_window``; past them its AUTH gets ``454 4.7.0`` unchecked.
        auth_failure_window: seconds a failed AUTH attempt counts against its client.
        max_auth_checks: passwords hashed at once (each Argon2id check takes its memory
            cost, 64 MiB by default); further AUTH commands wait their turn.
    """

    host: str = "127.0.0.1"
    port: int = 2525
    relay_networks: tuple[str, ...] = DEFAULT_RELAY_NETWORKS
    allow_open_relay: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    users_file: Path | None = None
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 1000
    max_connections: int = 100
    max_connections_per_client: int = 20
    # RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
    idle_timeout: float = 300.0
    session_timeout: float = 3600.0
    max_auth_failures: int = 3
    max_auth_failures_per_client: int = 10
    auth_failure_window: float = 600.0
    max_auth_checks: int = 2


@dataclass(frozen=True, slots=True)
class TlsRptConfig:
    """``[tlsrpt]``: how the gateway writes and sends TLS reports (RFC 8460).

    Attributes:
        organization_name: the report's ``organization-name``.
        contact_info: the report's ``contact-info`` and mail sender (None: derived).
        delay: seconds after the UTC day ends before a report may go (RPT-17).
        jitter: the most random extra wait in seconds (RPT-17).
        dkim_selector, dkim_domain, dkim_key_file: sign mailed reports (RPT-10); all three
            or none. The key record should carry ``s=tlsrpt`` (AMB-23).
    """

    organization_name: str = "sts-engine"
    contact_info: str | None = None
    delay: float = 3600.0
    jitter: float = 3600.0
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """``[cluster]``: what several gateways share through Redis (docs/cluster.md).

    Attributes:
        redis: the Redis URL (``redis://``, ``rediss://`` or ``unix://``), or None for a
            gateway on its own (its SQLite files only, as without the table).
        timeout: seconds any one Redis call may take; past it the gateway goes on
            with its local cache, so Redis never holds up delivery for longer.
        retry_after: seconds Redis is left alone after a failure (the circuit breaker)
            before one call tries it again.
        prefix: the start of every key, so that several clusters can share one Redis.
    """

    redis: str | None = None
    timeout: float = 0.25
    retry_after: float = 5.0
    prefix: str = "sts-engine"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The whole, validated configuration.

    Attributes:
        default_profile: the Default Destination Controls entry.
        profiles: domain (A-label) -> resolved profile (missing keys from the Default).
        routes: domain (A-label) -> SMTP route targets, in order.
        bounce_profiles: name -> profile (``default`` always present).
        dns, identity, tls, policy_fetch, logging, queue, listener, tlsrpt, cluster: the
            other sections.
        source: the file read, or ``"<string>"``.
        warnings: advice that is not an error.
    """

    default_profile: DestinationProfile = field(default_factory=DestinationProfile)
    profiles: Mapping[str, DestinationProfile] = field(default_factory=dict)
    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)
    bounce_profiles: Mapping[str, BounceProfile] = field(
        default_factory=lambda: {"default": BounceProfile()}
    )
    dns: DnsConfig = field(default_factory=DnsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    policy_fetch: PolicyFetchConfig = field(default_factory=PolicyFetchConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    listener: ListenerConfig = field(default_factory=ListenerConfig)
    tlsrpt: TlsRptConfig = field(default_factory=TlsRptConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    source: str = "<string>"
    warnings: tuple[str, ...] = ()

    def profile_for(self, domain: str) -> DestinationProfile:
        """The resolved profile for ``domain`` (the Default one when it has no entry).

        Args:
            domain: a recipient domain in any case, U-labels or A-labels, root dot optional.
        """
        key = _domain_key(domain)
        return self.profiles.get(key, self.default_profile) if key else self.default_profile

    def routes_for(self, domain: str) -> tuple[Route, ...]:
        """The SMTP route targets for ``domain``; empty when it is not routed."""
        key = _domain_key(domain)
        return self.routes.get(key, ()) if key else ()

    def bounce_profile_for(self, domain: str) -> BounceProfile:
        """The bounce profile named by ``domain``'s Destination Controls profile."""
        return self.bounce_profiles[self.profile_for(domain).bounce_profile]


def load_config(path: str | Path, *, trust_anchors_required: bool = True) -> EngineConfig:
    """Read and validate a configuration file.

    Args:
        path: the TOML file.
        trust_anchors_required: ``[tls] ca_file`` must be there (a PEM file, or
            ``"system"`` spelled out), so a gateway never runs without trust anchors by
            omission; a command given ``--ca-file`` passes False.

    Raises:
        ConfigError: unreadable file, TOML syntax, unknown key or bad value; the
            message names the file, the key path and the value.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration: {exc}", file=str(p)) from exc
    return parse_config(
        text, file=str(p), base_dir=p.parent, trust_anchors_required=trust_anchors_required
    )


def parse_config(
    text: str,
    *,
    file: str = "<string>",
    base_dir: Path | None = None,
    trust_anchors_required: bool = False,
) -> EngineConfig:
    """Validate configuration text (see the module comment for the layout).

    Args:
        text: TOML.
        file: the name used in errors.
        base_dir: where relative paths start (default: the current directory).
        trust_anchors_required: ``[tls] ca_file`` must be given (a path or ``"system"``);
            :func:`load_config` asks for it, so an operator's file never runs without
            trust anchors by omission. Fragments (a scenario's ``[sender]``) need not.

    Raises:
        ConfigError: as :func:`load_config`.
    """
    root = TomlNode.parse(text, file)
    root.table(_SECTIONS)  # no unknown section
    sec = {name: _section(root, name) for name in _SECTIONS}
    bounce = _bounce_profiles(sec["bounce_profiles"])
    default, profiles, warnings = _destination_controls(sec["destination_controls"])
    for where, prof in [("default", default), *profiles.items()]:
        if prof.bounce_profile not in bounce:
            entry = key_path("destination_controls", where)
            named = TomlNode(prof.bounce_profile, file, key_path(entry, "bounce_profile"))
            raise named.bad(f"one of the [bounce_profiles] {sorted(bounce)}", sorted(bounce))
    dns, listener = sec["dns"], sec["listener"]
    paths = _Paths(base_dir or Path("."))
    return EngineConfig(
        default_profile=default,
        profiles=profiles,
        routes=_routes(sec["routes"]),
        bounce_profiles=bounce,
        dns=DnsConfig(
            resolvers=tuple(
                _host_port(n, 53, ip_only=True) for n in dns.get("resolvers", []).items()
            ),
            timeout=dns.get("timeout", 5.0).number(above=0),
            retransmit=_seconds(dns.get("retransmit", 1.0)),
            trust_ad=dns.get("trust_ad").boolean() if "trust_ad" in dns else None,
        ),
        identity=IdentityConfig(names=_host_names(sec["identity"].get("names", []))),
        tls=_trust_anchors(sec["tls"], paths, required=trust_anchors_required),
        policy_fetch=_policy_fetch(sec["policy_fetch"]),
        logging=LoggingConfig(level=sec["logging"].get("level", "info").choice(("info", "debug"))),
        queue=QueueConfig(path=paths.optional(sec["queue"], "path") or Path("queue.sqlite")),
        listener=_listener(listener, paths, warnings),
        tlsrpt=_tlsrpt(sec["tlsrpt"], paths),
        cluster=_cluster(sec["cluster"]),
        source=file,
        warnings=tuple(warnings),
    )


_SECTIONS = (
    "destination_controls",
    "routes",
    "bounce_profiles",
    "dns",
    "identity",
    "tls",
    "policy_fetch",
    "logging",
    "queue",
    "listener",
    "tlsrpt",
    "cluster",
)
_SECTION_KEYS: dict[str, tuple[str, ...] | None] = {
    "destination_controls": None,  # the Default entry and domain names
    "routes": None,
    "bounce_profiles": None,
    "dns": ("resolvers", "timeout", "retransmit", "trust_ad"),
    "identity": ("names",),
    "tls": ("ca_file",),
    "policy_fetch": ("timeout", "max_body", "proxy"),
    "logging": ("level",),
    "queue": ("path",),
    "listener": tuple(f.name for f in fields(ListenerConfig)),
    "tlsrpt": (
        "organization_name",
        "contact_info",
        "delay",
        "jitter",
        "dkim_selector",
        "dkim_domain",
        "dkim_key_file",
    ),
    "cluster": tuple(f.name for f in fields(ClusterConfig)),
}
_PROFILE_KEYS = tuple(f.name for f in fields(DestinationProfile))
_BOOL_PROFILE_KEYS = (
    "mta_sts",
    "opportunistic_dane_fail_falls_back",
    "sts_testing_falls_back",
    "dane_audit_only",
)
_BOUNCE_KEYS = tuple(f.name for f in fields(BounceProfile) if f.name != "name")
_ENUMS: dict[str, type[StrEnum]] = {
    "tls": TlsSetting,
    "dane": DaneOption,
    "ip_sort_pref": IpSortPref,
    "preferred_post220_failure": PostStarttlsFailure,
    "coexistence": Coexistence,
    "route_sts": RouteSts,
}


def _domain_key(domain: str) -> str | None:
    try:
        return normalize_host(domain)
    except MxPatternError:
        return None


def _section(root: TomlNode, name: str) -> TomlNode:
    """A top-level table (empty when absent), its keys checked when they are fixed."""
    node = root.get(name, {})
    allowed = _SECTION_KEYS[name]
    node.table(allowed)  # a table, with only the keys it may have
    return node


def _seconds(node: TomlNode) -> float:
    return node.number(at_least=0, expected="a finite number of seconds, 0 or more")


def _port(node: TomlNode) -> int:
    port = node.integer(0)
    if port > 65535:
        raise node.bad("a port number 0..65535")
    return port


def _count(node: TomlNode) -> int:
    """``max_concurrency``, ``max_messages_per_connection``, ``max_body``: 1 or more."""
    return node.integer(1)


class _Paths:
    """File names in the configuration, relative ones taken from ``base_dir``."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def optional(self, table: TomlNode, key: str) -> Path | None:
        if key not in table:
            return None
        node = table.get(key)
        if not node.text():
            raise node.bad("a non-empty path")
        p = Path(node.value)
        return p if p.is_absolute() else self.base_dir / p


def _host_port(node: TomlNode, default_port: int, *, ip_only: bool) -> HostPort:
    """``host[:port]`` or ``[v6]:port``; a bare IPv6 address takes the default port."""
    value = node.text(non_empty=True, expected='"host:port"')
    host, port_text = value, ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            raise node.bad('"[v6-address]:port"')
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise node.bad('"host:port" with a port 1..65535')
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ip_only or not is_domain(host.rstrip(".").lower()):
            what = "an IP address" if ip_only else "a host name or IP address"
            raise node.bad(f'"host:port" with {what}') from None
    return host, port


def _host_names(node: TomlNode) -> tuple[str, ...]:
    """A list of host names, as lower-case A-labels without the root dot."""
    names: list[str] = []
    for item in node.items():
        name = _domain_key(item.value) if isinstance(item.value, str) else None
        if name is None or not is_domain(name):
            raise item.bad("a host name")
        names.append(name)
    return tuple(dict.fromkeys(names))


def _bounce_profiles(section: TomlNode) -> dict[str, BounceProfile]:
    profiles = {"default": BounceProfile()}
    for name, node in section.table().items():
        t = node.table(_BOUNCE_KEYS)
        d = BounceProfile()
        prof = BounceProfile(
            name=name,
            max_retries=node.get("max_retries", d.max_retries).integer(0),
            max_queue_seconds=node.get("max_queue_seconds", d.max_queue_seconds).number(above=0),
            initial_retry=node.get("initial_retry", d.initial_retry).number(above=0),
            max_retry=node.get("max_retry", d.max_retry).number(above=0),
            growth=t["growth"].member(Growth, spelling=_hyphens) if "growth" in t else d.growth,
            delay_warnings=node.get("delay_warnings", d.delay_warnings).boolean(),
        )
        if prof.initial_retry > prof.max_retry:
            # Named where it is set, or at its path with the default when it is not.
            raise node.get("initial_retry", d.initial_retry).bad("<= max_retry")
        profiles[name] = prof
    return profiles


def _hyphens(text: str) -> str:
    return text.replace("_", "-")


def _profile(node: TomlNode, base: DestinationProfile) -> DestinationProfile:
    changes: dict[str, object] = {}
    for key, item in node.table(_PROFILE_KEYS).items():
        if key in _ENUMS:
            # ip_sort_pref values are upper case with underscores (PREFER_V4).
            spelling = None if _ENUMS[key] is IpSortPref else _hyphens
            changes[key] = item.member(_ENUMS[key], spelling=spelling)
        elif key in _BOOL_PROFILE_KEYS:
            changes[key] = item.boolean()
        elif key == "bounce_profile":
            changes[key] = item.text()
        else:  # max_concurrency, max_messages_per_connection
            changes[key] = _count(item)
    prof = replace(base, **changes)  # type: ignore[arg-type]
    if prof.mta_sts and prof.tls is TlsSetting.NO:
        # docs/gateway-behaviour.md §3 [SEED]: MTA-STS can be set only for TLS settings
        # other than No.
        where = node.child("mta_sts", True)
        raise where.bad('false while tls = "no" (MTA-STS needs TLS)')
    return prof


def _destination_controls(
    section: TomlNode,
) -> tuple[DestinationProfile, dict[str, DestinationProfile], list[str]]:
    tables = section.table()
    default = DestinationProfile()
    if "default" in tables:
        default = _profile(tables["default"], default)
    warnings = [DEFAULT_PROFILE_STS_WARNING] if default.mta_sts else []
    profiles: dict[str, DestinationProfile] = {}
    for name, node in tables.items():
        if name == "default":
            continue
        key = _domain(node, name, profiles)
        # docs/gateway-behaviour.md §1: a key missing from a domain entry is inherited
        # from the Default entry.
        profiles[key] = _profile(node, default)
    return default, profiles, warnings


def _domain(node: TomlNode, name: str, seen: Mapping[str, object]) -> str:
    """The A-label key of a table named by a domain (``node`` is that table)."""
    key = _domain_key(name)
    named = TomlNode(name, node.file, node.path)
    if key is None or not is_domain(key):
        raise named.bad("a domain name")
    if key in seen:
        raise named.bad(f"one entry per domain ({key!r} is already configured)")
    return key


def _routes(section: TomlNode) -> dict[str, tuple[Route, ...]]:
    routes: dict[str, tuple[Route, ...]] = {}
    for name, node in section.table().items():
        key = _domain(node, name, routes)
        targets = node.items(non_empty=True, expected='a non-empty list of "host:port"')
        pairs = [_host_port(t, 25, ip_only=False) for t in targets]
        routes[key] = tuple(Route(host, port) for host, port in pairs)
    return routes


def _tlsrpt(t: TomlNode, paths: _Paths) -> TlsRptConfig:
    """``[tlsrpt]``; the DKIM keys go together (RPT-10)."""
    dkim = ("dkim_selector", "dkim_domain", "dkim_key_file")
    given = [k for k in dkim if k in t and t.get(k).value is not None]
    if given and len(given) != 3:
        missing = sorted(set(dkim) - set(given))
        raise t.child(missing[0], None).bad("set together with " + ", ".join(given))
    contact = t.get("contact_info", None)
    return TlsRptConfig(
        organization_name=t.get("organization_name", "sts-engine").text(),
        contact_info=contact.text() if contact.value else None,
        delay=t.get("delay", 3600.0).number(above=0),
        jitter=_seconds(t.get("jitter", 3600.0)),
        dkim_selector=t.get("dkim_selector", "").text() or None,
        dkim_domain=t.get("dkim_domain", "").text() or None,
        dkim_key_file=paths.optional(t, "dkim_key_file"),
    )


_REDIS_URL = '"redis://HOST[:PORT][/DB]", "rediss://HOST[:PORT][/DB]" or "unix:///PATH"'
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _cluster(t: TomlNode) -> ClusterConfig:
    """``[cluster]``: the Redis URL checked here, so a typo is one line at start-up."""
    d = ClusterConfig()
    prefix = t.get("prefix", d.prefix)
    if not prefix.text(non_empty=True, expected="a non-empty key prefix").isprintable():
        raise prefix.bad("a key prefix of printable characters")
    config = ClusterConfig(
        redis=_redis_url(t.get("redis")) if "redis" in t else None,
        timeout=t.get("timeout", d.timeout).number(above=0),
        retry_after=t.get("retry_after", d.retry_after).number(above=0),
        prefix=prefix.value,
    )
    if config.redis is not None and importlib.util.find_spec("redis") is None:
        raise t.get("redis").bad(
            "a Redis URL with the redis package installed (pip install 'mta-sts-harness[cluster]')"
        )
    return config


def _redis_url(node: TomlNode) -> str:
    value = node.text(non_empty=True, expected=f"a Redis URL: {_REDIS_URL}")
    try:
        url = urlsplit(value)
        port = url.port  # ValueError when it is no port number
    except ValueError:
        raise node.bad(f"a Redis URL: {_REDIS_URL}") from None
    if url.scheme not in _REDIS_SCHEMES:
        raise node.bad(f"a Redis URL: {_REDIS_URL}", _REDIS_SCHEMES)
    if url.scheme == "unix":
        if not url.path.startswith("/") or url.netloc:
            raise node.bad(f"a Unix socket URL with an absolute path: {_REDIS_URL}")
        return value
    db = url.path.strip("/")
    if not url.hostname or port == 0 or (db and not db.isdigit()):
        raise node.bad(f"a Redis URL: {_REDIS_URL}")
    return value


def _policy_fetch(t: TomlNode) -> PolicyFetchConfig:
    d = PolicyFetchConfig()
    proxy = t.get("proxy", None)
    return PolicyFetchConfig(
        timeout=t.get("timeout", d.timeout).number(above=0),
        max_body=_count(t.get("max_body", d.max_body)),
        proxy=None if proxy.value is None else _host_port(proxy, 3128, ip_only=False),
    )


def _trust_anchors(t: TomlNode, paths: _Paths, *, required: bool) -> TlsConfig:
    """``[tls] ca_file``: a PEM file that holds certificates, or ``"system"`` spelled out."""
    if "ca_file" not in t:
        if required:
            raise ConfigError(
                'missing key; name the trust anchors: a PEM file of roots, or "system" '
                "for the system's store",
                file=t.file,
                key=key_path(t.path, "ca_file"),
            )
        return TlsConfig()
    node = t.get("ca_file")
    if node.text(non_empty=True, expected='a PEM file, or "system"') == "system":
        system = ssl.get_default_verify_paths()
        found = [f for f in (system.cafile, system.openssl_cafile) if f and Path(f).is_file()]
        if not found:
            raise node.bad(
                f"a PEM file: this system has no CA bundle (none at {system.openssl_cafile!r})"
            )
        return TlsConfig(ca_file=None)
    path = paths.optional(t, "ca_file")
    assert path is not None
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise node.bad(f"a readable PEM file ({exc.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise node.bad("a PEM file with at least one CERTIFICATE block")
    return TlsConfig(ca_file=path)


def relay_network(text: str) -> str:
    """A relay network as CIDR text (``10.0.0.0/8``, ``2001:db8::/32``, ``192.0.2.7``).

    Host bits are allowed (``10.1.2.3/8`` means ``10.0.0.0/8``).

    Raises:
        ValueError: not an IPv4 or IPv6 network (the message says so in one line).
    """
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP network (CIDR, like 10.0.0.0/8)") from None


_ALL_INTERFACES = ("0.0.0.0", "::")


def check_listener(listener: ListenerConfig) -> list[str]:
    """The open-relay rules for a listener; returns the warnings they give.

    A relay network of every address (prefix length 0) makes an open relay (RFC 5321
    §3.6.2: relaying for arbitrary clients invites abuse; RFC 5068 §3): refused unless
    ``allow_open_relay`` says it is meant, and then a loud warning.

    Raises:
        ValueError: an open relay that ``allow_open_relay`` does not allow (one line).
    """
    every = [n for n in listener.relay_networks if ipaddress.ip_network(n).prefixlen == 0]
    if not every:
        return []
    if not listener.allow_open_relay:
        where = "every interface" if listener.host in _ALL_INTERFACES else repr(listener.host)
        raise ValueError(
            f"relay network {every[0]} lets any client relay (an open relay) on {where}; "
            "list the client networks that may relay, or set allow_open_relay = true"
        )
    return [
        OPEN_RELAY_WARNING.format(networks=", ".join(every), host=listener.host, port=listener.port)
    ]


def _listener(t: TomlNode, paths: _Paths, warnings: list[str]) -> ListenerConfig:
    d = ListenerConfig()
    host_node = t.get("host", d.host)
    host = host_node.text(
        non_empty=True,
        expected='an address to listen on ("0.0.0.0" or "::" for every interface)',
    )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_domain(host.rstrip(".").lower()):
            raise host_node.bad("an IP address or host name to listen on") from None
    networks_node = t.get("relay_networks", list(d.relay_networks))
    networks = []
    for item in networks_node.items(expected="a list of networks (CIDR)"):
        try:
            networks.append(relay_network(item.text(expected="a network (CIDR)")))
        except ValueError:
            raise item.bad("an IP network in CIDR form, like 10.0.0.0/8") from None
    cert, key = paths.optional(t, "tls_cert"), paths.optional(t, "tls_key")
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise t.child(missing, None).bad(
            "set together with " + ("tls_cert" if key is None else "tls_key")
        )
    users = paths.optional(t, "users_file")
    if users is not None and cert is None:
        # RFC 4954 §4 and RFC 4616 §2: PLAIN and LOGIN send the password in the clear, so
        # they are offered only inside TLS; without a certificate they never would be.
        raise t.get("users_file").bad(
            "a users file together with tls_cert and tls_key (AUTH is offered only after STARTTLS)"
        )
    idle = t.get("idle_timeout", d.idle_timeout).number(above=0)
    session = t.get("session_timeout", d.session_timeout).number(above=0)
    if session < idle:
        raise t.get("session_timeout", d.session_timeout).bad(f">= idle_timeout ({idle:g})")
    total = t.get("max_connections", d.max_connections).integer(1)
    per_client_node = t.get("max_connections_per_client", min(d.max_connections_per_client, total))
    config = ListenerConfig(
        host=host,
        port=_port(t.get("port", d.port)),
        relay_networks=tuple(dict.fromkeys(networks)),
        allow_open_relay=t.get("allow_open_relay", False).boolean(),
        tls_cert=cert,
        tls_key=key,
        users_file=users,
        max_message_size=t.get("max_message_size", d.max_message_size).integer(
            MIN_MESSAGE_SIZE,
            expected=f"a size in bytes, {MIN_MESSAGE_SIZE} or more (RFC 5321 §4.5.3.1.10)",
        ),
        max_recipients=t.get("max_recipients", d.max_recipients).integer(
            MIN_RECIPIENTS,
            expected=f"an integer, {MIN_RECIPIENTS} or more (RFC 5321 §4.5.3.1.8)",
        ),
        max_connections=total,
        max_connections_per_client=per_client_node.integer(
            1, total, expected=f"an integer 1..max_connections ({total})"
        ),
        idle_timeout=idle,
        session_timeout=session,
        max_auth_failures=t.get("max_auth_failures", d.max_auth_failures).integer(1),
        max_auth_failures_per_client=t.get(
            "max_auth_failures_per_client", d.max_auth_failures_per_client
        ).integer(1),
        auth_failure_window=t.get("auth_failure_window", d.auth_failure_window).number(above=0),
        max_auth_checks=t.get("max_auth_checks", d.max_auth_checks).integer(1),
    )
    try:
        warnings.extend(check_listener(config))
    except ValueError as exc:
        raise ConfigError(
            str(exc),
            file=t.file,
            key=key_path(t.path, "relay_networks"),
            value=list(config.relay_networks),
        ) from None
    return config
