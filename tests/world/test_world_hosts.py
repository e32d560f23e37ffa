"""Host features of the world spec against real clients: SNI certificates, service ports,
derived TLSA, a CN apart from the SAN, and a policy host limited to old TLS versions."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certs import supported_tls_versions
from harness.errors import SpecError
from harness.pytest_plugin import WorldFactory
from harness.world import DerivedTlsa, HostRole, World, load_world_spec

MX1 = "mx1.example.com"


async def tlsa_rdata(w: World, name: str) -> list[Any]:
    q = dns.message.make_query(name, "TLSA", want_dnssec=True)
    reply = await dns.asyncquery.udp(q, w.resolver[0], port=w.resolver[1], timeout=2.0)
    return [rd for rrset in reply.answer for rd in rrset]


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


async def _reply(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await reader.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


async def served_leaf(w: World, host: str, sni: str | None, port: int = 25) -> x509.Certificate:
    """STARTTLS at ``host``'s service ``port`` with SNI ``sni``; the leaf it served."""
    real = w.endpoint_map[(w.address_of(host), port)]
    reader, writer = await asyncio.open_connection(*real)
    try:
        await _reply(reader)
        writer.write(b"EHLO client.example\r\n")
        await _reply(reader)
        writer.write(b"STARTTLS\r\n")
        assert (await _reply(reader)).startswith(b"220")
        await writer.start_tls(unverified(), server_hostname=sni)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"QUIT\r\n")
        await _reply(reader)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def issuer_is_subject(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


# -- sni_certs (CERT-10) --------------------------------------------------------------------


async def test_sni_certs_serve_the_named_certificate_only_for_that_sni(
    world: WorldFactory,
) -> None:
    spec = {"hosts": {MX1: {"cert": "self-signed", "sni_certs": {MX1: "valid"}}}}
    async with world(spec) as w:
        right = await served_leaf(w, MX1, MX1)
        assert not issuer_is_subject(right)  # signed by the trusted root
        for sni in (None, "example.com"):
            assert issuer_is_subject(await served_leaf(w, MX1, sni))  # the default
        # TLSA and rotation concern the default; the SNI certificate stays.
        await w.rotate_cert(MX1, "expired")
        assert not issuer_is_subject(await served_leaf(w, MX1, MX1))
        assert not issuer_is_subject(await served_leaf(w, MX1, None))


def test_sni_certs_need_a_default_certificate() -> None:
    data = {"hosts": {MX1: {"cert": "none", "starttls": "absent", "sni_certs": {MX1: "valid"}}}}
    with pytest.raises(SpecError, match=r"sni_certs.*default certificate"):
        load_world_spec(data, "s.toml", "world")


def test_sni_certs_values_are_profiles() -> None:
    with pytest.raises(SpecError, match=r'sni_certs\."mx1.example.com"'):
        load_world_spec({"hosts": {MX1: {"sni_certs": {MX1: "fine"}}}}, "s.toml", "world")


# -- port (DANE-17) -------------------------------------------------------------------------


async def test_port_maps_the_service_port_and_moves_the_tlsa_owner(world: WorldFactory) -> None:
    host = "relay.example.net"
    spec = {
        "domains": {"example.net": {"dnssec": "secure"}},
        "hosts": {host: {"cert": "self-signed", "port": 2525, "tlsa": [[3, 1, 1]]}},
    }
    async with world(spec) as w:
        address = w.address_of(host)
        assert (address, 2525) in w.endpoint_map and (address, 25) not in w.endpoint_map
        assert w.hosts[host].service_port == 2525 and w.hosts[host].role is HostRole.MX
        leaf = await served_leaf(w, host, host, port=2525)
        spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        (record,) = await tlsa_rdata(w, f"_2525._tcp.{host}")
        assert record.cert == hashlib.sha256(spki).digest()
        assert await tlsa_rdata(w, f"_25._tcp.{host}") == []


@pytest.mark.parametrize("port", [0, 53, 443, 70000])
def test_port_must_be_a_free_service_port(port: int) -> None:
    with pytest.raises(SpecError, match=r"world\.hosts\.mx\.port"):
        load_world_spec({"hosts": {"mx": {"port": port}}}, "s.toml", "world")


# -- derived TLSA (DANE-21, DANE-30) --------------------------------------------------------


async def test_derived_tlsa_publishes_one_digest_under_other_parameters(
    world: WorldFactory,
) -> None:
    swapped = {"usage": 3, "selector": 0, "mtype": 1, "data_from": [3, 1, 1]}
    spec = {"hosts": {MX1: {"cert": "self-signed", "tlsa": [swapped, [3, 0, 1]]}}}
    async with world(spec) as w:
        leaf = await served_leaf(w, MX1, MX1)
        spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        cert_digest = hashlib.sha256(leaf.public_bytes(Encoding.DER)).digest()
        records = {
            (r.usage, r.selector, r.mtype, r.cert) for r in await tlsa_rdata(w, f"_25._tcp.{MX1}")
        }
        assert records == {(3, 0, 1, hashlib.sha256(spki).digest()), (3, 0, 1, cert_digest)}


async def test_derived_tlsa_depth_names_a_ca_above_the_issuer(world: WorldFactory) -> None:
    entry = {"usage": 2, "selector": 0, "mtype": 0, "depth": 3}
    spec = {"hosts": {MX1: {"cert": "via-two-intermediates-pathlen0", "tlsa": [entry]}}}
    async with world(spec) as w:
        (record,) = await tlsa_rdata(w, f"_25._tcp.{MX1}")
        ca = x509.load_der_x509_certificate(record.cert)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_derived_tlsa_spec() -> None:
    host = load_world_spec(
        {"hosts": {"mx": {"tlsa": [[3, 1, 1], {"usage": 2, "selector": 0, "mtype": 1}]}}}
    ).hosts["mx"]
    assert host.tlsa == ((3, 1, 1),)
    assert host.tlsa_derived == (DerivedTlsa(2, 0, 1, (2, 0, 1), None),)
    with pytest.raises(SpecError, match=r"tlsa\[0\]\.selectr.*unknown key"):
        load_world_spec({"hosts": {"mx": {"tlsa": [{"usage": 3, "selectr": 1}]}}}, "s", "world")


# -- cn (DANE-26) ---------------------------------------------------------------------------


async def test_cn_differs_from_the_san_names(world: WorldFactory) -> None:
    spec = {"hosts": {MX1: {"cert": "via-intermediate", "names": ["www.example.com"], "cn": MX1}}}
    async with world(spec) as w:
        leaf = await served_leaf(w, MX1, MX1)
        assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == MX1
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["www.example.com"]


# -- policy host TLS range (FETCH-17) -------------------------------------------------------


async def fetch(w: World, name: str, context: ssl.SSLContext) -> httpx.Response:
    real = w.endpoint_map[(w.address_of(name), 443)]
    async with httpx.AsyncClient(verify=context, timeout=5.0) as client:
        return await client.get(
            f"https://{real[0]}:{real[1]}/.well-known/mta-sts.txt",
            headers={"Host": name},
            extensions={"sni_hostname": name},
        )


async def test_policy_host_tls_max_offers_only_old_versions(
    world: WorldFactory, cert_factory: Any
) -> None:
    legacy = ssl.TLSVersion.TLSv1_1
    if legacy not in supported_tls_versions():
        pytest.skip("this OpenSSL cannot negotiate TLS 1.1 even at @SECLEVEL=0")
    spec = {
        "domains": {
            "example.com": {"policy": "version: STSv1\n", "policy_host": {"tls_max": "1.1"}},
            "example.net": {"policy": "version: STSv1\n"},
        }
    }
    async with world(spec) as w:
        # A modern client (TLS 1.2 floor) cannot talk to it ...
        with pytest.raises(httpx.ConnectError):
            await fetch(w, "mta-sts.example.com", cert_factory.client_context())
        assert w.policy_host.count() == 0
        # ... a client that accepts TLS 1.1 fetches over TLS 1.1, with the host's own cert,
        old = cert_factory.client_context(min_version=ssl.TLSVersion.TLSv1)
        response = await fetch(w, "mta-sts.example.com", old)
        assert response.status_code == 200
        assert w.policy_host.requests()[-1].tls_version == "TLSv1.1"
        # ... and the other policy host, on its own listener, keeps the default range.
        await fetch(w, "mta-sts.example.net", cert_factory.client_context())
        assert w.policy_host.requests()[-1].tls_version in ("TLSv1.2", "TLSv1.3")
        # The range belongs to the listener: a running host cannot change it.
        with pytest.raises(SpecError, match="keeps its TLS version range"):
            await w.update_domain("example.com", policy_host={"cert": "valid"})


async def test_policy_hosts_sharing_an_address_share_a_tls_range(world: WorldFactory) -> None:
    spec = {
        "domains": {
            "a.example": {"policy_host": {"address": "127.0.250.9", "tls_max": "1.1"}},
            "b.example": {"policy_host": {"address": "127.0.250.9"}},
        }
    }
    with pytest.raises(ValueError, match="give it an address of its own"):
        async with world(spec):
            pass


def test_policy_host_tls_range_spec() -> None:
    ph = (
        load_world_spec({"domains": {"e.x": {"policy_host": {"tls_max": "1.1"}}}})
        .domains["e.x"]
        .policy_host
    )
    assert ph is not None and ph.tls_max is ssl.TLSVersion.TLSv1_1 and ph.tls_min is None
    with pytest.raises(SpecError, match=r"expected a version no higher than tls_max \(1\.2\) \(value .1\.3.\)"):
        load_world_spec({"domains": {"e.x": {"policy_host": {"tls_min": "1.3", "tls_max": "1.2"}}}})
