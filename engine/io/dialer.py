"""The one place the engine opens TCP connections.

In production a :class:`Dialer` connects where it is told. The harness hands
the engine an *endpoint map*: the fake DNS answers with distinct 127.0.0.0/8
addresses and standard ports (25, 443), while the fake servers really listen
on ephemeral ports; the map routes ``(address, standard port)`` to
``(address, real port)``. With ``loopback_only`` set (the harness always sets
it) the dialer refuses any address outside 127.0.0.0/8 and ::1, so a
simulated run can never send traffic beyond this machine.

A harness running the gateway as a separate process hands it the map as a file
(``sts-engine serve --endpoints FILE``, hidden): :class:`EndpointFile` reads it
again whenever it changes, because a scenario step may add a host to the world
while the gateway runs. The harness replaces the file atomically (write, then
``rename``), so a reader sees the old map or the new one, never half of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DialRefused", "Dialer", "EndpointFile", "EndpointFileError", "parse_endpoint_map"]

Endpoint = tuple[str, int]


class DialRefused(OSError):
    """The dialer will not connect to this address (loopback-only mode)."""


class EndpointFileError(ValueError):
    """An endpoint map file that cannot be read or is not a map of endpoints."""


def _endpoint(text: object, where: str) -> Endpoint:
    if not isinstance(text, str):
        raise EndpointFileError(f"{where}: {text!r} is not 'ADDRESS:PORT'")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise EndpointFileError(f"{where}: {text!r} is not 'ADDRESS:PORT'")
    return host.strip("[]"), int(port)


def parse_endpoint_map(text: str, source: str = "<endpoints>") -> dict[Endpoint, Endpoint]:
    """Read an endpoint map from JSON.

    Two layouts are accepted: ``{"ADDR:PORT": "ADDR:PORT", ...}`` (what ``sts-harness
    serve`` writes) and ``{"endpoints": [[addr, port, real_addr, real_port], ...]}``.

    Raises:
        EndpointFileError: not JSON, or not one of those layouts (``source`` is named).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EndpointFileError(f"{source}: not JSON: {exc}") from None
    out: dict[Endpoint, Endpoint] = {}
    if isinstance(data, dict) and isinstance(data.get("endpoints"), list):
        for row in data["endpoints"]:
            ok = isinstance(row, list) and len(row) == 4
            if not ok or not all(isinstance(v, int | str) for v in row):
                raise EndpointFileError(f"{source}: endpoints row {row!r} is not [a, p, ra, rp]")
            a, p, ra, rp = row
            try:
                out[str(a), int(p)] = (str(ra), int(rp))
            except ValueError:
                raise EndpointFileError(f"{source}: endpoints row {row!r} has a bad port") from None
        return out
    if not isinstance(data, dict):
        raise EndpointFileError(f"{source}: expected an object of 'ADDR:PORT' keys")
    for key, value in data.items():
        out[_endpoint(key, source)] = _endpoint(value, f"{source}: {key}")
    return out


class EndpointFile(Mapping[Endpoint, Endpoint]):
    """An endpoint map kept in a file, read again when the file changes.

    Each lookup reads the file (a few hundred bytes, once per connection dialled) and
    parses it only when its bytes differ from the last good read. Comparing contents
    rather than ``stat`` stamps is deliberate: an atomic replace can reuse the inode
    number, and modification times are only as fine as the kernel's tick. A file that
    goes missing or turns bad after a good read keeps the last good map (the harness
    replaces it atomically, so this is only a guard).

    Args:
        path: the JSON file (see :func:`parse_endpoint_map`).

    Raises:
        EndpointFileError: at construction, when the file cannot be read or parsed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._raw: bytes | None = None
        self._map: dict[Endpoint, Endpoint] = {}
        try:
            self._reload(strict=True)
        except OSError as exc:
            raise EndpointFileError(f"{str(self.path)!r}: {exc.strerror}") from None

    def _reload(self, *, strict: bool = False) -> None:
        raw = self.path.read_bytes()
        if raw == self._raw:
            return
        try:
            text = raw.decode("utf-8")
            self._map = parse_endpoint_map(text, str(self.path))
        except UnicodeDecodeError:
            if strict:
                raise EndpointFileError(f"{str(self.path)!r}: not UTF-8 text") from None
            return
        except EndpointFileError:
            if strict:
                raise
            return
        self._raw = raw

    def _current(self) -> dict[Endpoint, Endpoint]:
        with contextlib.suppress(OSError):  # gone for a moment: the last good map stands
            self._reload()
        return self._map

    def __getitem__(self, key: Endpoint) -> Endpoint:
        return self._current()[key]

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


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
