"""``sts-engine policy purge`` on a gateway of a cluster clears the shared entry too."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.core.cache import CachedPolicy, MemoryPolicyStore
from engine.core.policy import parse_policy
from engine.io.redis_policy import RedisPolicyShare
from engine.io.store import SqlitePolicyStore
from harness.redis_server import RedisServer
from tests.cluster.conftest import WatchSink, make_link

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"


async def purge(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "policy", "purge", "example.com",
        "--config", str(config), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_purge_forgets_the_policy_here_and_in_redis(redis_server: RedisServer, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[queue]\npath = "queue.sqlite"\n[tls]\nca_file = "system"\n'
        f'[cluster]\nredis = "{redis_server.url}"\nprefix = "t"\n'
    )
    entry = CachedPolicy("example.com", parse_policy(POLICY), "A1", 1_767_225_600.0)
    local = SqlitePolicyStore(tmp_path / "policy-cache.sqlite")
    local.put(entry)
    local.close()
    share = RedisPolicyShare(make_link(redis_server.url, WatchSink()), lease=1.0, wait=1.0)
    await share.publish("example.com", entry, None)
    assert await purge(config) == (
        0,
        "example.com: purged\nexample.com: purged from the cluster's shared cache too\n",
    )
    assert await share.pull("example.com", MemoryPolicyStore()) is False  # gone from Redis
    await redis_server.stop()
    code, out = await purge(config)
    assert code == 1 and "the cluster's Redis did not answer; purge again" in out
    await share.link.aclose()
