"""The shared UDP channel: concurrent queries on one socket, matched by ID and question."""

from __future__ import annotations

import asyncio
import io
import socket
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import pytest

from engine.core.events import ListSink, wants_debug
from engine.io.dns import DnsResolver, DnsStatus, ResolverAddress
from engine.io.dnsudp import UdpChannel
from engine.logs import MailLogWriter
from harness.world import FakeDns, Zone
from harness.world.dns.records import TXT, A
from tests.io.tls_peers import LOOPS, run

pytestmark = pytest.mark.parametrize("loop", LOOPS)


def _zone() -> Zone:
    z = Zone("example.com").mx(10, "mx1.example.com").a("mx1.example.com", "127.0.1.1")
    for i in range(20):
        z = z.txt(f"t{i}.example.com", f"v{i}")
    return z


def test_concurrent_queries_share_one_socket_and_get_their_own_answers(loop: str) -> None:
    async def main() -> None:
        async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
            host, port = dns_server.address
            resolver = DnsResolver([ResolverAddress(host, port, trusted=True)], timeout=2)
            answers = await asyncio.gather(
                *(resolver.query(f"t{i}.example.com", "TXT") for i in range(20))
            )
            assert [a.txt_strings() for a in answers] == [[[f"v{i}".encode()]] for i in range(20)]
            assert len(resolver._channels) == 1  # one socket for all of them
            await resolver.aclose()

    run(loop, main)


def test_untrusted_resolver_does_not_use_the_shared_socket(loop: str) -> None:
    async def main() -> None:
        async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
            host, port = dns_server.address
            resolver = DnsResolver([ResolverAddress(host, port, trusted=False)], timeout=2)
            answer = await resolver.query("mx1.example.com", "A")
            assert answer.status is DnsStatus.OK and not answer.secure
            assert resolver._channels == {}

    run(loop, main)


def test_dropped_query_times_out_on_the_channel(loop: str) -> None:
    async def main() -> None:
        async with FakeDns([_zone()], address="127.0.0.53") as dns_server:
            dns_server.set_behaviour("mx1.example.com", "drop")
            host, port = dns_server.address
            channel = UdpChannel(host, port)
            q = dns.message.make_query("mx1.example.com", "A")
            with pytest.raises(dns.exception.Timeout):
                await channel.query(q, 0.2)
            assert channel.pending == {}
            await channel.aclose()

    run(loop, main)


class _InfoOnlySink(ListSink):
    debug_enabled = False


def test_debug_events_are_built_only_for_sinks_that_keep_them(loop: str) -> None:
    async def main() -> None:
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

    run(loop, main)


def test_message_ids_differ_and_stay_in_range(loop: str) -> None:
    async def main() -> None:
        channel = UdpChannel("127.0.0.1", 53)
        ids = [channel._next_id() for _ in range(5000)]  # more than one pool of OS randomness
        assert all(0 <= i < 65536 for i in ids)
        assert len(set(ids)) > 4000  # 5,000 draws from 65,536 values: ~170 collisions expected

    run(loop, main)


def test_any_repeated_reply_is_read_once_and_a_changed_one_again(loop: str) -> None:
    async def main() -> None:
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

    run(loop, main)


def test_a_repeated_txt_reply_is_read_once_and_a_changed_one_again(loop: str) -> None:
    async def main() -> None:
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

    run(loop, main)


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
        self.client = addr
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


def test_a_lost_query_is_sent_again_with_the_same_id(loop: str) -> None:
    async def main() -> None:
        # RFC 1123 §6.1.3.3: one lost datagram must not cost the whole timeout.
        server, transport = await _lossy(drop=1, expect=2)
        channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
        q = dns.message.make_query("mx1.example.com", "A")
        reply = await channel.query(q, timeout=5.0, retransmit=0.05)
        assert reply.id == q.id
        assert len(server.seen) == 2 and server.seen[0] == server.seen[1]
        await channel.aclose()
        transport.close()

    run(loop, main)


def test_without_retransmission_a_lost_query_times_out(loop: str) -> None:
    async def main() -> None:
        server, transport = await _lossy(drop=1, expect=1)
        channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
        with pytest.raises(dns.exception.Timeout):
            await channel.query(dns.message.make_query("mx1.example.com", "A"), timeout=0.2)
        assert len(server.seen) == 1
        await channel.aclose()
        transport.close()

    run(loop, main)


def test_copies_back_off_and_stop_at_the_timeout(loop: str) -> None:
    async def main() -> None:
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

    run(loop, main)


def test_resolver_passes_its_retransmit_interval_to_the_channel(loop: str) -> None:
    async def main() -> None:
        server, transport = await _lossy(drop=1, expect=2)
        host, port = transport.get_extra_info("sockname")[:2]
        resolver = DnsResolver(
            [ResolverAddress(host, port, trusted=True)], timeout=5, retransmit=0.05
        )
        answer = await resolver.query("mx1.example.com", "A")
        assert answer.status is DnsStatus.NODATA and len(server.seen) == 2
        await resolver.aclose()
        transport.close()

    run(loop, main)


def test_two_hundred_concurrent_replies_are_all_read(loop: str) -> None:
    async def main() -> None:
        # Replies that arrive together are read in bursts of at most _DRAIN per wake-up.
        zone = Zone("example.com")
        for i in range(200):
            zone = zone.txt(f"t{i}.example.com", f"v{i}")
        async with FakeDns([zone], address="127.0.0.53") as dns_server:
            host, port = dns_server.address
            resolver = DnsResolver([ResolverAddress(host, port, trusted=True)], timeout=5)
            answers = await asyncio.gather(
                *(resolver.query(f"t{i}.example.com", "TXT") for i in range(200))
            )
            assert [a.txt_strings() for a in answers] == [[[f"v{i}".encode()]] for i in range(200)]
            await resolver.aclose()

    run(loop, main)


def test_a_reply_from_another_address_is_not_taken(loop: str) -> None:
    async def main() -> None:
        # The channel's socket is connected to the resolver: a datagram from anywhere else,
        # even one carrying the right message ID, never answers the query.
        server, transport = await _lossy(drop=100, expect=1)
        channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
        q = dns.message.make_query("mx1.example.com", "A")
        asking = asyncio.ensure_future(channel.query(q, timeout=0.5))
        await asyncio.wait_for(server.all_seen.wait(), 5)
        forged = dns.message.make_response(dns.message.from_wire(server.seen[0]))
        forged.set_rcode(dns.rcode.NXDOMAIN)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            forger.bind(("127.0.0.1", 0))
            forger.sendto(forged.to_wire(), server.client)
        with pytest.raises(dns.exception.Timeout):
            await asking
        await channel.aclose()
        transport.close()

    run(loop, main)


def test_a_query_the_kernel_cannot_take_yet_is_sent_when_it_can(loop: str) -> None:
    async def main() -> None:
        # A Unix datagram socket refuses sends while its peer's queue is full (EAGAIN);
        # the query waits in the channel's backlog and goes out once the peer has read.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        filler = 0
        while True:
            try:
                ours.send(b"\0\0filler")
            except BlockingIOError:
                break
            filler += 1
        channel = UdpChannel("unix", 0)
        channel.attach(ours, asyncio.get_running_loop())
        q = dns.message.make_query("mx1.example.com", "A")
        asking = asyncio.ensure_future(channel.query(q, timeout=5.0))
        await asyncio.sleep(0)  # one turn of the loop: the query tries to send, and cannot
        assert not asking.done() and len(channel._backlog) == 1
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        for _ in range(filler):
            assert (await loop.sock_recv(theirs, 512)).endswith(b"filler")
        query = await asyncio.wait_for(loop.sock_recv(theirs, 512), 5)  # the backlog was flushed
        reply = dns.message.make_response(dns.message.from_wire(query))
        await loop.sock_sendall(theirs, reply.to_wire())
        assert (await asking).id == int.from_bytes(query[:2], "big")
        await channel.aclose()
        theirs.close()

    run(loop, main)


def test_a_closed_channel_fails_its_waiting_queries(loop: str) -> None:
    async def main() -> None:
        server, transport = await _lossy(drop=100, expect=1)
        channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
        asking = asyncio.ensure_future(
            channel.query(dns.message.make_query("mx1.example.com", "A"), timeout=5.0)
        )
        await asyncio.wait_for(server.all_seen.wait(), 5)
        await channel.aclose()
        with pytest.raises(ConnectionError):
            await asking
        assert channel.pending == {}
        transport.close()

    run(loop, main)


def test_an_unreachable_resolver_fails_the_query_at_once(loop: str) -> None:
    async def main() -> None:
        # ICMP port unreachable comes back to the connected socket as ECONNREFUSED.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # free once closed: nothing listens there
        channel = UdpChannel("127.0.0.1", port)
        with pytest.raises(ConnectionRefusedError):
            await channel.query(dns.message.make_query("mx1.example.com", "A"), timeout=5.0)
        assert channel.pending == {}
        await channel.aclose()

    run(loop, main)


class _BatchingServer(asyncio.DatagramProtocol):
    """Holds the first ``batch`` queries, answers them all at once, then each as it comes."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.held: list[tuple[bytes, Any]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.held.append((data, addr))
        if len(self.held) >= self.batch:
            self.batch = 1
            held, self.held = self.held, []
            assert self.transport is not None
            for query, client in held:
                reply = dns.message.make_response(dns.message.from_wire(query))
                self.transport.sendto(reply.to_wire(), client)


def test_an_id_drawn_again_before_its_last_holder_resumed_still_gets_its_reply(
    loop: str,
) -> None:
    # Twenty replies arrive together and are read in one wake-up, which frees their IDs;
    # the first task to resume asks again and draws query 2's ID while query 2's task has
    # not resumed yet. Before: that task's clean-up removed the new query's entry, so its
    # reply was dropped and it timed out (or, with one timer per channel, waited forever).
    async def main() -> None:
        loop_ = asyncio.get_running_loop()
        transport, _ = await loop_.create_datagram_endpoint(
            lambda: _BatchingServer(20), local_addr=("127.0.0.1", 0)
        )
        channel = UdpChannel(*transport.get_extra_info("sockname")[:2])
        ids = iter([*range(1, 21), 2])
        channel._next_id = lambda: next(ids)  # type: ignore[method-assign]

        def ask() -> Any:
            return channel.query(dns.message.make_query("mx1.example.com", "A"), timeout=2.0)

        async def first_then_again() -> dns.message.Message:
            await ask()
            return await ask()  # resumes before query 2's task: draws ID 2 again

        tasks = [asyncio.ensure_future(first_then_again())]
        tasks += [asyncio.ensure_future(ask()) for _ in range(19)]
        try:
            replies = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        finally:
            for task in tasks:
                task.cancel()
            await channel.aclose()
            transport.close()
        assert replies[0].id == 2 and [r.id for r in replies[1:]] == list(range(2, 21))
        assert channel.pending == {}

    run(loop, main)
