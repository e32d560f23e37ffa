"""The pytest plugin's fixtures: each one running, on the test's own loopback block."""

from __future__ import annotations

import asyncio
import ssl

import dns.asyncquery
import dns.message
import httpx

from certs import CertFactory
from harness.pytest_plugin import WorldFactory
from harness.world import AddressBlock, FakeDns, PolicyHost, Proxy, ReceivingMta, ReportSink, Zone


async def test_fake_dns_fixture_serves_zones_on_the_tests_block(
    fake_dns: FakeDns, world_addresses: AddressBlock
) -> None:
    fake_dns.set_zone(Zone("example.com").txt("_mta-sts.example.com", "v=STSv1; id=A1"))
    host, port = fake_dns.address
    assert host == world_addresses.dns
    q = dns.message.make_query("_mta-sts.example.com", "TXT")
    reply = await dns.asyncquery.udp(q, host, port=port, timeout=2.0)
    assert "id=A1" in reply.answer[0].to_text()


async def test_receiving_mta_policy_host_and_report_sink_fixtures_run(
    receiving_mta: ReceivingMta,
    policy_host: PolicyHost,
    report_sink: ReportSink,
    cert_factory: CertFactory,
    world_addresses: AddressBlock,
) -> None:
    assert receiving_mta.identity == "mx1.example.com"
    assert receiving_mta.address[0].startswith(world_addresses.prefix + ".")
    cert = cert_factory.issue("mta-sts.example.com")
    address, port = await policy_host.add_host(
        "mta-sts.example.com",
        address=world_addresses.take(),
        cert=(cert.chain_pem, cert.private_key_pem),
    )
    context = ssl.create_default_context(cadata=cert_factory.ca_bundle_pem.decode())
    async with httpx.AsyncClient(verify=context, timeout=5.0) as client:
        response = await client.get(
            f"https://{address}:{port}/.well-known/mta-sts.txt",
            headers={"Host": "mta-sts.example.com"},
            extensions={"sni_hostname": "mta-sts.example.com"},
        )
    assert response.status_code == 200
    assert report_sink.endpoint[1] > 0 and report_sink.name == "reports.rpt.example"


async def test_proxy_fixture_tunnels_to_its_routes(
    proxy: Proxy, proxy_routes: dict[tuple[str, int], tuple[str, int]], receiving_mta: ReceivingMta
) -> None:
    proxy_routes[("mx1.example.com", 25)] = receiving_mta.address
    reader, writer = await asyncio.open_connection(proxy.address, proxy.port)
    writer.write(b"CONNECT mx1.example.com:25 HTTP/1.1\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert (await reader.readline()).startswith(b"220")
    writer.close()
    await writer.wait_closed()


async def test_world_fixture_closes_worlds_left_open(world: WorldFactory) -> None:
    w = world({"domains": {"example.com": {"mx": [[10, "mx1.example.com"]]}}})
    await w.__aenter__()  # left open on purpose: the fixture closes it
    assert w.mta("mx1.example.com").address
