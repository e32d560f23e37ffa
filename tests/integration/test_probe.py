"""engine.delivery.probe: the one STARTTLS probe of ``sts-engine check`` and the capture."""

from __future__ import annotations

import socket
import ssl

import pytest

from engine.delivery.probe import ProbeStatus, probe_starttls
from engine.io.dialer import Dialer
from harness.world.world import World

HOSTS = {
    "mx-offered.example.com": {"cert": "valid"},
    "mx-tls12.example.com": {"cert": "valid", "tls_max": "1.2"},
    "mx-absent.example.com": {"starttls": "absent"},
    "mx-refused.example.com": {"starttls": "refused"},
    "mx-broken.example.com": {"starttls": "broken-close"},
    "mx-mute.example.com": {"replies": {"ehlo": "disconnect"}},
}
SPEC = {
    "domains": {"example.com": {"mx": [f"10 {h}" for h in HOSTS]}},
    "hosts": HOSTS,
}


@pytest.fixture
async def probed(world):
    async with world(SPEC) as w:
        yield w


async def _probe(world: World, host: str, **kwargs) -> object:
    dialer = Dialer(endpoint_map=world.endpoint_map, loopback_only=True)
    address = world.address_of(host)
    return await probe_starttls(
        dialer, address, host, timeout=5.0, local_hostname="p.test", **kwargs
    )


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("mx-offered.example.com", ProbeStatus.OFFERED),
        ("mx-absent.example.com", ProbeStatus.ABSENT),
        ("mx-refused.example.com", ProbeStatus.REFUSED),
        ("mx-broken.example.com", ProbeStatus.BROKEN_CLOSE),
    ],
)
async def test_probe_says_how_far_starttls_got(probed, host, status) -> None:
    probe = await _probe(probed, host)
    assert probe.status is status
    if status is ProbeStatus.OFFERED:
        assert probe.tls.protocol == "TLSv1.3" and probe.tls.chain and probe.detail == ""
    elif status is ProbeStatus.ABSENT:
        assert probe.tls is None
    else:
        assert probe.detail and not probe.tls.ok
        assert probe.tls.reached_220 is (status is ProbeStatus.BROKEN_CLOSE)


async def test_probe_caps_the_tls_version_when_asked(probed) -> None:
    capped = await _probe(probed, "mx-offered.example.com", maximum=ssl.TLSVersion.TLSv1_2)
    assert capped.status is ProbeStatus.OFFERED and capped.tls.protocol == "TLSv1.2"
    own = await _probe(probed, "mx-tls12.example.com")
    assert own.tls.protocol == "TLSv1.2"


async def test_probe_of_a_session_that_breaks_at_ehlo_is_unreachable_at_ehlo(probed) -> None:
    probe = await _probe(probed, "mx-mute.example.com")
    assert (probe.status, probe.stage, probe.tls) == (ProbeStatus.UNREACHABLE, "ehlo", None)


async def test_probe_of_a_closed_port_is_unreachable_at_connect() -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dialer = Dialer(endpoint_map={("127.0.0.1", 25): ("127.0.0.1", port)}, loopback_only=True)
    probe = await probe_starttls(
        dialer, "127.0.0.1", "mx.example.com", timeout=5.0, local_hostname="p.test"
    )
    assert (probe.status, probe.stage, probe.tls) == (ProbeStatus.UNREACHABLE, "connect", None)
    assert probe.detail
