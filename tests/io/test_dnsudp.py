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
from harness.world.dns.records import TXT, A


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


class _LossyServer(asyncio.DatagramProtocol):
    """A resolver on loopback that ignores the first ``drop`` queries it gets, then answers."""

    def __init__(self, drop: int, expect: int) -> None:
        self.drop, self.expect = drop, expect
        self.seen: list[bytes] = []
        self.all_seen = asyncio.Event()  # set when ``expect`` datagrams have arrived
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        if len(self.seen) >= self.expect:
            self.all_seen.set()
        if len(self.seen) > self.drop:
            reply = dns.message.make_response(dns.message.from_wire(data))
            assert self.transport is not None
            self.transport.sendto(reply.to_wire(), addr)


async def _lossy(drop: int, expect: int) -> tuple[_LossyServer, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: _LossyServer(drop, expect), local_addr=("127.0.0.1", 0)
    )
    return server, transport


async def test_a_lost_query_is_sent_again_with_the_same_id() -> None:
    # RFC 1123 §6.1.3.3: one lost datagram must not cost the whole timeout.
    server, transport = await _lossy(drop=1, expect=2)
    channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
    q = dns.message.make_query("mx1.example.com", "A")
    reply = await channel.query(q, timeout=5.0, retransmit=0.05)
    assert reply.id == q.id
    assert len(server.seen) == 2 and server.seen[0] == server.seen[1]
    await channel.aclose()
    transport.close()


async def test_without_retransmission_a_lost_query_times_out() -> None:
    server, transport = await _lossy(drop=1, expect=1)
    channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
    with pytest.raises(dns.exception.Timeout):
        await channel.query(dns.message.make_query("mx1.example.com", "A"), timeout=0.2)
    assert len(server.seen) == 1
    await channel.aclose()
    transport.close()


async def test_copies_back_off_and_stop_at_the_timeout() -> None:
    # Sent at 0, then 0.1, 0.3 and 0.7 s (the wait doubles); the next would be at 1.5 s,
    # past the 1 s timeout. Timers fire in order, so a slow loop cannot reorder them.
    server, transport = await _lossy(drop=100, expect=4)
    channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
    with pytest.raises(dns.exception.Timeout):
        await channel.query(dns.message.make_query("mx1.example.com", "A"), 1.0, 0.1)
    await asyncio.wait_for(server.all_seen.wait(), 5)  # the last copy may still be in flight
    assert len(server.seen) == 4 and len(set(server.seen)) == 1
    await channel.aclose()
    transport.close()


async def test_resolver_passes_its_retransmit_interval_to_the_channel() -> None:
    server, transport = await _lossy(drop=1, expect=2)
    host, port = transport.get_extra_info("sockname")[:2]
    resolver = DnsResolver([ResolverAddress(host, port, trusted=True)], timeout=5, retransmit=0.05)
    answer = await resolver.query("mx1.example.com", "A")
    assert answer.status is DnsStatus.NODATA and len(server.seen) == 2
    await resolver.aclose()
    transport.close()
