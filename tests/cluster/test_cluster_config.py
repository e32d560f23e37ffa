"""``[cluster]`` in the configuration, and a gateway without it (docs/cluster.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import engine.config
import harness.redis_server
from engine.config import ClusterConfig, parse_config
from engine.core.errors import ConfigError
from harness.redis_server import REDIS_MISSING, RedisServer


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="gw.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_without_the_table_there_is_no_cluster():
    assert parse_config("").cluster == ClusterConfig()
    assert ClusterConfig().redis is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1",
        "redis://redis.example.net:6380/2",
        "rediss://user:secret@redis.example.net:6380",
        "unix:///run/redis/redis.sock",
    ],
)
def test_redis_urls_are_taken(url: str):
    config = parse_config(f'[cluster]\nredis = "{url}"\ntimeout = 0.5\nretry_after = 2\n')
    assert config.cluster == ClusterConfig(redis=url, timeout=0.5, retry_after=2.0)


@pytest.mark.parametrize(
    "url",
    [
        "http://redis.example.net",
        "redis://",
        "redis://h:99999",
        "redis://h/x",
        "unix://run/r.sock",
        "",
    ],
)
def test_a_bad_redis_url_is_one_line_naming_file_key_and_value(url: str):
    message = _error(f'[cluster]\nredis = "{url}"\n')
    assert message.startswith("gw.toml: cluster.redis: invalid value; expected ")
    assert "redis://HOST[:PORT][/DB]" in message and repr(url) in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("timeout = 0", "cluster.timeout"),
        ("retry_after = -1", "cluster.retry_after"),
        ('prefix = ""', "cluster.prefix"),
        ("redis = 6379", "cluster.redis"),
        ("nodes = 3", "cluster.nodes"),
    ],
)
def test_other_mistakes_in_the_table_are_one_line(text: str, key: str):
    assert f"gw.toml: {key}: " in _error(f"[cluster]\n{text}\n")


def test_a_missing_redis_package_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(engine.config.importlib.util, "find_spec", lambda name: None)
    message = _error('[cluster]\nredis = "redis://127.0.0.1"\n')
    assert "pip install 'mta-sts-harness[cluster]'" in message


def test_a_gateway_without_the_table_imports_no_redis(tmp_path):
    """One gateway on SQLite needs nothing else: not even the redis package."""
    code = (
        "import sys\n"
        "from engine.config import parse_config\n"
        "from engine.core.events import ListSink\n"
        "from engine.gateway.gateway import Gateway, GatewaySettings\n"
        f"config = parse_config('[queue]\\npath = \"{tmp_path}/q.sqlite\"\\n')\n"
        "gw = Gateway(config, sink=ListSink(), settings=GatewaySettings(listen=False))\n"
        "assert gw.cluster is None and gw.engine.services.share is None\n"
        "assert gw.reporter is not None and gw.reporter.shared is None\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_the_server_fixture_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(harness.redis_server, "redis_server_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="apt-get install redis-server"):
        RedisServer()
    assert REDIS_MISSING == "redis-server is not installed (apt-get install redis-server)"
