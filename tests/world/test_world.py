"""World against real clients: dnspython, httpx and SMTP over asyncio streams, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import threading
import tomllib
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from harness.errors import SpecError, WorldError
from harness.pytest_plugin import WorldFactory
from harness.world import ExchangeKind, HostRole, LoopbackAllocator, ProxyOutcome, World

WORLDS = Path(__file__).resolve().parents[2] / "fixtures" / "worlds"
P_ENF = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 86400\n"


def load(name: str) -> dict[str, Any]:
    return tomllib.loads((WORLDS / name).read_text())


async def query(w: World, name: str, rrtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rrtype, want_dnssec=True)
    host, port = w.resolver
    return await dns.asyncquery.udp(q, host, port=port, timeout=2.0)


def texts(reply: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


async def fetch_policy(w: World, domain: str, context: ssl.SSLContext) -> httpx.Response:
    name = f"mta-sts.{domain}"
    real = w.endpoint_map[(w.address_of(name), 443)]
    async with httpx.AsyncClient(verify=context, timeout=5.0) as client:
        return await client.get(
            f"https://{real[0]}:{real[1]}/.well-known/mta-sts.txt",
            headers={"Host": name},
            extensions={"sni_hostname": name},
        )


async def _reply(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await reader.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


async def starttls(w: World, host: str, context: ssl.SSLContext) -> tuple[bytes, str]:
    """EHLO, STARTTLS with SNI ``host``, QUIT; returns (peer leaf DER, TLS version)."""
    real = w.endpoint_map[(w.address_of(host), 25)]
    reader, writer = await asyncio.open_connection(*real)
    try:
        assert (await _reply(reader)).startswith(b"220")
        writer.write(b"EHLO client.example\r\n")
        assert b"STARTTLS" in await _reply(reader)
        writer.write(b"STARTTLS\r\n")
        assert (await _reply(reader)).startswith(b"220")
        await writer.start_tls(context, server_hostname=host)
        tls = writer.get_extra_info("ssl_object")
        der, version = tls.getpeercert(binary_form=True), tls.version()
        writer.write(b"QUIT\r\n")
        await _reply(reader)
        return der, version
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def dns_names(der: bytes) -> list[str]:
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return san.value.get_values_for_type(x509.DNSName)


def trusting(w: World) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=w.ca_pem.decode())


# --- W-STS -------------------------------------------------------------------------------


async def test_w_sts_dns_answers_mx_a_txt_without_ad(world: WorldFactory) -> None:
    async with world(load("w-sts.toml")) as w:
        mx = await query(w, "example.com", "MX")
        assert sorted(texts(mx)) == ["10 mx1.example.com.", "20 mx2.example.com."]
        assert not mx.flags & dns.flags.AD
        assert texts(await query(w, "_mta-sts.example.com", "TXT")) == ['"v=STSv1; id=A1"']
        for host in ("mx1.example.com", "mx2.example.com", "mta-sts.example.com"):
            assert texts(await query(w, host, "A")) == [w.address_of(host)]
        assert (await query(w, "nothing.example.com", "A")).rcode() == dns.rcode.NXDOMAIN


async def test_w_sts_addresses_are_distinct_loopback_and_mapped(world: WorldFactory) -> None:
    async with world(load("w-sts.toml")) as w:
        addresses = [h.address for h in w.hosts.values()]
        assert len(set(addresses)) == len(addresses)
        assert all(a.startswith("127.") for a in addresses)
        assert w.resolver[0].endswith(".53")
        assert {k[1] for k in w.endpoint_map} == {25, 443}
        for (address, _), (real_address, real_port) in w.endpoint_map.items():
            assert real_address == address and real_port > 0


async def test_w_sts_policy_arrives_only_for_a_client_trusting_the_ca(world: WorldFactory) -> None:
    async with world(load("w-sts.toml")) as w:
        assert w.ca_file.read_bytes() == w.ca_pem
        response = await fetch_policy(w, "example.com", trusting(w))
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain"
        assert response.text.strip() == P_ENF.strip()
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch_policy(w, "example.com", ssl.create_default_context())
        assert w.policy_host.count("mta-sts.example.com") == 1
        ca_dir = w.ca_file.parent
    assert not ca_dir.exists()


async def test_w_sts_each_mx_presents_its_own_certificate_over_starttls(
    world: WorldFactory,
) -> None:
    async with world(load("w-sts.toml")) as w:
        for host in ("mx1.example.com", "mx2.example.com"):
            der, version = await starttls(w, host, trusting(w))
            assert dns_names(der) == [host]
            assert version in ("TLSv1.2", "TLSv1.3")
        await w.settle()
        sessions = w.sessions()
        assert [s.mx_host for s in sessions] == ["mx1.example.com", "mx2.example.com"]
        assert all(s.sni == s.mx_host and s.tls_completed for s in sessions)


async def test_w_sts_timeline_orders_dns_policy_and_smtp(world: WorldFactory) -> None:
    async with world(load("w-sts.toml")) as w:
        await query(w, "_mta-sts.example.com", "TXT")
        await fetch_policy(w, "example.com", trusting(w))
        await starttls(w, "mx1.example.com", trusting(w))
        await w.settle()
        kinds = [e.kind for e in w.timeline()]
        assert kinds == [ExchangeKind.DNS, ExchangeKind.POLICY, ExchangeKind.SMTP]
        times = [e.at for e in w.timeline()]
        assert times == sorted(times)
        snap = w.snapshot()
        assert len(snap.dns_queries) == 1 and len(snap.policy_requests) == 1
        assert len(snap.sessions) == 1 and snap.timeline == tuple(w.timeline())


# --- W-DANE ------------------------------------------------------------------------------


async def test_w_dane_tlsa_is_secure_and_matches_the_served_certificate(
    world: WorldFactory,
) -> None:
    async with world(load("w-dane.toml")) as w:
        assert (await query(w, "example.com", "MX")).flags & dns.flags.AD
        assert (await query(w, "mx1.example.com", "A")).flags & dns.flags.AD
        reply = await query(w, "_25._tcp.mx1.example.com", "TLSA")
        assert reply.flags & dns.flags.AD
        assert (await query(w, "_mta-sts.example.com", "TXT")).rcode() == dns.rcode.NXDOMAIN
        (tlsa,) = [rd for rrset in reply.answer for rd in rrset]
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        der, _ = await starttls(w, "mx1.example.com", unverified)
        spki = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
        assert (tlsa.usage, tlsa.selector, tlsa.mtype) == (3, 1, 1)
        assert tlsa.cert == hashlib.sha256(spki).digest()
        with pytest.raises(ssl.SSLCertVerificationError):
            await starttls(w, "mx1.example.com", trusting(w))  # self-signed: not PKIX


# --- mutations ---------------------------------------------------------------------------


async def test_mutations_change_txt_policy_and_dns_behaviour_between_steps(
    world: WorldFactory,
) -> None:
    async with world(load("w-sts.toml")) as w:
        await w.update_domain("example.com", mta_sts_txt=["v=STSv1; id=B2"])
        assert texts(await query(w, "_mta-sts.example.com", "TXT")) == ['"v=STSv1; id=B2"']
        await w.update_policy("example.com", body="version: STSv1\nmode: testing\n", status=404)
        response = await fetch_policy(w, "example.com", trusting(w))
        assert response.status_code == 404 and "testing" in response.text
        await w.set_dns("_mta-sts.example.com", "TXT", "servfail")
        assert (await query(w, "_mta-sts.example.com", "TXT")).rcode() == dns.rcode.SERVFAIL
        await w.set_dns("_mta-sts.example.com", "TXT", None)
        await w.set_dns("example.com", "MX", "bogus")
        assert (await query(w, "example.com", "MX")).rcode() == dns.rcode.SERVFAIL
        assert (await query(w, "_mta-sts.example.com", "TXT")).rcode() == dns.rcode.NOERROR
        await w.update_domain("example.com", dnssec="secure", mx=[[5, "mx3.example.com"]])
        await w.set_dns("example.com", "MX", None)
        reply = await query(w, "example.com", "MX")
        assert texts(reply) == ["5 mx3.example.com."] and reply.flags & dns.flags.AD
        der, _ = await starttls(w, "mx3.example.com", trusting(w))
        assert dns_names(der) == ["mx3.example.com"]


async def test_rotate_cert_changes_the_served_cert_but_not_tlsa_unless_asked(
    world: WorldFactory,
) -> None:
    async with world(load("w-dane.toml")) as w:
        before = texts(await query(w, "_25._tcp.mx1.example.com", "TLSA"))
        await w.rotate_cert("mx1.example.com", "valid")
        der, _ = await starttls(w, "mx1.example.com", trusting(w))
        assert dns_names(der) == ["mx1.example.com"]
        assert texts(await query(w, "_25._tcp.mx1.example.com", "TLSA")) == before
        await w.rotate_cert("mx1.example.com", "expired", update_tlsa=True)
        assert texts(await query(w, "_25._tcp.mx1.example.com", "TLSA")) != before
        with pytest.raises(WorldError, match="no MX or policy host"):
            await w.rotate_cert("mx9.example.com", "valid")


async def test_rotate_policy_host_cert_breaks_verification(world: WorldFactory) -> None:
    async with world(load("w-sts.toml")) as w:
        await w.rotate_cert("mta-sts.example.com", "wrong-name")
        with pytest.raises(httpx.ConnectError):
            await fetch_policy(w, "example.com", trusting(w))


async def test_w_rpt_report_sink_and_proxy_tunnel_to_the_policy_host(world: WorldFactory) -> None:
    spec = load("w-sts.toml")
    spec["domains"]["example.com"]["tlsrpt_txt"] = ["v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example"]
    spec["domains"]["rpt.example"] = {"mx": [[10, "mx.rpt.example"]]}
    spec["report_sink"] = {"name": "reports.rpt.example", "statuses": {"/tlsrpt": [503, 201]}}
    spec["proxy"] = {"fault": "none"}
    async with world(spec) as w:
        reply = await query(w, "_smtp._tls.example.com", "TXT")
        assert texts(reply) == ['"v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example"']
        assert texts(await query(w, "rpt.example", "MX")) == ["10 mx.rpt.example."]
        sink = w.report_sink
        assert sink is not None and w.hosts["reports.rpt.example"].role is HostRole.REPORT_SINK
        real = w.endpoint_map[(w.address_of("reports.rpt.example"), 443)]
        async with httpx.AsyncClient(verify=trusting(w), timeout=5.0) as client:
            url = f"https://{real[0]}:{real[1]}/tlsrpt"
            headers = {"Host": "reports.rpt.example", "Content-Type": "application/tlsrpt+json"}
            ext = {"sni_hostname": "reports.rpt.example"}
            statuses = [
                (await client.post(url, content=b"{}", headers=headers, extensions=ext)).status_code
                for _ in range(2)
            ]
        assert statuses == [503, 201] and sink.count("/tlsrpt") == 2
        assert w.proxy is not None
        async with httpx.AsyncClient(verify=trusting(w), proxy=w.proxy.url, timeout=5.0) as c:
            # CONNECT mta-sts.example.com:443: the proxy maps it through the world.
            got = await c.get("https://mta-sts.example.com/.well-known/mta-sts.txt")
            assert got.status_code == 200
        assert [e.outcome for e in w.proxy.log()] == [ProxyOutcome.TUNNELLED]
        await w.set_proxy_fault("refuse")
        assert {e.kind for e in w.timeline()} >= {ExchangeKind.REPORT, ExchangeKind.PROXY}


# --- errors ------------------------------------------------------------------------------


def test_unknown_key_names_file_and_key_path() -> None:
    with pytest.raises(SpecError) as info:
        World({"domains": {"example.com": {"polcy": "x"}}}, source="world.toml")
    assert str(info.value).startswith('world.toml: domains."example.com".polcy: unknown key')
    assert info.value.key == 'domains."example.com".polcy'


@pytest.mark.parametrize("address", ["10.0.0.1", "192.0.2.1", "::1", "localhost"])
def test_non_loopback_address_is_refused(address: str) -> None:
    with pytest.raises(SpecError, match=r"expected an IPv4 loopback address \(the world uses 127\.0\.0\.0/8\)") as info:
        World({"hosts": {"mx1.example.com": {"address": address}}}, source="w.toml")
    assert info.value.key == 'hosts."mx1.example.com".address'


async def test_two_mx_hosts_on_one_explicit_address_are_refused(world: WorldFactory) -> None:
    spec = {
        "hosts": {
            "mx1.example.com": {"address": "127.0.77.1"},
            "mx2.example.com": {"address": "127.0.77.1"},
        }
    }
    with pytest.raises(SpecError, match=r"would both answer on 127\.0\.77\.1:25"):
        async with world(spec):
            pass


async def test_update_domain_with_unknown_key_names_it(world: WorldFactory) -> None:
    async with world(load("w-sts.toml")) as w:
        with pytest.raises(SpecError, match=r'update_domain: domains."example.com".mta_sts'):
            await w.update_domain("example.com", mta_sts=["v=STSv1; id=B"])
        with pytest.raises(SpecError, match=r"expected a DNS behaviour or DNSSEC status: one of .*\(value .timeout.\)"):
            await w.set_dns("example.com", "MX", "timeout")


# --- resources ---------------------------------------------------------------------------


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_teardown_leaks_no_task_socket_thread_or_file(world: WorldFactory) -> None:
    spec = load("w-sts.toml")
    spec["proxy"] = {}
    spec["report_sink"] = {"name": "reports.rpt.example"}
    async with world(spec) as w:  # warm-up: lazy imports, CA creation
        w.ca_file  # noqa: B018
    fds, tasks, threads = _fds(), asyncio.all_tasks(), set(threading.enumerate())
    async with world(spec) as w:
        await query(w, "_mta-sts.example.com", "TXT")
        await fetch_policy(w, "example.com", trusting(w))
        await starttls(w, "mx1.example.com", trusting(w))
        ca_dir = w.ca_file.parent
    assert not ca_dir.exists()
    assert asyncio.all_tasks() == tasks
    assert set(threading.enumerate()) == threads
    assert _fds() == fds


async def test_worlds_alive_at_once_never_share_an_address(world: WorldFactory) -> None:
    allocator = LoopbackAllocator(slot=250)
    async with (
        world(load("w-sts.toml"), allocator=allocator) as one,
        world(load("w-sts.toml"), allocator=allocator) as two,
    ):
        first = {h.address for h in one.hosts.values()}
        second = {h.address for h in two.hosts.values()}
        assert first.isdisjoint(second) and allocator.in_use == 2
    assert allocator.in_use == 0


async def test_world_issues_certificates_at_the_given_now(world: WorldFactory) -> None:
    now = 1_767_225_600.0  # 2026-01-01
    async with world(load("w-sts.toml"), now=lambda: now) as w:
        assert w.clock_now == now
        cert = await w.rotate_cert("mx1.example.com", "expired")
        assert cert.not_after.timestamp() < now
