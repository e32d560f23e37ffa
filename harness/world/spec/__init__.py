"""The world spec: what a world holds, read from TOML with errors that name the key.

:mod:`~harness.world.spec.reader` reads a world table (the format is documented
there) into the frozen values of :mod:`~harness.world.spec.model`, through the table
readers of :mod:`~harness.world.spec.tables` and :mod:`~harness.world.spec.records`;
:mod:`~harness.world.spec.changes` applies a step's mutation to a spec, and
:mod:`~harness.world.spec.zones` derives the DNS zones a spec implies.
"""

from __future__ import annotations

from harness.world.spec.model import (
    DerivedTlsa,
    DnsRule,
    DomainSpec,
    HostSpec,
    PolicyHostSpec,
    ProxySpec,
    RecordSpec,
    ReportSinkSpec,
    WorldSpec,
)
from harness.world.spec.reader import load_world_spec, read_world_spec
from harness.world.spec.tables import domain_from, host_from
from harness.world.spec.values import address_of, name_of

__all__ = [
    "DerivedTlsa",
    "DnsRule",
    "DomainSpec",
    "HostSpec",
    "PolicyHostSpec",
    "ProxySpec",
    "RecordSpec",
    "ReportSinkSpec",
    "WorldSpec",
    "address_of",
    "domain_from",
    "host_from",
    "load_world_spec",
    "name_of",
    "read_world_spec",
]
