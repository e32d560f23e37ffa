"""Standard ports for a world inside a network namespace: 53, 443 and 25, by DNAT.

Theory of operation
-------------------
A :class:`~harness.world.world.World` binds every server to port 0 and publishes
the endpoint map ``(address, 25|443) -> (address, real port)``; our engine is told
that map, a real MTA cannot be. Inside a namespace of our own
(:mod:`harness.netns`) nothing else listens, so the map can be made true for every
process there: :func:`ruleset` turns it into an nftables ``nat`` table whose
``output`` hook rewrites the destination of locally generated packets (which is all
traffic on ``lo``), and :class:`StandardPorts` loads it.

* every ``(address, 25|443)`` of the endpoint map -> its real port, TCP;
* ``127.0.0.53:53`` and ``<world dns>:53`` -> the fake DNS, UDP and TCP (the
  namespace's resolv.conf names 127.0.0.53, so one resolv.conf serves every world).

Connection tracking un-rewrites the replies, so a client sees ``mx1:25`` answer. The
world itself is untouched: its servers, logs and the endpoint map stay as they are,
and a world outside a namespace keeps working the port-0 way.

The table is replaced whole, in one ``nft -f`` transaction, by :meth:`StandardPorts.sync`,
which the black-box adapter calls at start and before each send (a mutation may have
added an MX). It refuses to touch anything outside a namespace of ours
(:func:`harness.netns.current_namespace`): the root namespace's firewall is never ours.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from harness.errors import WorldError
from harness.netns import current_namespace
from harness.world.world import World

__all__ = ["DNS_STUB", "TABLE", "StandardPorts", "ruleset"]

#: The address every namespace's resolv.conf names.
DNS_STUB = "127.0.0.53"
#: The nftables table this module owns (in the namespace only).
TABLE = "sts_harness"


def ruleset(endpoints: Mapping[tuple[str, int], tuple[str, int]], dns: tuple[str, int]) -> str:
    """The nftables script that makes ``endpoints`` and ``dns`` answer on standard ports.

    Args:
        endpoints: ``(address, service port) -> (address, real port)``.
        dns: where the fake DNS really listens (UDP and TCP).

    Returns:
        A script for ``nft -f -`` that replaces :data:`TABLE` atomically.
    """
    rules = []
    for (addr, service), (real_addr, real_port) in sorted(endpoints.items()):
        if (addr, service) != (real_addr, real_port):
            rules.append(f"ip daddr {addr} tcp dport {service} dnat to {real_addr}:{real_port}")
    for stub in dict.fromkeys((DNS_STUB, dns[0])):
        if (stub, 53) != dns:
            for proto in ("udp", "tcp"):
                rules.append(f"ip daddr {stub} {proto} dport 53 dnat to {dns[0]}:{dns[1]}")
    body = "\n".join(f"    {r}" for r in rules)
    return (
        f"table ip {TABLE} {{}}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n  chain out {{\n"
        "    type nat hook output priority -100; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )


class StandardPorts:
    """Keeps a namespace's DNAT table equal to a running world's endpoints.

    Args:
        world: the running world.

    Raises:
        WorldError: (at :meth:`sync`) not inside a namespace of ours, or ``nft`` failed.
    """

    def __init__(self, world: World) -> None:
        self._world = world
        self._loaded: str | None = None

    def sync(self) -> bool:
        """Load the table if the world's endpoints changed since the last load.

        Returns:
            True when a new table was loaded.
        """
        script = ruleset(self._world.endpoint_map, self._world.resolver)
        if script == self._loaded:
            return False
        if current_namespace() is None:
            raise WorldError(
                "standard ports are only set up inside a harness network namespace "
                "(harness.netns); refusing to change this namespace's firewall"
            )
        try:
            done = subprocess.run(
                ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10
            )
        except FileNotFoundError as exc:
            raise WorldError("`nft` is not installed (scripts/install-blackbox.sh)") from exc
        if done.returncode != 0:
            raise WorldError(f"nft refused the standard-port table: {done.stderr.strip()}")
        self._loaded = script
        return True
