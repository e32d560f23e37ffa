"""engine.config: [listener], trust anchors and finite numbers (issue 13.4, 13.7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ListenerConfig, load_config, parse_config
from engine.core.errors import ConfigError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="gw.toml")
    assert "gw.toml" in str(info.value) and "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[dns]\ntimeout = nan\n", "dns.timeout"),
        ("[dns]\ntimeout = inf\n", "dns.timeout"),
        ("[dns]\nretransmit = inf\n", "dns.retransmit"),
        ("[bounce_profiles.x]\nmax_queue_seconds = inf\n", "bounce_profiles.x.max_queue_seconds"),
        ("[policy_fetch]\ntimeout = -inf\n", "policy_fetch.timeout"),
        ("[listener]\nidle_timeout = nan\n", "listener.idle_timeout"),
    ],
)
def test_numbers_must_be_finite(text: str, key: str) -> None:
    err = _error(text)
    assert err.key == key and "finite" in err.reason


def test_a_configuration_file_must_name_its_trust_anchors(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[dns]\ntimeout = 1.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "tls.ca_file" and "system" in info.value.reason
    assert load_config(path, trust_anchors_required=False).tls.ca_file is None


def test_trust_anchors_are_a_pem_file_or_system_spelled_out(tmp_path: Path) -> None:
    (tmp_path / "roots.pem").write_text(PEM)
    (tmp_path / "empty.pem").write_text("nothing here\n")
    path = tmp_path / "gw.toml"
    path.write_text('[tls]\nca_file = "roots.pem"\n')
    assert load_config(path).tls.ca_file == tmp_path / "roots.pem"
    path.write_text('[tls]\nca_file = "system"\n')
    assert load_config(path).tls.ca_file is None  # the system's store, which exists here
    for value, words in [("empty.pem", "CERTIFICATE"), ("missing.pem", "readable")]:
        path.write_text(f'[tls]\nca_file = "{value}"\n')
        with pytest.raises(ConfigError, match=words):
            load_config(path)


def test_listener_defaults() -> None:
    cfg = parse_config("").listener
    assert cfg == ListenerConfig()
    assert cfg.relay_networks == ("127.0.0.0/8", "::1/128")
    assert (cfg.max_recipients, cfg.idle_timeout) == (1000, 300.0)
    assert cfg.users_file is None and cfg.tls_cert is None and not cfg.allow_open_relay


def test_listener_section_is_read(tmp_path: Path) -> None:
    cfg = parse_config(
        '[listener]\nhost = "::"\nport = 25\nrelay_networks = ["10.1.2.3/8", "2001:db8::/32"]\n'
        'tls_cert = "c.pem"\ntls_key = "k.pem"\nusers_file = "users"\nmax_message_size = 65536\n'
        "max_recipients = 100\nmax_connections = 10\nmax_connections_per_client = 2\n"
        "idle_timeout = 60\nsession_timeout = 600\n",
        base_dir=tmp_path,
    ).listener
    assert cfg.relay_networks == ("10.0.0.0/8", "2001:db8::/32")
    assert (cfg.tls_cert, cfg.users_file) == (tmp_path / "c.pem", tmp_path / "users")
    assert (cfg.max_connections, cfg.max_connections_per_client) == (10, 2)


def test_auth_limits_are_read() -> None:
    cfg = parse_config(
        "[listener]\nmax_auth_failures = 5\nmax_auth_failures_per_client = 20\n"
        "auth_failure_window = 3600\nmax_auth_checks = 4\n"
    ).listener
    assert (cfg.max_auth_failures, cfg.max_auth_failures_per_client) == (5, 20)
    assert (cfg.auth_failure_window, cfg.max_auth_checks) == (3600.0, 4)
    defaults = ListenerConfig()
    assert (defaults.max_auth_failures, defaults.max_auth_failures_per_client) == (3, 10)
    assert (defaults.auth_failure_window, defaults.max_auth_checks) == (600.0, 2)


def test_an_open_relay_is_refused_or_warned_about_loudly() -> None:
    err = _error('[listener]\nhost = "0.0.0.0"\nrelay_networks = ["0.0.0.0/0"]\n')
    assert err.key == "listener.relay_networks" and "every interface" in err.reason
    cfg = parse_config(
        '[listener]\nrelay_networks = ["::/0"]\nallow_open_relay = true\n', file="gw.toml"
    )
    assert cfg.warnings and cfg.warnings[0].startswith("OPEN RELAY:")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[listener]\nhost = ""\n', "listener.host"),
        ('[listener]\nhost = "not a host"\n', "listener.host"),
        ('[listener]\nrelay_networks = ["junk"]\n', "listener.relay_networks[0]"),
        ("[listener]\nmax_message_size = 0\n", "listener.max_message_size"),
        ("[listener]\nmax_message_size = -1\n", "listener.max_message_size"),
        ("[listener]\nmax_recipients = 99\n", "listener.max_recipients"),
        ("[listener]\nport = 99999\n", "listener.port"),
        ("[listener]\nidle_timeout = 10\nsession_timeout = 5\n", "listener.session_timeout"),
        ("[listener]\nmax_connections = 2\nmax_connections_per_client = 3\n",
         "listener.max_connections_per_client"),
        ('[listener]\ntls_key = "k.pem"\n', "listener.tls_cert"),
        ('[listener]\nusers_file = "users"\n', "listener.users_file"),
        ("[listener]\nmax_auth_failures = 0\n", "listener.max_auth_failures"),
        ("[listener]\nmax_auth_failures_per_client = 0\n",
         "listener.max_auth_failures_per_client"),
        ("[listener]\nauth_failure_window = 0\n", "listener.auth_failure_window"),
        ("[listener]\nauth_failure_window = inf\n", "listener.auth_failure_window"),
        ("[listener]\nmax_auth_checks = 0\n", "listener.max_auth_checks"),
        ('[listener]\nmax_auth_checks = "2"\n', "listener.max_auth_checks"),
    ],
)  # fmt: skip
def test_listener_mistakes_name_the_key(text: str, key: str) -> None:
    assert _error(text).key == key


def test_the_example_configuration_loads() -> None:
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "fixtures/config/engine.toml")
    assert cfg.listener.relay_networks == ("127.0.0.0/8", "::1/128")
    assert cfg.tls.ca_file is None  # "system"
