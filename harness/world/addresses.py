"""Loopback addresses for worlds: one /24 block per live world, one address per host.

Theory of operation
-------------------
Everything a world hands out lies in 127.0.0.0/8 (DESIGN §4: no traffic leaves this
machine). Linux routes the whole /8 to ``lo``, so any 127.a.b.c can be bound without
configuration, and servers bind port 0, so two processes using the same address never
collide on a port.

Layout: ``127.P.W.H``.

* ``P`` is the process slot: 10 for a plain process, 20 + N for pytest-xdist worker
  ``gwN``, so parallel workers also stay apart (not needed for correctness, but it makes
  logs unambiguous). It keeps clear of 127.0.x.x, where hand-written tests live.
* ``W`` is the world slot, taken from a process-wide free list when a world starts and
  given back when it stops, so two worlds alive at once never share an address.
* ``H`` is the host: ``.53`` is the fake DNS (a nod to 127.0.0.53), the others are given
  out from ``.1`` upwards in the order hosts are declared.

Explicit addresses from a spec are checked (loopback only) but not reserved: a spec may
put several policy hosts on one address on purpose (a hosting provider).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterator

from harness.errors import WorldError

__all__ = [
    "DEFAULT_ALLOCATOR",
    "DNS_HOST",
    "AddressBlock",
    "LoopbackAllocator",
    "is_loopback_v4",
    "process_slot",
]

DNS_HOST = 53
_HOSTS = tuple(h for h in range(1, 255) if h != DNS_HOST)
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def is_loopback_v4(address: str) -> bool:
    """True when ``address`` is an IPv4 literal inside 127.0.0.0/8."""
    try:
        return ipaddress.ip_address(address) in _LOOPBACK
    except ValueError:
        return False


def process_slot() -> int:
    """The second octet this process allocates under (see the module docstring)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return 20 + int(worker[2:]) % 230
    return 10


class AddressBlock:
    """One world's /24: the DNS address and a stream of host addresses.

    Args:
        prefix: the first three octets, e.g. ``"127.10.3"``.
        release: called once by :meth:`release`.
    """

    def __init__(self, prefix: str, release: Callable[[], None] | None = None) -> None:
        self.prefix = prefix
        self._release = release
        self._next: Iterator[int] = iter(_HOSTS)

    @property
    def dns(self) -> str:
        """The fake DNS's address (``.53``)."""
        return f"{self.prefix}.{DNS_HOST}"

    def take(self) -> str:
        """The next free host address of the block.

        Raises:
            WorldError: the block's 253 host addresses are used up.
        """
        host = next(self._next, None)
        if host is None:
            raise WorldError(f"loopback block {self.prefix}.0/24 has no host address left")
        return f"{self.prefix}.{host}"

    def release(self) -> None:
        """Give the block back (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class LoopbackAllocator:
    """Hands out :class:`AddressBlock` s, never the same one twice while it is held.

    Thread-safe: worlds in different event loops (threads) may allocate at once.

    Args:
        slot: the second octet (default :func:`process_slot`).
    """

    def __init__(self, slot: int | None = None) -> None:
        self.slot = process_slot() if slot is None else slot
        if not 1 <= self.slot <= 254:
            raise ValueError(f"process slot {self.slot!r} is not in 1..254")
        self._lock = threading.Lock()
        self._held: set[int] = set()

    def block(self) -> AddressBlock:
        """Reserve the lowest free world slot.

        Raises:
            WorldError: 256 worlds are alive in this process already.
        """
        with self._lock:
            free = next((w for w in range(256) if w not in self._held), None)
            if free is None:
                raise WorldError(f"all 256 loopback blocks of 127.{self.slot}.0.0/16 are in use")
            self._held.add(free)
        return AddressBlock(f"127.{self.slot}.{free}", lambda: self._free(free))

    def _free(self, world: int) -> None:
        with self._lock:
            self._held.discard(world)

    @property
    def in_use(self) -> int:
        """How many blocks are held."""
        return len(self._held)


#: The allocator worlds use unless given another.
DEFAULT_ALLOCATOR = LoopbackAllocator()
