"""The one place the engine opens TCP connections.

In production a :class:`Dialer` connects where it is told. The harness hands
the engine an *endpoint map*: the fake DNS answers with distinct 127.0.0.0/8
addresses and standard ports (25, 443), while the fake servers really listen
on ephemeral ports; the map routes ``(address, standard port)`` to
``(address, real port)``. With ``loopback_only`` set (the harness always sets
it) the dialer refuses any address outside 127.0.0.0/8 and ::1, so a
simulated run can never send traffic beyond this machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DialRefused", "Dialer"]

Endpoint = tuple[str, int]


class DialRefused(OSError):
    """The dialer will not connect to this address (loopback-only mode)."""


@dataclass(slots=True)
class Dialer:
    """Opens TCP connections, applying the endpoint map.

    Attributes:
        endpoint_map: (address, port) -> (address, port) actually dialled.
        loopback_only: refuse every non-loopback destination.
        port_map: standard port -> port dialled, for hosts not in the map
            (``sts-engine send --smtp-port``).
    """

    endpoint_map: Mapping[Endpoint, Endpoint] = field(default_factory=dict)
    loopback_only: bool = False
    port_map: Mapping[int, int] = field(default_factory=dict)

    def resolve(self, host: str, port: int) -> Endpoint:
        """Where a connection to ``host:port`` really goes.

        Raises:
            DialRefused: loopback-only mode and the destination is not loopback.
        """
        target = self.endpoint_map.get((host, port))
        if target is None:
            target = (host, self.port_map.get(port, port))
        if self.loopback_only:
            try:
                ok = ipaddress.ip_address(target[0]).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise DialRefused(f"refusing to dial {target[0]!r}: loopback-only mode")
        return target

    async def open_connection(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a TCP (optionally TLS) stream to ``host:port`` through the map."""
        real_host, real_port = self.resolve(host, port)
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(
                real_host,
                real_port,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context is not None else None,
            )
