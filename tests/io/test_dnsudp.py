"""The shared UDP channel: concurrent queries on one socket, matched by ID and question."""

from __future__ import annotations

import asyncio
import io

import dns.exception
import dns.message
import pytest

from engine.core.events import ListSink, wants_debug
from engine.io.dns import DnsResolver, DnsStatus, ResolverAddress
from engine.io.dnsudp import UdpChannel
from engine.logs import MailLogWriter
from harness.world import FakeDns, Zone
from harness.world.dns_records import TXT, A


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


class _InfoOnlySink(ListSink):
    debug_enabled = False


async def test_debug_events_are_built_only_for_sinks_that_keep_them() -> None:
    async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
        host, port = dns_server.address
        full, info_only = ListSink(), _InfoOnlySink()
        for sink in (full, info_only):
            resolver = DnsResolver([ResolverAddress(host, port)], timeout=2, sink=sink)
            answer = await resolver.query("t1.example.com", "TXT")
            assert answer.txt_strings() == [[b"v1"]]
            await resolver.aclose()
        assert full.codes() == ["dns.query", "dns.query.server", "dns.answer"]
        assert info_only.codes() == []
        assert wants_debug(full) and not wants_debug(info_only) and not wants_debug(None)
        assert MailLogWriter(io.StringIO(), level="debug").debug_enabled
        assert not MailLogWriter(io.StringIO(), level="info").debug_enabled


async def test_message_ids_differ_and_stay_in_range() -> None:
    channel = UdpChannel("127.0.0.1", 53)
    ids = [channel._next_id() for _ in range(5000)]  # more than one pool of OS randomness
    assert all(0 <= i < 65536 for i in ids)
    assert len(set(ids)) > 4000  # 5,000 draws from 65,536 values: ~170 collisions expected


async def test_any_repeated_reply_is_read_once_and_a_changed_one_again() -> None:
    async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
        host, port = dns_server.address
        resolver = DnsResolver([ResolverAddress(host, port)], timeout=2)
        first = await resolver.query("mx1.example.com", "A")  # read by dnspython
        assert await resolver.query("mx1.example.com", "A") is first
        assert first.addresses() == ["127.0.1.1"]
        dns_server.set_rrset("mx1.example.com", "A", A("127.0.1.2"))
        assert (await resolver.query("mx1.example.com", "A")).addresses() == ["127.0.1.2"]
        missing = await resolver.query("nothing.example.com", "A")
        assert missing.status is DnsStatus.NXDOMAIN
        await resolver.aclose()


async def test_a_repeated_txt_reply_is_read_once_and_a_changed_one_again() -> None:
    async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
        host, port = dns_server.address
        resolver = DnsResolver([ResolverAddress(host, port)], timeout=2)
        first = await resolver.query("t1.example.com", "TXT")
        again = await resolver.query("t1.example.com", "TXT")
        assert again is first  # same bytes after the ID: the answer already read
        dns_server.set_rrset("t1.example.com", "TXT", TXT((b"changed",)))
        changed = await resolver.query("t1.example.com", "TXT")
        assert changed.txt_strings() == [[b"changed"]]
        assert dns_server.count("t1.example.com", "TXT") == 3  # every lookup was asked
        await resolver.aclose()
