"""engine.config: the TOML configuration (destination controls, routes, bounce profiles, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DEFAULT_PROFILE_STS_WARNING, EngineConfig, load_config, parse_config
from engine.core.controls import (
    Coexistence,
    DaneOption,
    DestinationProfile,
    IpSortPref,
    PostStarttlsFailure,
    Route,
    TlsSetting,
)
from engine.core.errors import ConfigError
from engine.core.events import ListSink
from engine.core.retry import BounceProfile, Growth
from engine.delivery.agent import Engine

FULL = """
[destination_controls.default]
tls = "preferred"
dane = "opportunistic"
max_concurrency = 100
ip_sort_pref = "PREFER_V6"

[destination_controls."Example.COM"]
tls = "required-verify-hosted"
mta_sts = true
bounce_profile = "fast"
coexistence = "literal"

[destination_controls."bücher.example"]
tls = "required_verify"
preferred_post220_failure = "clear"
opportunistic_dane_fail_falls_back = true
sts_testing_falls_back = false

[routes]
"routed.example" = ["relay.example.net:2525", "[2001:db8::1]:26", "192.0.2.7"]

[bounce_profiles.fast]
max_retries = 3
max_queue_seconds = 600
initial_retry = 10
max_retry = 60
growth = "constant"
delay_warnings = true

[dns]
resolvers = ["127.0.0.53:5353", "::1"]

[tls]
ca_file = "roots.pem"

[policy_fetch]
timeout = 2.5
max_body = 1024
proxy = "127.0.0.9:3128"

[logging]
level = "debug"

[queue]
path = "/var/spool/engine/queue.sqlite"

[listener]
host = "127.0.0.1"
port = 10025
"""

# Only its shape is read at load time (a CERTIFICATE block); the engine parses it later.
ROOTS_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def full(tmp_path: Path) -> EngineConfig:
    path = tmp_path / "engine.toml"
    path.write_text(FULL, encoding="utf-8")
    (tmp_path / "roots.pem").write_text(ROOTS_PEM)
    return load_config(path)


def test_full_config_values(full: EngineConfig, tmp_path: Path) -> None:
    d = full.default_profile
    assert (d.tls, d.dane, d.max_concurrency, d.ip_sort_pref) == (
        TlsSetting.PREFERRED,
        DaneOption.OPPORTUNISTIC,
        100,
        IpSortPref.PREFER_V6,
    )
    assert full.routes["routed.example"] == (
        Route("relay.example.net", 2525),
        Route("2001:db8::1", 26),
        Route("192.0.2.7", 25),
    )
    assert full.bounce_profiles["fast"] == BounceProfile(
        name="fast",
        max_retries=3,
        max_queue_seconds=600,
        initial_retry=10,
        max_retry=60,
        growth=Growth.CONSTANT,
        delay_warnings=True,
    )
    assert full.bounce_profiles["default"] == BounceProfile()
    assert full.dns.resolvers == (("127.0.0.53", 5353), ("::1", 53))
    assert full.tls.ca_file == tmp_path / "roots.pem"  # relative to the config file
    assert (full.policy_fetch.timeout, full.policy_fetch.max_body) == (2.5, 1024)
    assert full.policy_fetch.proxy == ("127.0.0.9", 3128)
    assert full.logging.level == "debug"
    assert full.queue.path == Path("/var/spool/engine/queue.sqlite")
    assert (full.listener.host, full.listener.port) == ("127.0.0.1", 10025)
    assert full.warnings == () and full.source.endswith("engine.toml")


def test_domain_entry_inherits_missing_keys_from_default(full: EngineConfig) -> None:
    p = full.profile_for("example.com")
    assert p.tls is TlsSetting.REQUIRED_VERIFY_HOSTED and p.mta_sts
    assert p.coexistence is Coexistence.LITERAL
    # Not set in the domain entry: from the Default entry (docs/gateway-behaviour.md §1).
    assert (p.dane, p.max_concurrency, p.ip_sort_pref) == (
        DaneOption.OPPORTUNISTIC,
        100,
        IpSortPref.PREFER_V6,
    )
    assert full.bounce_profile_for("example.com").name == "fast"


def test_knobs_and_underscore_spelling(full: EngineConfig) -> None:
    p = full.profile_for("xn--bcher-kva.example")
    assert p.tls is TlsSetting.REQUIRED_VERIFY
    assert p.preferred_post220_failure is PostStarttlsFailure.CLEAR
    assert p.opportunistic_dane_fail_falls_back and not p.sts_testing_falls_back


@pytest.mark.parametrize("name", ["example.com", "EXAMPLE.com.", "Example.Com"])
def test_profile_for_is_case_insensitive_and_ignores_root_dot(
    full: EngineConfig, name: str
) -> None:
    assert full.profile_for(name).tls is TlsSetting.REQUIRED_VERIFY_HOSTED


def test_profile_for_idn_uses_a_labels(full: EngineConfig) -> None:
    assert full.profile_for("BÜCHER.example").tls is TlsSetting.REQUIRED_VERIFY


def test_profile_for_unknown_domain_is_the_default(full: EngineConfig) -> None:
    assert full.profile_for("elsewhere.example") == full.default_profile
    assert full.profile_for("") == full.default_profile
    assert full.routes_for("elsewhere.example") == ()
    assert full.bounce_profile_for("elsewhere.example") == BounceProfile()


def test_empty_config_is_all_defaults() -> None:
    cfg = parse_config("")
    assert cfg.default_profile == DestinationProfile()
    assert cfg.profiles == {} and cfg.routes == {} and cfg.warnings == ()
    assert cfg.policy_fetch.max_body == 65_536 and cfg.policy_fetch.proxy is None


def test_trust_ad_defaults_to_loopback_only_and_can_be_forced() -> None:
    # DANE-1: None means "loopback resolvers only" (decided where resolvers are built).
    assert parse_config("").dns.trust_ad is None
    assert parse_config("[dns]\ntrust_ad = false\n").dns.trust_ad is False
    assert parse_config("[dns]\ntrust_ad = true\n").dns.trust_ad is True


@pytest.mark.parametrize(
    ("text", "trusted"),
    [
        ('resolvers = ["127.0.0.53", "192.0.2.53"]', [True, False]),
        ('resolvers = ["127.0.0.53", "192.0.2.53"]\ntrust_ad = false', [False, False]),
        ('resolvers = ["127.0.0.53", "192.0.2.53"]\ntrust_ad = true', [True, True]),
        ("trust_ad = false", [False]),  # the default resolver, 127.0.0.1
        ("", [True]),
    ],
)
async def test_trust_ad_decides_which_resolvers_are_trusted(text: str, trusted: list[bool]) -> None:

    engine = Engine(parse_config(f"[dns]\n{text}\n"), sink=ListSink(), roots=[])
    try:
        assert [r.trusted for r in engine.resolver.resolvers] == trusted
    finally:
        await engine.aclose()


async def test_dns_retransmit_defaults_to_one_second_and_reaches_the_resolver() -> None:
    assert parse_config("").dns.retransmit == 1.0
    config = parse_config("[dns]\ntimeout = 3\nretransmit = 0\n")
    assert (config.dns.timeout, config.dns.retransmit) == (3.0, 0.0)
    engine = Engine(parse_config("[dns]\nretransmit = 0.25\n"), sink=ListSink(), roots=[])
    try:
        assert engine.resolver.retransmit == 0.25
    finally:
        await engine.aclose()


def test_identity_names_are_normalised_host_names() -> None:
    assert parse_config("").identity.names == ()
    cfg = parse_config(
        '[identity]\nnames = ["MX20.Example.com.", "bücher.example", "mx20.example.com"]\n'
    )
    assert cfg.identity.names == ("mx20.example.com", "xn--bcher-kva.example")


def test_dane_audit_only_is_a_profile_knob() -> None:
    cfg = parse_config(
        '[destination_controls.default]\ntls = "preferred"\ndane = "mandatory"\n'
        'dane_audit_only = true\n[destination_controls."a.example"]\ndane = "opportunistic"\n'
    )
    assert cfg.default_profile.dane_audit_only and cfg.profile_for("a.example").dane_audit_only
    assert not DestinationProfile().dane_audit_only


# --- warnings ---------------------------------------------------------------------------


def test_warning_when_mta_sts_is_on_in_the_default_profile() -> None:
    cfg = parse_config('[destination_controls.default]\ntls = "preferred"\nmta_sts = true\n')
    assert cfg.warnings == (DEFAULT_PROFILE_STS_WARNING,)
    assert cfg.profile_for("any.example").mta_sts  # the Default covers every other domain


def test_no_warning_when_mta_sts_is_per_domain() -> None:
    cfg = parse_config('[destination_controls."a.example"]\ntls = "preferred"\nmta_sts = true\n')
    assert cfg.warnings == ()


# --- errors: every one names file, key and (for values) the value ---------------------------


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="engine.toml")
    err = info.value
    assert err.file == "engine.toml" and "engine.toml" in str(err)
    return err


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[destination_control]\n", "destination_control"),
        (
            '[destination_controls."example.com"]\ntsl = "no"\n',
            'destination_controls."example.com".tsl',
        ),
        (
            "[destination_controls.default]\nmax_host_concurrency = 5\n",
            "destination_controls.default.max_host_concurrency",
        ),
        ("[bounce_profiles.x]\nretries = 1\n", "bounce_profiles.x.retries"),
        ("[dns]\nresolver = []\n", "dns.resolver"),
        ("[policy_fetch]\nproxies = 1\n", "policy_fetch.proxies"),
        ("[listener]\naddress = 1\n", "listener.address"),
    ],
)
def test_unknown_keys_name_file_and_key_path(text: str, key: str) -> None:
    err = _error(text)
    assert err.key == key and "unknown key" in err.reason and key in str(err)


@pytest.mark.parametrize(
    ("text", "key", "value", "allowed"),
    [
        (
            '[destination_controls.default]\ntls = "maybe"\n',
            "destination_controls.default.tls",
            "maybe",
            "required-verify-hosted",
        ),
        (
            '[destination_controls."a.example"]\ndane = "always"\n',
            'destination_controls."a.example".dane',
            "always",
            "opportunistic",
        ),
        (
            '[destination_controls.default]\ncoexistence = "both"\n',
            "destination_controls.default.coexistence",
            "both",
            "dane-precedence",
        ),
        (
            '[destination_controls.default]\nip_sort_pref = "v4"\n',
            "destination_controls.default.ip_sort_pref",
            "v4",
            "PREFER_V4",
        ),
        (
            "[destination_controls.default]\nmax_concurrency = 0\n",
            "destination_controls.default.max_concurrency",
            0,
            "integer >= 1",
        ),
        (
            "[destination_controls.default]\nmax_messages_per_connection = true\n",
            "destination_controls.default.max_messages_per_connection",
            True,
            "integer",
        ),
        (
            '[destination_controls.default]\nmta_sts = "yes"\n',
            "destination_controls.default.mta_sts",
            "yes",
            "boolean",
        ),
        (
            '[destination_controls.default]\nbounce_profile = "nope"\n',
            "destination_controls.default.bounce_profile",
            "nope",
            "bounce_profiles",
        ),
        (
            '[routes]\n"r.example" = ["relay.example.net:99999"]\n',
            'routes."r.example"[0]',
            "relay.example.net:99999",
            "port",
        ),
        ('[routes]\n"r.example" = []\n', 'routes."r.example"', [], "non-empty list"),
        (
            '[routes]\n"bad..example" = ["x.example"]\n',
            'routes."bad..example"',
            "bad..example",
            "domain",
        ),
        (
            '[dns]\nresolvers = ["dns.example:53"]\n',
            "dns.resolvers[0]",
            "dns.example:53",
            "IP address",
        ),
        (
            '[policy_fetch]\nproxy = "proxy example:1"\n',
            "policy_fetch.proxy",
            "proxy example:1",
            "host name",
        ),
        ("[policy_fetch]\ntimeout = -1\n", "policy_fetch.timeout", -1, "greater than 0"),
        ('[logging]\nlevel = "trace"\n', "logging.level", "trace", "info, debug"),
        ("[listener]\nport = 70000\n", "listener.port", 70000, "0..65535"),
        (
            "[bounce_profiles.x]\ninitial_retry = 100\nmax_retry = 10\n",
            "bounce_profiles.x.initial_retry",
            100,
            "max_retry",
        ),
        (
            '[bounce_profiles.x]\ngrowth = "tripling"\n',
            "bounce_profiles.x.growth",
            "tripling",
            "doubling",
        ),
        ('[tls]\nca_file = ""\n', "tls.ca_file", "", 'a PEM file, or "system"'),
        ('[dns]\ntrust_ad = "no"\n', "dns.trust_ad", "no", "boolean"),
        ("[dns]\nretransmit = -1\n", "dns.retransmit", -1, "0 or more"),
        ('[identity]\nnames = "me.example"\n', "identity.names", "me.example", "list"),
        ('[identity]\nnames = ["a..b"]\n', "identity.names[0]", "a..b", "host name"),
        (
            "[destination_controls.default]\ndane_audit_only = 1\n",
            "destination_controls.default.dane_audit_only",
            1,
            "boolean",
        ),
    ],
)
def test_bad_values_name_file_key_value_and_allowed(
    text: str, key: str, value: object, allowed: str
) -> None:
    err = _error(text)
    assert err.key == key
    assert err.value == value and type(err.value) is type(value)
    assert allowed in err.reason and repr(value) in str(err)


def test_mta_sts_with_tls_no_is_an_error() -> None:
    err = _error('[destination_controls.default]\ntls = "no"\nmta_sts = true\n')
    assert err.key == "destination_controls.default.mta_sts" and "MTA-STS" in err.reason


def test_mta_sts_on_domain_inheriting_tls_no_is_an_error() -> None:
    err = _error('[destination_controls."a.example"]\nmta_sts = true\n')  # Default tls = "no"
    assert err.key == 'destination_controls."a.example".mta_sts'


def test_duplicate_domain_entries_after_normalisation() -> None:
    err = _error(
        '[destination_controls."a.example"]\ntls = "no"\n'
        '[destination_controls."A.EXAMPLE."]\ntls = "no"\n'
    )
    assert err.key == 'destination_controls."A.EXAMPLE."' and "already configured" in err.reason


def test_toml_syntax_error_names_the_file() -> None:
    err = _error("[dns\n")
    assert "TOML syntax error" in err.reason


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.file == str(tmp_path / "absent.toml")


def test_tlsrpt_section_is_read_with_defaults_and_values(tmp_path) -> None:
    from engine.config import TlsRptConfig, parse_config

    assert parse_config("").tlsrpt == TlsRptConfig()
    key = tmp_path / "dkim.pem"
    key.write_text("not checked here")
    config = parse_config(
        '[tlsrpt]\norganization_name = "Example Org"\ncontact_info = "tlsrpt@example.org"\n'
        'delay = 600\njitter = 0\ndkim_selector = "tlsrpt"\ndkim_domain = "example.org"\n'
        'dkim_key_file = "dkim.pem"\n',
        file="gw.toml",
        base_dir=tmp_path,
    )
    t = config.tlsrpt
    assert (t.organization_name, t.contact_info, t.delay, t.jitter) == (
        "Example Org",
        "tlsrpt@example.org",
        600.0,
        0.0,
    )
    assert (t.dkim_selector, t.dkim_domain, t.dkim_key_file) == ("tlsrpt", "example.org", key)


def test_tlsrpt_dkim_settings_go_together(tmp_path) -> None:
    from engine.config import parse_config
    from engine.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gw.toml: tlsrpt.dkim_domain"):
        parse_config('[tlsrpt]\ndkim_selector = "s"\ndkim_key_file = "k.pem"\n', file="gw.toml")
    with pytest.raises(ConfigError, match=r"tlsrpt.delay"):
        parse_config("[tlsrpt]\ndelay = -1\n", file="gw.toml")
    with pytest.raises(ConfigError, match=r"tlsrpt.organisation"):
        parse_config('[tlsrpt]\norganisation = "x"\n', file="gw.toml")


def test_a_max_retry_below_the_default_initial_retry_names_initial_retry() -> None:
    # initial_retry left at its default (60 s) above max_retry used to raise KeyError.
    err = _error("[bounce_profiles.x]\nmax_retry = 10\n")
    assert (err.key, err.value) == ("bounce_profiles.x.initial_retry", 60.0)
    assert "max_retry" in err.reason


def test_errors_carry_the_allowed_values_as_data() -> None:
    err = _error('[logging]\nlevel = "trace"\n')
    assert err.allowed == ("info", "debug")
    err = _error("[dns]\nresolver = []\n")
    assert err.allowed == ("resolvers", "timeout", "retransmit", "trust_ad")
