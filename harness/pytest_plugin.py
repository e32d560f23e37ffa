"""pytest plugin: fixtures for every piece of the simulated world.

Registered through the ``pytest11`` entry point, so any test in a checkout with the
package installed can ask for:

* ``cert_factory`` (session): one :class:`certs.CertFactory` for the whole run;
* ``world_addresses``: a private loopback /24 for the test (released after it);
* ``fake_dns``, ``policy_host``, ``receiving_mta`` (``mx1.example.com``, valid
  certificate, STARTTLS offered), ``proxy`` (routes from ``proxy_routes``, a dict the
  test may fill), ``report_sink`` (``reports.rpt.example``): each running on the
  test's addresses, torn down after it;
* ``world``: a factory, ``async with world(spec_dict) as w:`` (any world still open
  when the test ends is closed).

Every server binds port 0 on an address of the test's own block, so the fixtures are
safe under ``pytest -n auto``. The module imports nothing heavy until a fixture runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from certs import CertFactory
    from harness.world import (
        AddressBlock,
        FakeDns,
        PolicyHost,
        Proxy,
        ReceivingMta,
        ReportSink,
        World,
    )

__all__ = [
    "WorldFactory",
    "cert_factory",
    "fake_dns",
    "policy_host",
    "proxy",
    "proxy_routes",
    "receiving_mta",
    "report_sink",
    "world",
    "world_addresses",
]

#: The type of the ``world`` fixture: ``(spec, **World kwargs) -> World``.
WorldFactory = Callable[..., "World"]


@pytest.fixture(scope="session")
def cert_factory() -> Iterator[CertFactory]:
    """One certificate factory (trusted root, untrusted root, intermediate) per session."""
    from certs import CertFactory

    factory = CertFactory()
    yield factory
    factory.close()


@pytest.fixture
def world_addresses() -> Iterator[AddressBlock]:
    """A loopback /24 no other test of this process holds at the same time."""
    from harness.world import DEFAULT_ALLOCATOR

    block = DEFAULT_ALLOCATOR.block()
    yield block
    block.release()


@pytest_asyncio.fixture
async def fake_dns(world_addresses: AddressBlock) -> AsyncIterator[FakeDns]:
    """A running, empty :class:`FakeDns` (add zones with ``set_zone``)."""
    from harness.world import FakeDns

    async with FakeDns(address=world_addresses.dns) as dns:
        yield dns


@pytest_asyncio.fixture
async def policy_host() -> AsyncIterator[PolicyHost]:
    """A running :class:`PolicyHost` with no hosts (add them with ``add_host``)."""
    from harness.world import PolicyHost

    async with PolicyHost() as host:
        yield host


@pytest_asyncio.fixture
async def receiving_mta(
    cert_factory: CertFactory, world_addresses: AddressBlock
) -> AsyncIterator[ReceivingMta]:
    """``mx1.example.com``: STARTTLS offered, a valid certificate from ``cert_factory``."""
    from harness.world import ReceivingMta, ServerCert

    cert = cert_factory.issue("mx1.example.com")
    server_cert = ServerCert(cert.chain_pem, cert.private_key_pem)
    async with ReceivingMta(world_addresses.take(), "mx1.example.com", cert=server_cert) as mta:
        yield mta


@pytest.fixture
def proxy_routes() -> dict[tuple[str, int], tuple[str, int]]:
    """The ``proxy`` fixture's routes, ``(host, port) -> (address, port)``; fill it in."""
    return {}


@pytest_asyncio.fixture
async def proxy(
    proxy_routes: dict[tuple[str, int], tuple[str, int]], world_addresses: AddressBlock
) -> AsyncIterator[Proxy]:
    """A running CONNECT :class:`Proxy` that tunnels to ``proxy_routes``."""
    from harness.world import Proxy

    async with Proxy(proxy_routes, address=world_addresses.take()) as running:
        yield running


@pytest_asyncio.fixture
async def report_sink(
    cert_factory: CertFactory, world_addresses: AddressBlock
) -> AsyncIterator[ReportSink]:
    """A running :class:`ReportSink` for ``reports.rpt.example`` (a valid certificate)."""
    from harness.world import ReportSink

    cert = cert_factory.issue("reports.rpt.example")
    pair = (cert.chain_pem, cert.private_key_pem)
    async with ReportSink("reports.rpt.example", address=world_addresses.take(), cert=pair) as sink:
        yield sink


@pytest_asyncio.fixture
async def world(cert_factory: CertFactory) -> AsyncIterator[WorldFactory]:
    """A factory of worlds sharing ``cert_factory``: ``async with world(spec) as w:``.

    The factory takes what :class:`harness.world.World` takes (a spec dict or
    ``WorldSpec``, ``now=``, ``source=`` ...).
    """
    from harness.world import World

    made: list[World] = []

    def make(spec: Mapping[str, Any] | Any, **kwargs: Any) -> World:
        kwargs.setdefault("certs", cert_factory)
        made.append(World(spec, **kwargs))
        return made[-1]

    yield make
    for w in reversed(made):
        await w.__aexit__(None, None, None)  # a no-op for worlds already closed


# The scenario catalog: scenarios/**/*.toml files are collected as test items.
from harness.run.collect import *  # noqa: E402, F403
