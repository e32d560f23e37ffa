"""The engine's TOML configuration: load, validate, resolve.

Theory of operation
-------------------
One file, read with :mod:`tomllib`, validated strictly: an unknown key is an
error naming the file and the dotted key path; a bad value names the file,
the key, the value and what is allowed. Nothing is printed; advice comes back
in :attr:`EngineConfig.warnings`.

Layout::

    [destination_controls.default]        # the Default entry
    tls = "preferred"                     # no | preferred | required | preferred-verify
                                          # | required-verify | required-verify-hosted
    [destination_controls."example.com"]  # a domain entry; missing keys inherit
    tls = "required-verify-hosted"        # from the Default entry (seg-behaviour.md §1)
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

Domain keys are compared as lower-case A-labels without the root dot, so
``profile_for("BÜCHER.example.")`` finds ``[destination_controls."xn--bcher-kva.example"]``.
Relative paths are taken from the configuration file's directory.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

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

__all__ = [
    "DEFAULT_PROFILE_STS_WARNING",
    "DnsConfig",
    "EngineConfig",
    "IdentityConfig",
    "ListenerConfig",
    "LoggingConfig",
    "PolicyFetchConfig",
    "QueueConfig",
    "TlsConfig",
    "TlsRptConfig",
    "load_config",
    "parse_config",
]

DEFAULT_PROFILE_STS_WARNING = (
    "mta_sts is on in the default destination profile, so every domain without its own "
    "entry gets MTA-STS; the seed advises enabling it per domain instead"
)
HostPort = tuple[str, int]
_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")


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
    """``[tls]``: trust anchors for MX and policy-host certificates (None: system store)."""

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


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """``[listener]``: where the injection listener binds."""

    host: str = "127.0.0.1"
    port: int = 2525


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
class EngineConfig:
    """The whole, validated configuration.

    Attributes:
        default_profile: the Default Destination Controls entry.
        profiles: domain (A-label) -> resolved profile (missing keys from the Default).
        routes: domain (A-label) -> SMTP route targets, in order.
        bounce_profiles: name -> profile (``default`` always present).
        dns, identity, tls, policy_fetch, logging, queue, listener: the other sections.
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


def load_config(path: str | Path) -> EngineConfig:
    """Read and validate a configuration file.

    Raises:
        ConfigError: unreadable file, TOML syntax, unknown key or bad value; the
            message names the file, the key path and the value.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration: {exc}", file=str(p)) from exc
    return parse_config(text, file=str(p), base_dir=p.parent)


def parse_config(
    text: str, *, file: str = "<string>", base_dir: Path | None = None
) -> EngineConfig:
    """Validate configuration text (see the module comment for the layout).

    Args:
        text: TOML.
        file: the name used in errors.
        base_dir: where relative paths start (default: the current directory).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=file) from exc
    r = _Reader(file, base_dir or Path("."))
    r.only(data, "", _SECTIONS)
    bounce = r.bounce_profiles(data.get("bounce_profiles", {}))
    default, profiles, warnings = r.destination_controls(data.get("destination_controls", {}))
    for where, prof in [("default", default), *profiles.items()]:
        if prof.bounce_profile not in bounce:
            raise r.bad(
                f"destination_controls.{_q(where)}.bounce_profile",
                prof.bounce_profile,
                f"one of the [bounce_profiles] {sorted(bounce)}",
            )
    sec = {name: r.table(data.get(name, {}), name) for name in _SECTIONS}
    return EngineConfig(
        default_profile=default,
        profiles=profiles,
        routes=r.routes(sec["routes"]),
        bounce_profiles=bounce,
        dns=DnsConfig(
            resolvers=tuple(
                r.host_port(v, f"dns.resolvers[{i}]", 53, ip_only=True)
                for i, v in enumerate(r.get(sec["dns"], "dns", "resolvers", list, []))
            ),
            timeout=r.positive(sec["dns"], "dns", "timeout", 5.0),
            retransmit=r.non_negative(sec["dns"], "dns", "retransmit", 1.0),
            trust_ad=r.get(sec["dns"], "dns", "trust_ad", bool, False)
            if "trust_ad" in sec["dns"]
            else None,
        ),
        identity=IdentityConfig(names=r.host_names(sec["identity"], "identity", "names")),
        tls=TlsConfig(ca_file=r.path(sec["tls"], "tls", "ca_file")),
        policy_fetch=r.policy_fetch(sec["policy_fetch"]),
        logging=LoggingConfig(
            level=r.choice(sec["logging"], "logging", "level", ("info", "debug"), "info")
        ),
        queue=QueueConfig(path=r.path(sec["queue"], "queue", "path") or Path("queue.sqlite")),
        listener=ListenerConfig(
            host=r.get(sec["listener"], "listener", "host", str, "127.0.0.1"),
            port=r.port(sec["listener"], "listener", "port", 2525),
        ),
        tlsrpt=r.tlsrpt(sec["tlsrpt"]),
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
)
_SECTION_KEYS = {
    "dns": ("resolvers", "timeout", "retransmit", "trust_ad"),
    "identity": ("names",),
    "tls": ("ca_file",),
    "policy_fetch": ("timeout", "max_body", "proxy"),
    "logging": ("level",),
    "queue": ("path",),
    "listener": ("host", "port"),
    "tlsrpt": (
        "organization_name",
        "contact_info",
        "delay",
        "jitter",
        "dkim_selector",
        "dkim_domain",
        "dkim_key_file",
    ),
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


def _q(segment: str) -> str:
    """A TOML key segment, quoted when it is not a bare key (``"example.com"``)."""
    bare = segment.replace("_", "").replace("-", "").isalnum() and segment.isascii()
    return segment if bare else f'"{segment}"'


def _domain_key(domain: str) -> str | None:
    try:
        return normalize_host(domain)
    except MxPatternError:
        return None


class _Reader:
    """Typed access to parsed TOML, raising ConfigError with file, key and value."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.file = file
        self.base_dir = base_dir

    def bad(self, key: str, value: object, allowed: str) -> ConfigError:
        return ConfigError(
            f"invalid value; expected {allowed}", file=self.file, key=key, value=value
        )

    def only(self, table: Mapping[str, Any], prefix: str, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                path = f"{prefix}.{_q(key)}" if prefix else _q(key)
                raise ConfigError(
                    f"unknown key; allowed keys are {', '.join(allowed)}", file=self.file, key=path
                )

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.bad(key, value, "a table")
        if key in _SECTION_KEYS:
            self.only(value, key, _SECTION_KEYS[key])
        return value

    def get(self, t: Mapping[str, Any], prefix: str, key: str, kind: type[_T], default: _T) -> _T:
        value = t.get(key, default)
        # bool is an int in Python; TOML keeps them apart, and so do we.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.bad(f"{prefix}.{key}", value, f"a {_TYPE_NAMES.get(kind, kind.__name__)}")
        return value

    def positive(self, t: Mapping[str, Any], prefix: str, key: str, default: float) -> float:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.bad(f"{prefix}.{key}", value, "a number greater than 0")
        return float(value)

    def non_negative(self, t: Mapping[str, Any], prefix: str, key: str, default: float) -> float:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.bad(f"{prefix}.{key}", value, "a number of seconds, 0 or more")
        return float(value)

    def count(self, t: Mapping[str, Any], prefix: str, key: str, default: int, low: int = 1) -> int:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.bad(f"{prefix}.{key}", value, f"an integer >= {low}")
        return value

    def port(self, t: Mapping[str, Any], prefix: str, key: str, default: int) -> int:
        value = self.count(t, prefix, key, default, low=0)
        if value > 65535:
            raise self.bad(f"{prefix}.{key}", value, "a port number 0..65535")
        return value

    def choice(
        self, t: Mapping[str, Any], prefix: str, key: str, allowed: tuple[str, ...], default: str
    ) -> str:
        value = t.get(key, default)
        if value not in allowed:
            raise self.bad(f"{prefix}.{key}", value, f"one of {', '.join(allowed)}")
        return str(value)

    def enum(self, t: Mapping[str, Any], prefix: str, key: str, kind: type[_E]) -> _E:
        value = t[key]
        text = (
            value.replace("_", "-") if isinstance(value, str) and kind is not IpSortPref else value
        )
        try:
            return kind(text)
        except ValueError:
            raise self.bad(
                f"{prefix}.{key}", value, f"one of {', '.join(m.value for m in kind)}"
            ) from None

    def path(self, t: Mapping[str, Any], prefix: str, key: str) -> Path | None:
        if key not in t:
            return None
        value = self.get(t, prefix, key, str, "")
        if not value:
            raise self.bad(f"{prefix}.{key}", value, "a non-empty path")
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def host_port(self, value: object, key: str, default_port: int, *, ip_only: bool) -> HostPort:
        """``host[:port]`` or ``[v6]:port``; a bare IPv6 address takes the default port."""
        if not isinstance(value, str) or not value:
            raise self.bad(key, value, '"host:port"')
        host, port_text = value, ""
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port_text = rest.removeprefix(":") if rest.startswith(":") else rest
            if rest and not rest.startswith(":"):
                raise self.bad(key, value, '"[v6-address]:port"')
        elif value.count(":") == 1:
            host, port_text = value.split(":")
        port = default_port
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
                raise self.bad(key, value, '"host:port" with a port 1..65535')
            port = int(port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if ip_only or not is_domain(host.rstrip(".").lower()):
                what = "an IP address" if ip_only else "a host name or IP address"
                raise self.bad(key, value, f'"host:port" with {what}') from None
        return host, port

    def host_names(self, t: Mapping[str, Any], prefix: str, key: str) -> tuple[str, ...]:
        """A list of host names, as lower-case A-labels without the root dot."""
        names: list[str] = []
        for i, value in enumerate(self.get(t, prefix, key, list, [])):
            name = _domain_key(value) if isinstance(value, str) else None
            if name is None or not is_domain(name):
                raise self.bad(f"{prefix}.{key}[{i}]", value, "a host name")
            names.append(name)
        return tuple(dict.fromkeys(names))

    def bounce_profiles(self, raw: object) -> dict[str, BounceProfile]:
        profiles = {"default": BounceProfile()}
        for name, t in self.table(raw, "bounce_profiles").items():
            prefix = f"bounce_profiles.{_q(name)}"
            t = self.table(t, prefix)
            self.only(t, prefix, _BOUNCE_KEYS)
            d = BounceProfile()
            prof = BounceProfile(
                name=name,
                max_retries=self.count(t, prefix, "max_retries", d.max_retries, low=0),
                max_queue_seconds=self.positive(
                    t, prefix, "max_queue_seconds", d.max_queue_seconds
                ),
                initial_retry=self.positive(t, prefix, "initial_retry", d.initial_retry),
                max_retry=self.positive(t, prefix, "max_retry", d.max_retry),
                growth=self.enum(t, prefix, "growth", Growth) if "growth" in t else d.growth,
                delay_warnings=self.get(t, prefix, "delay_warnings", bool, d.delay_warnings),
            )
            if prof.initial_retry > prof.max_retry:
                raise self.bad(f"{prefix}.initial_retry", t["initial_retry"], "<= max_retry")
            profiles[name] = prof
        return profiles

    def profile(
        self, t: dict[str, Any], prefix: str, base: DestinationProfile
    ) -> DestinationProfile:
        self.only(t, prefix, _PROFILE_KEYS)
        changes: dict[str, object] = {}
        for key in t:
            if key in _ENUMS:
                changes[key] = self.enum(t, prefix, key, _ENUMS[key])
            elif key in _BOOL_PROFILE_KEYS:
                changes[key] = self.get(t, prefix, key, bool, False)
            elif key == "bounce_profile":
                changes[key] = self.get(t, prefix, key, str, "default")
            else:  # max_concurrency, max_messages_per_connection
                changes[key] = self.count(t, prefix, key, 1)
        prof = replace(base, **changes)  # type: ignore[arg-type]
        if prof.mta_sts and prof.tls is TlsSetting.NO:
            # SEG §3 [SEED]: MTA-STS can be set only for TLS settings other than No.
            raise self.bad(f"{prefix}.mta_sts", True, 'false while tls = "no" (MTA-STS needs TLS)')
        return prof

    def destination_controls(
        self, raw: object
    ) -> tuple[DestinationProfile, dict[str, DestinationProfile], list[str]]:
        tables = self.table(raw, "destination_controls")
        default = DestinationProfile()
        if "default" in tables:
            prefix = "destination_controls.default"
            default = self.profile(self.table(tables["default"], prefix), prefix, default)
        warnings = [DEFAULT_PROFILE_STS_WARNING] if default.mta_sts else []
        profiles: dict[str, DestinationProfile] = {}
        for name, t in tables.items():
            if name == "default":
                continue
            prefix = f"destination_controls.{_q(name)}"
            key = self.domain(name, prefix, profiles)
            # SEG §1: a key missing from a domain entry is inherited from the Default entry.
            profiles[key] = self.profile(self.table(t, prefix), prefix, default)
        return default, profiles, warnings

    def domain(self, name: str, prefix: str, seen: Mapping[str, object]) -> str:
        key = _domain_key(name)
        if key is None or not is_domain(key):
            raise self.bad(prefix, name, "a domain name")
        if key in seen:
            raise self.bad(prefix, name, f"one entry per domain ({key!r} is already configured)")
        return key

    def routes(self, t: dict[str, Any]) -> dict[str, tuple[Route, ...]]:
        routes: dict[str, tuple[Route, ...]] = {}
        for name, targets in t.items():
            prefix = f"routes.{_q(name)}"
            key = self.domain(name, prefix, routes)
            if not isinstance(targets, list) or not targets:
                raise self.bad(prefix, targets, 'a non-empty list of "host:port"')
            pairs = [
                self.host_port(v, f"{prefix}[{i}]", 25, ip_only=False)
                for i, v in enumerate(targets)
            ]
            routes[key] = tuple(Route(host, port) for host, port in pairs)
        return routes

    def tlsrpt(self, t: dict[str, Any]) -> TlsRptConfig:
        """``[tlsrpt]``; the DKIM keys go together (RPT-10)."""
        dkim = {k: t.get(k) for k in ("dkim_selector", "dkim_domain", "dkim_key_file")}
        given = [k for k, v in dkim.items() if v is not None]
        if given and len(given) != 3:
            missing = sorted(set(dkim) - set(given))
            raise self.bad(f"tlsrpt.{missing[0]}", None, "set together with " + ", ".join(given))
        return TlsRptConfig(
            organization_name=self.get(t, "tlsrpt", "organization_name", str, "sts-engine"),
            contact_info=t.get("contact_info") and self.get(t, "tlsrpt", "contact_info", str, ""),
            delay=self.positive(t, "tlsrpt", "delay", 3600.0),
            jitter=self.non_negative(t, "tlsrpt", "jitter", 3600.0),
            dkim_selector=self.get(t, "tlsrpt", "dkim_selector", str, "") or None,
            dkim_domain=self.get(t, "tlsrpt", "dkim_domain", str, "") or None,
            dkim_key_file=self.path(t, "tlsrpt", "dkim_key_file"),
        )

    def policy_fetch(self, t: dict[str, Any]) -> PolicyFetchConfig:
        d = PolicyFetchConfig()
        proxy = t.get("proxy")
        return PolicyFetchConfig(
            timeout=self.positive(t, "policy_fetch", "timeout", d.timeout),
            max_body=self.count(t, "policy_fetch", "max_body", d.max_body),
            proxy=None
            if proxy is None
            else self.host_port(proxy, "policy_fetch.proxy", 3128, ip_only=False),
        )


_TYPE_NAMES: dict[type, str] = {bool: "boolean", str: "string", list: "list", int: "integer"}
