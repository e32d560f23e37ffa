"""FakeDns against real dnspython clients over real loopback sockets.

Timeouts are tiny configured values (``dns.asyncquery`` ``timeout=``, resolver
``lifetime``); nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable

import dns.asyncquery
import dns.asyncresolver
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dnslib
import pytest

from harness.world.dns.answer import DnsBehaviour, LoggedQuery, Transport
from harness.world.dns.records import MX, TLSA, TXT, A, ZoneError
from harness.world.dns.server import FakeDns
from harness.world.dns.zones import DnssecStatus, Zone

DIGEST = bytes(range(32))

W_STS = (
    Zone("example.com")
    .mx(10, "mx1.example.com")
    .mx(20, "mx2.example.com")
    .a("mx1.example.com", "127.0.1.1")
    .a("mx2.example.com", "127.0.1.2")
    .aaaa("mx1.example.com", "::1")
    .a("mta-sts.example.com", "127.0.1.3")
    .txt("_mta-sts.example.com", "v=STSv1; id=A1")
    .txt("multi.example.com", "v=STSv1; id=20", "24A")
    .txt("multi.example.com", "v=spf1 -all")
    .txt("raw.example.com", "café", b'\xff\x00"q\\')
    .cname("_mta-sts.alias.example.com", "_mta-sts.provider.example")
    .cname("_25._tcp.mx3.example.com", "tlsa._dane.example.com")
    .txt("_25._tcp.mx4.example.com", "deep name for an empty non-terminal")
)
PROVIDER = Zone("provider.example", DnssecStatus.INSECURE).txt(
    "_mta-sts.provider.example", "v=STSv1; id=P1"
)
W_DANE = (
    Zone("dane.example", DnssecStatus.SECURE)
    .mx(10, "mx1.dane.example")
    .a("mx1.dane.example", "127.0.2.1")
    .aaaa("mx1.dane.example")
    .tlsa("_25._tcp.mx1.dane.example", 3, 1, 1, DIGEST)
    .cname("alias.dane.example", "mx1.dane.example")
    .cname("out.dane.example", "host.unsigned.example")
    .cname("loop1.dane.example", "loop2.dane.example")
    .cname("loop2.dane.example", "loop1.dane.example")
    .cname("gone.dane.example", "nothing.nowhere.example")
)
UNSIGNED = Zone("unsigned.example").a("host.unsigned.example", "127.0.3.1")
BOGUS = Zone("bogus.example", DnssecStatus.BOGUS).a("mx.bogus.example", "127.0.4.1")
NO_EDE = Zone("noede.example", DnssecStatus.BOGUS, ede=False).a("mx.noede.example", "127.0.4.2")
ZONES = [W_STS, PROVIDER, W_DANE, UNSIGNED, BOGUS, NO_EDE]


@pytest.fixture
async def server() -> AsyncIterator[FakeDns]:
    async with FakeDns(ZONES) as fake:
        yield fake


async def ask(
    fake: FakeDns,
    name: str,
    rdtype: str,
    *,
    tcp: bool = False,
    do: bool = True,
    timeout: float = 2.0,
    flags: int = dns.flags.RD,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=do, flags=flags)
    host, port = fake.address
    if tcp:
        return await dns.asyncquery.tcp(query, host, timeout=timeout, port=port)
    return await dns.asyncquery.udp(query, host, timeout=timeout, port=port)


def resolver_for(fake: FakeDns, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
    host, port = fake.address
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
    res.use_edns(0, dns.flags.DO, 1232)
    res.lifetime = res.timeout = lifetime
    return res


def texts(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


def is_ad(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AD)


# -- records ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("mx1.example.com", "A", ["127.0.1.1"]),
        ("mx1.example.com", "AAAA", ["::1"]),
        ("example.com", "MX", ["10 mx1.example.com.", "20 mx2.example.com."]),
        ("_mta-sts.example.com", "TXT", ['"v=STSv1; id=A1"']),
        ("_25._tcp.mx1.dane.example", "TLSA", [f"3 1 1 {DIGEST.hex()}"]),
        ("alias.dane.example", "CNAME", ["mx1.dane.example."]),
    ],
)
async def test_record_types_answer_over_udp_and_tcp(
    server: FakeDns, name: str, rdtype: str, expected: list[str]
) -> None:
    for tcp in (False, True):
        reply = await ask(server, name, rdtype, tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert sorted(texts(reply)) == expected


async def test_txt_multi_string_and_multi_rr_are_kept_apart(server: FakeDns) -> None:
    reply = await ask(server, "multi.example.com", "TXT")
    strings = sorted(rd.strings for rd in reply.answer[0])
    assert strings == [(b"v=STSv1; id=20", b"24A"), (b"v=spf1 -all",)]


async def test_txt_raw_bytes_round_trip(server: FakeDns) -> None:
    reply = await ask(server, "raw.example.com", "TXT")
    assert reply.answer[0][0].strings == ("café".encode(), b'\xff\x00"q\\')
    assert server.queries()[-1].answers == (
        'raw.example.com. 300 IN TXT "caf\\195\\169" "\\255\\000\\"q\\\\"',
    )


async def test_null_mx_and_unusable_tlsa_are_served(server: FakeDns) -> None:
    server.set_rrset("nullmx.example.com", "MX", MX(0, "."))
    server.set_rrset("_25._tcp.mx2.example.com", "TLSA", TLSA(3, 1, 3, DIGEST[:31]))
    assert texts(await ask(server, "nullmx.example.com", "MX")) == ["0 ."]
    tlsa = (await ask(server, "_25._tcp.mx2.example.com", "TLSA")).answer[0][0]
    assert (tlsa.mtype, tlsa.cert) == (3, DIGEST[:31])


def test_tlsa_digest_of_wrong_length_is_served() -> None:
    # DANE-7: `3 1 1 <31-byte digest>`. dnspython refuses to parse such a message
    # (FormError), so look at the wire with dnslib instead.
    fake = FakeDns([W_DANE])
    fake.set_rrset("_25._tcp.mx1.dane.example", "TLSA", TLSA(3, 1, 1, DIGEST[:31]))
    query = dns.message.make_query("_25._tcp.mx1.dane.example", "TLSA", want_dnssec=True)
    wire, delay_ms = fake.respond(query.to_wire(), Transport.UDP)
    assert wire is not None and delay_ms == 0
    rdata = dnslib.DNSRecord.parse(wire).rr[0].rdata
    assert (rdata.matching_type, rdata.cert_data) == (1, DIGEST[:31])


async def test_names_are_case_insensitive_and_answers_keep_query_case(server: FakeDns) -> None:
    reply = await ask(server, "MX1.Example.COM", "A")
    assert texts(reply) == ["127.0.1.1"]
    assert reply.answer[0].name.to_text() == "MX1.Example.COM."
    assert server.queries()[-1].qname == "mx1.example.com"


# -- CNAME chains and DNSSEC status -----------------------------------------------


async def test_cname_chain_is_followed_across_zones(server: FakeDns) -> None:
    answer = await resolver_for(server).resolve("_mta-sts.alias.example.com", "TXT")
    assert [rd.strings for rd in answer] == [(b"v=STSv1; id=P1",)]
    assert answer.canonical_name.to_text() == "_mta-sts.provider.example."
    chain = [rrset.rdtype for rrset in answer.response.answer]
    assert chain == [dns.rdatatype.CNAME, dns.rdatatype.TXT]


async def test_ad_set_for_secure_zone_and_cleared_for_insecure(server: FakeDns) -> None:
    assert is_ad(await ask(server, "mx1.dane.example", "A"))
    assert not is_ad(await ask(server, "mx1.example.com", "A"))
    # dnslib's reply() would copy a query's AD; an insecure answer must clear it.
    asked_ad = await ask(server, "mx1.example.com", "A", flags=dns.flags.RD | dns.flags.AD)
    assert not is_ad(asked_ad)


async def test_ad_needs_do_or_ad_in_the_query_by_default(server: FakeDns) -> None:
    assert not is_ad(await ask(server, "mx1.dane.example", "A", do=False))
    with_ad = await ask(server, "mx1.dane.example", "A", do=False, flags=dns.flags.AD)
    assert is_ad(with_ad)


async def test_ad_without_do_when_configured() -> None:
    async with FakeDns(ZONES, ad_requires_do=False) as fake:
        assert is_ad(await ask(fake, "mx1.dane.example", "A", do=False))


async def test_cname_chain_is_secure_only_when_every_link_is(server: FakeDns) -> None:
    secure = await ask(server, "alias.dane.example", "A")
    assert is_ad(secure) and texts(secure) == ["mx1.dane.example.", "127.0.2.1"]
    mixed = await ask(server, "out.dane.example", "A")
    assert not is_ad(mixed) and texts(mixed) == ["host.unsigned.example.", "127.0.3.1"]


async def test_cname_to_missing_name_is_nxdomain_with_the_chain(server: FakeDns) -> None:
    reply = await ask(server, "gone.dane.example", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert texts(reply) == ["nothing.nowhere.example."]


async def test_cname_loop_is_servfail(server: FakeDns) -> None:
    assert (await ask(server, "loop1.dane.example", "A")).rcode() == dns.rcode.SERVFAIL


async def test_bogus_zone_is_servfail_with_ede_6(server: FakeDns) -> None:
    reply = await ask(server, "mx.bogus.example", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
    assert [e.code for e in reply.extended_errors()] == [dns.edns.EDECode.DNSSEC_BOGUS]
    missing = await ask(server, "nothing.bogus.example", "A")
    assert missing.rcode() == dns.rcode.SERVFAIL
    no_ede = await ask(server, "mx.noede.example", "A")
    assert no_ede.rcode() == dns.rcode.SERVFAIL and no_ede.extended_errors() == []


async def test_bogus_data_is_served_when_checking_is_disabled(server: FakeDns) -> None:
    reply = await ask(server, "mx.bogus.example", "A", flags=dns.flags.RD | dns.flags.CD)
    assert reply.rcode() == dns.rcode.NOERROR and texts(reply) == ["127.0.4.1"]
    assert not is_ad(reply)


async def test_bogus_link_in_a_chain_fails_the_whole_answer(server: FakeDns) -> None:
    server.set_rrset("tobogus.dane.example", "CNAME")
    server.set_zone(server.zones["dane.example"].cname("tobogus.dane.example", "mx.bogus.example"))
    assert (await ask(server, "tobogus.dane.example", "A")).rcode() == dns.rcode.SERVFAIL


async def test_one_rrset_can_differ_from_its_zone(server: FakeDns) -> None:
    server.set_status("mx1.dane.example", "A", "bogus")
    server.set_status("_25._tcp.mx1.dane.example", "TLSA", DnssecStatus.INSECURE)
    assert (await ask(server, "mx1.dane.example", "A")).rcode() == dns.rcode.SERVFAIL
    assert is_ad(await ask(server, "mx1.dane.example", "AAAA"))
    tlsa = await ask(server, "_25._tcp.mx1.dane.example", "TLSA")
    assert tlsa.answer and not is_ad(tlsa)


# -- NXDOMAIN and NODATA -------------------------------------------------------------


async def test_nxdomain_and_nodata_are_distinct(server: FakeDns) -> None:
    nodata = await ask(server, "mx1.example.com", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    nx = await ask(server, "nothing.example.com", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].name.to_text() == "example.com."
    ent = await ask(server, "_tcp.mx4.example.com", "TLSA")  # RFC 8020: exists, no data
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    outside = await ask(server, "www.elsewhere.test", "A")
    assert outside.rcode() == dns.rcode.NXDOMAIN and not outside.authority


async def test_secure_denial_sets_ad(server: FakeDns) -> None:
    assert is_ad(await ask(server, "_25._tcp.nomx.dane.example", "TLSA"))
    assert is_ad(await ask(server, "mx1.dane.example", "TXT"))


async def test_resolver_sees_nxdomain_and_noanswer(server: FakeDns) -> None:
    res = resolver_for(server)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await res.resolve("nothing.example.com", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        await res.resolve("mx1.example.com", "TXT")


# -- behaviours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "rcode", "answered"),
    [
        (DnsBehaviour.NXDOMAIN, dns.rcode.NXDOMAIN, False),
        (DnsBehaviour.NODATA, dns.rcode.NOERROR, False),
        (DnsBehaviour.SERVFAIL, dns.rcode.SERVFAIL, False),
        (DnsBehaviour.REFUSED, dns.rcode.REFUSED, False),
        (DnsBehaviour.ANSWER, dns.rcode.NOERROR, True),
    ],
)
async def test_rcode_behaviours(
    server: FakeDns, behaviour: DnsBehaviour, rcode: int, answered: bool
) -> None:
    server.set_behaviour("_mta-sts.example.com", behaviour, "TXT")
    for tcp in (False, True):
        reply = await ask(server, "_mta-sts.example.com", "TXT", tcp=tcp)
        assert reply.rcode() == rcode and bool(reply.answer) is answered
    assert [q.behaviour for q in server.queries()] == [behaviour, behaviour]


@pytest.mark.parametrize("tcp", [False, True])
async def test_drop_makes_the_client_time_out(server: FakeDns, tcp: bool) -> None:
    server.set_behaviour("mx1.example.com", "drop", "A")
    with pytest.raises(dns.exception.Timeout):
        await ask(server, "mx1.example.com", "A", tcp=tcp, timeout=0.2)
    assert server.queries()[-1].rcode is None
    assert (await ask(server, "mx1.example.com", "AAAA", tcp=tcp)).answer  # other types fine


async def test_truncate_sends_the_resolver_to_tcp(server: FakeDns) -> None:
    server.set_behaviour("_25._tcp.mx1.dane.example", "truncate", "TLSA")
    udp = await ask(server, "_25._tcp.mx1.dane.example", "TLSA")
    assert udp.flags & dns.flags.TC and not udp.answer
    server.clear_log()
    answer = await resolver_for(server).resolve("_25._tcp.mx1.dane.example", "TLSA")
    assert answer[0].cert == DIGEST
    log = server.queries()
    assert [(q.transport, q.tc, q.behaviour) for q in log] == [
        (Transport.UDP, True, DnsBehaviour.TRUNCATE),
        (Transport.TCP, False, None),
    ]
    assert is_ad(answer.response)


async def test_oversized_udp_answer_is_truncated(server: FakeDns) -> None:
    big = [TXT((bytes([65 + i]) * 250,)) for i in range(8)]
    server.set_rrset("big.example.com", "TXT", *big)
    assert (await ask(server, "big.example.com", "TXT")).flags & dns.flags.TC
    answer = await resolver_for(server).resolve("big.example.com", "TXT")
    assert len(answer) == 8
    assert [q.transport for q in server.queries("big.example.com")] == ["udp", "udp", "tcp"]


@pytest.mark.parametrize("tcp", [False, True])
async def test_garbage_is_not_a_dns_message(server: FakeDns, tcp: bool) -> None:
    server.set_behaviour("mx1.example.com", "garbage")
    with pytest.raises(dns.exception.DNSException):
        await ask(server, "mx1.example.com", "A", tcp=tcp, timeout=1.0)
    assert server.queries()[-1].behaviour is DnsBehaviour.GARBAGE


async def test_delay_holds_the_reply_back(server: FakeDns) -> None:
    server.set_behaviour("mx1.example.com", "answer", "A", delay_ms=400)
    with pytest.raises(dns.exception.Timeout):
        await ask(server, "mx1.example.com", "A", timeout=0.1)
    server.set_behaviour("mx1.example.com", "answer", "A", delay_ms=5)
    assert texts(await ask(server, "mx1.example.com", "A")) == ["127.0.1.1"]


async def test_name_rule_covers_every_type_and_type_rule_wins(server: FakeDns) -> None:
    server.set_behaviour("mx1.example.com", "servfail")
    server.set_behaviour("mx1.example.com", "nxdomain", "AAAA")
    assert (await ask(server, "mx1.example.com", "A")).rcode() == dns.rcode.SERVFAIL
    assert (await ask(server, "mx1.example.com", "TLSA")).rcode() == dns.rcode.SERVFAIL
    assert (await ask(server, "mx1.example.com", "AAAA")).rcode() == dns.rcode.NXDOMAIN
    server.clear_behaviour("mx1.example.com")
    assert (await ask(server, "mx1.example.com", "A")).answer
    server.clear_behaviours()
    assert (await ask(server, "mx1.example.com", "AAAA")).answer


async def test_rules_apply_to_cname_targets(server: FakeDns) -> None:
    server.set_behaviour("_mta-sts.provider.example", "servfail", "TXT")
    reply = await ask(server, "_mta-sts.alias.example.com", "TXT")
    assert reply.rcode() == dns.rcode.SERVFAIL
    server.set_behaviour("_mta-sts.provider.example", "nodata", "TXT")
    reply = await ask(server, "_mta-sts.alias.example.com", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR and texts(reply) == ["_mta-sts.provider.example."]


def test_bad_behaviour_arguments_are_refused() -> None:
    fake = FakeDns()
    with pytest.raises(ValueError, match="nonsense"):
        fake.set_behaviour("a.example", "nonsense")
    with pytest.raises(ValueError, match="delay_ms"):
        fake.set_behaviour("a.example", "answer", delay_ms=-1)


# -- runtime mutation ---------------------------------------------------------------------


async def test_records_and_zones_change_between_steps(server: FakeDns) -> None:
    server.set_rrset("_mta-sts.example.com", "TXT", TXT((b"v=STSv1; id=B2",)))
    assert texts(await ask(server, "_mta-sts.example.com", "TXT")) == ['"v=STSv1; id=B2"']
    server.set_rrset("_mta-sts.example.com", "TXT")
    assert (await ask(server, "_mta-sts.example.com", "TXT")).rcode() == dns.rcode.NXDOMAIN
    server.set_zone(Zone("example.com", DnssecStatus.SECURE).a("mx1.example.com", "127.0.9.9"))
    reply = await ask(server, "mx1.example.com", "A")
    assert texts(reply) == ["127.0.9.9"] and is_ad(reply)
    server.remove_zone("example.com")
    assert (await ask(server, "mx1.example.com", "A")).rcode() == dns.rcode.NXDOMAIN


def test_set_rrset_checks_its_arguments() -> None:
    fake = FakeDns([W_STS])
    with pytest.raises(ZoneError, match="no zone holds"):
        fake.set_rrset("a.elsewhere.test", "A", A("127.0.0.1"))
    with pytest.raises(ZoneError, match="given TXT data"):
        fake.set_rrset("mx1.example.com", "A", TXT((b"x",)))


# -- query log -------------------------------------------------------------------------------


async def test_query_log_records_every_query(server: FakeDns) -> None:
    await ask(server, "Example.com", "MX", do=False)
    await ask(server, "mx1.dane.example", "A", tcp=True)
    first, second = server.queries()
    assert first == LoggedQuery(
        seq=0,
        qname="example.com",
        qtype="MX",
        transport=Transport.UDP,
        do=False,
        rcode="NOERROR",
        ad=False,
        tc=False,
        answers=(
            "Example.com. 300 IN MX 10 mx1.example.com.",
            "Example.com. 300 IN MX 20 mx2.example.com.",
        ),
        behaviour=None,
    )
    assert (second.seq, second.transport, second.do, second.ad) == (1, "tcp", True, True)
    assert server.count(qtype="mx") == 1 and server.count(transport="tcp") == 1
    assert server.count("EXAMPLE.COM.", "MX") == 1 and server.count("example.com", "A") == 0


async def test_assert_queried_lists_what_was_seen(server: FakeDns) -> None:
    await ask(server, "mx1.example.com", "A")
    server.assert_queried("mx1.example.com", "A")
    with pytest.raises(AssertionError, match=r"mx1\.example\.com A"):
        server.assert_queried("_mta-sts.example.com", "TXT")
    server.clear_log()
    assert server.count() == 0


async def test_malformed_query_gets_formerr(server: FakeDns) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, server.address)
        await loop.sock_sendall(sock, b"\x12\x34" + b"\x01\x00\x00\x05" + b"\x00" * 6 + b"\xff")
        reply = await asyncio.wait_for(loop.sock_recv(sock, 512), 2.0)
    finally:
        sock.close()
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
    assert server.queries()[-1].rcode == "FORMERR"


async def test_status_overrides_replace_each_other(server: FakeDns) -> None:
    server.set_status("mx1.dane.example", "A", DnssecStatus.BOGUS)
    server.set_status("mx1.dane.example", "a", DnssecStatus.INSECURE)
    assert len(server.zones["dane.example"].overrides) == 1
    reply = await ask(server, "mx1.dane.example", "A")
    assert reply.answer and not is_ad(reply)


async def test_whole_name_status_covers_every_type(server: FakeDns) -> None:
    server.set_status("mx1.dane.example", None, "bogus")
    server.set_status("mx1.dane.example", "AAAA", "secure")
    assert (await ask(server, "mx1.dane.example", "A")).rcode() == dns.rcode.SERVFAIL
    assert (await ask(server, "mx1.dane.example", "TXT")).rcode() == dns.rcode.SERVFAIL
    assert is_ad(await ask(server, "mx1.dane.example", "AAAA"))


# -- loopback only -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["192.0.2.1", "0.0.0.0", "::", "2001:db8::1", "localhost"])
def test_binding_beyond_loopback_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match=r"loopback|not an IP"):
        FakeDns(address=address)


@pytest.mark.parametrize(
    "build",
    [
        lambda z: z.a("h.example.com", "192.0.2.1"),
        lambda z: z.a("h.example.com", "10.0.0.1"),
        lambda z: z.aaaa("h.example.com", "2001:db8::1"),
        lambda z: z.aaaa("h.example.com", "::ffff:127.0.0.1"),
        lambda z: z.a("h.example.com", "::1"),
    ],
)
def test_address_data_beyond_loopback_is_refused(build: Callable[[Zone], Zone]) -> None:
    with pytest.raises(ValueError):
        build(Zone("example.com"))


async def test_serves_on_another_loopback_address() -> None:
    async with FakeDns([W_STS], address="127.0.0.77") as fake:
        assert fake.address[0] == "127.0.0.77"
        assert texts(await ask(fake, "mx2.example.com", "A")) == ["127.0.1.2"]


async def test_serves_on_ipv6_loopback() -> None:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    async with FakeDns([W_STS], address="::1") as fake:
        assert texts(await ask(fake, "mx2.example.com", "A", tcp=True)) == ["127.0.1.2"]


# -- lifecycle ---------------------------------------------------------------------------


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_teardown_leaves_no_tasks_sockets_or_threads() -> None:
    tasks, fds, threads = asyncio.all_tasks(), open_fds(), threading.active_count()
    async with FakeDns(ZONES) as fake:
        fake.set_behaviour("mx1.example.com", "answer", delay_ms=60_000)
        host, port = fake.address
        # A TCP connection in flight, with a half-sent query and a pending delayed reply.
        reader, writer = await asyncio.open_connection(host, port)
        query = dns.message.make_query("mx1.example.com", "A").to_wire()
        writer.write(len(query).to_bytes(2, "big") + query + b"\x00\x20\x12")
        await writer.drain()
        reply = await ask(fake, "mx2.example.com", "A", tcp=True)  # the server is serving
        assert reply.answer and fake.count("mx1.example.com") == 1
        assert fake._tcp and len(fake._timers) == 1
    assert await reader.read() == b""  # the server closed our connection
    writer.close()
    await writer.wait_closed()
    assert asyncio.all_tasks() == tasks
    assert open_fds() == fds
    assert threading.active_count() == threads
    with pytest.raises(RuntimeError, match="only inside"):
        _ = FakeDns().address


@pytest.mark.parametrize("yields", range(5))
async def test_teardown_racing_an_accept_leaks_nothing(yields: int) -> None:
    # A client connects just before teardown: the accept may be at any stage.
    fds = open_fds()
    async with FakeDns() as fake:
        client = socket.create_connection(fake.address)
        for _ in range(yields):
            await asyncio.sleep(0)  # a bare yield to the loop, not a wait
    try:
        assert open_fds() - {str(client.fileno())} == fds
    finally:
        client.close()


async def test_two_servers_share_an_address() -> None:
    async with FakeDns([W_STS]) as one, FakeDns([PROVIDER]) as two:
        assert one.address[0] == two.address[0] and one.address[1] != two.address[1]
        assert (await ask(two, "_mta-sts.provider.example", "TXT")).answer


async def test_entering_twice_is_refused() -> None:
    async with FakeDns() as fake:
        with pytest.raises(RuntimeError, match="already running"):
            await fake.__aenter__()


async def test_tcp_connection_carries_several_queries(server: FakeDns) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        wires = [dns.message.make_query(n, "A") for n in ("mx1.example.com", "mx2.example.com")]
        writer.write(b"".join(len(w := q.to_wire()).to_bytes(2, "big") + w for q in wires))
        for q in wires:
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = dns.message.from_wire(await reader.readexactly(size))
            assert q.is_response(reply) and reply.answer
    finally:
        writer.close()
        await writer.wait_closed()


# -- zones ----------------------------------------------------------------------------------------


def test_zone_builder_checks_names_and_cname_exclusivity() -> None:
    zone = Zone("example.com")
    with pytest.raises(ZoneError, match="outside zone"):
        zone.a("mx1.example.net", "127.0.0.1")
    with pytest.raises(ZoneError, match="CNAME together"):
        zone.a("x.example.com", "127.0.0.1").cname("x.example.com", "y.example.com")
    with pytest.raises(ZoneError, match="CNAME together"):
        zone.cname("x.example.com", "y.example.com").txt("x.example.com", "t")
    with pytest.raises(ZoneError, match="exceeds 255"):
        zone.txt("x.example.com", "a" * 256)
    with pytest.raises(ZoneError, match="A-label"):
        zone.txt("bücher.example.com", "t")
    assert zone.mx(10, "MX1.Example.com.").records[0].rdata == MX(10, "mx1.example.com")


def test_public_api_is_pinned() -> None:
    import harness.world.dns.answer as answer_module
    import harness.world.dns.records as records_module
    import harness.world.dns.server as dns_module
    import harness.world.dns.zones as zones_module

    assert dns_module.__all__ == ["FakeDns"]
    assert sorted(answer_module.__all__) == [
        "Answer",
        "DnsBehaviour",
        "LoggedQuery",
        "Rule",
        "Transport",
        "answer",
    ]
    assert sorted(zones_module.__all__) == ["DnssecStatus", "Lookup", "Zone"]
    assert set(records_module.__all__) == {
        *("A", "AAAA", "CNAME", "MX", "TLSA", "TXT", "RDATA_TYPES", "RData", "Record"),
        *("ZoneError", "canonical_name", "check_loopback"),
    }
