"""The shared UDP channel: concurrent queries on one socket, matched by ID and question."""

from __future__ import annotations

import asyncio

import dns.exception
import dns.message
import pytest

from engine.io.dns import DnsResolver, DnsStatus, ResolverAddress
from engine.io.dnsudp import UdpChannel
from harness.world import FakeDns, Zone


def _zone() -> Zone:
    z = Zone("example.com").mx(10, "mx1.example.com").a("mx1.example.com", "127.0.1.1")
    for i in range(20):
        z = z.txt(f"t{i}.example.com", f"v{i}")
    return z


async def test_concurrent_queries_share_one_socket_and_get_their_own_answers() -> None:
    async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
        host, port = dns_server.address
        resolver = DnsResolver([ResolverAddress(host, port, trusted=True)], timeout=2)
        answers = await asyncio.gather(
            *(resolver.query(f"t{i}.example.com", "TXT") for i in range(20))
        )
        assert [a.txt_strings() for a in answers] == [[[f"v{i}".encode()]] for i in range(20)]
        assert len(resolver._channels) == 1  # one socket for all of them
        await resolver.aclose()


async def test_untrusted_resolver_does_not_use_the_shared_socket() -> None:
    async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
        host, port = dns_server.address
        resolver = DnsResolver([ResolverAddress(host, port, trusted=False)], timeout=2)
        answer = await resolver.query("mx1.example.com", "A")
        assert answer.status is DnsStatus.OK and not answer.secure
        assert resolver._channels == {}


async def test_dropped_query_times_out_on_the_channel() -> None:
    async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
        dns_server.set_behaviour("mx1.example.com", "drop")
        host, port = dns_server.address
        channel = UdpChannel(host, port)
        q = dns.message.make_query("mx1.example.com", "A")
        with pytest.raises(dns.exception.Timeout):
            await channel.query(q, 0.2)
        assert channel.pending == {}
        await channel.aclose()
