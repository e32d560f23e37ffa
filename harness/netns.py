"""Network namespaces for black-box runs: create, enter (by re-exec), probe, destroy.

Theory of operation
-------------------
A real MTA dials port 25 of the addresses DNS gives it and reads ``/etc/resolv.conf``;
it cannot be told about port maps. So a black-box run happens inside a network
namespace of its own, where nothing else listens: :class:`Namespace` creates one
with a name unique to this process and run (``sts-<pid>-<random>``), brings its
``lo`` up (the whole 127.0.0.0/8 is then bindable, as in the root namespace) and
writes ``/etc/netns/NAME/resolv.conf``, which ``ip netns exec`` bind-mounts over
``/etc/resolv.conf`` for the process it starts and all its children::

    nameserver 127.0.0.53
    options trust-ad timeout:1 attempts:2

``trust-ad`` makes glibc's stub pass the AD bit through (Postfix DANE needs it);
the short timeout keeps DNS-fault scenarios fast. ``127.0.0.53:53`` is routed to
the world's fake DNS by :mod:`harness.world.ports`.

Without root, where unprivileged user namespaces work, the same class makes a user +
network namespace instead (:mod:`harness.userns`: ``unshare``, the ``/etc`` files in
a temporary directory, a pid namespace that ends everything inside with the run);
:attr:`Probe.rootless` says which kind this machine gets.

Python 3.11 has no ``os.setns``, so code runs inside by being *started* inside:
:meth:`Namespace.argv` prefixes ``ip netns exec NAME``. The harness re-executes its
own worker (:mod:`harness.run.batch.child`) that way; the world, the MTA
under test and its helpers then all share the namespace.

Cleanup: ``__exit__`` always deletes the namespace and its ``/etc/netns`` directory,
also after a failure half-way through ``__enter__``. Deleting the namespace kills
nothing by itself, so callers stop their processes first (the child does, in its
own ``finally``); a process left behind keeps only an empty, unreachable loopback.
:func:`sweep_stale` removes namespaces of ours whose creating process is gone
(a ``kill -9`` of a test worker), by the pid in the name. :func:`flush_conntrack`
empties the namespace's connection tracking between worlds (a stale NAT mapping
sends a reused source port to the previous world's closed DNS port).

:func:`probe` says whether black-box runs can happen here at all, and if not, why,
in words fit for a pytest skip reason (STYLE habit 20).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness import userns
from harness.errors import HarnessError

__all__ = [
    "NETNS_ENV",
    "RESOLV_CONF",
    "ROOTLESS_ENV",
    "Namespace",
    "NamespaceError",
    "Probe",
    "current_namespace",
    "flush_conntrack",
    "probe",
    "rootless_mode",
    "sweep_stale",
]

#: Set in the environment of processes started by :meth:`Namespace.argv`: the name.
NETNS_ENV = userns.NETNS_ENV
#: What the namespace's resolv.conf says (the world's DNS answers 127.0.0.53:53).
RESOLV_CONF = "nameserver 127.0.0.53\noptions trust-ad timeout:1 attempts:2\n"
_PREFIX = "sts-"
_NAME = re.compile(r"^sts-(\d+)-[0-9a-f]{6}$")
_USERNS_NAME = re.compile(r"^sts-userns-\d+$")
_NETNS_ETC = Path("/etc/netns")
_TIMEOUT = 10.0


class NamespaceError(HarnessError):
    """A namespace could not be created, entered or removed."""


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=_TIMEOUT)
    except FileNotFoundError as exc:
        raise NamespaceError("`ip` (iproute2) is not installed") from exc
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip()
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {err}") from exc


class Namespace:
    """A fresh network namespace (context manager); see the module docstring.

    The name is ``sts-<pid>-<6 hex>``: unique per run, and the pid lets
    :func:`sweep_stale` find namespaces whose creator died.

    Args:
        rootless: make a user + network namespace (:mod:`harness.userns`) instead of
            an ``ip netns`` one; default: :func:`rootless_mode`.
        user: rootless only: the user the caller is inside (a profile's
            ``rootless_user``); default: the caller's own ids.

    Raises:
        NamespaceError: ``ip netns add`` failed (not root, no ``ip``).

    Example::

        with Namespace() as ns:
            subprocess.run(ns.argv(["ip", "addr"]), check=True)
    """

    def __init__(self, *, rootless: bool | None = None, user: str | None = None) -> None:
        self.name = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.rootless = rootless_mode() if rootless is None else rootless
        self.user = user
        self._made = False
        self._etc: Path | None = None

    @property
    def etc_dir(self) -> Path:
        """Files bind-mounted over ``/etc`` inside: ``/etc/netns/NAME``, or (rootless)
        a temporary directory of ours."""
        if self.rootless:
            if self._etc is None:
                self._etc = Path(tempfile.mkdtemp(prefix=f"{self.name}-etc-"))
            return self._etc
        return _NETNS_ETC / self.name

    def __enter__(self) -> Namespace:
        try:
            if not self.rootless:  # a rootless one exists while its command runs
                _ip("netns", "add", self.name)
                self._made = True
                _ip("-n", self.name, "link", "set", "lo", "up")
            self.etc_dir.mkdir(parents=True, exist_ok=True)
            (self.etc_dir / "resolv.conf").write_text(RESOLV_CONF, encoding="ascii")
            # Names the harness's own hosts by nothing: MTAs resolve through DNS only.
            (self.etc_dir / "hosts").write_text(
                "127.0.0.1 localhost\n::1 localhost\n", encoding="ascii"
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill what still runs inside, delete the namespace and its ``/etc/netns`` directory.

        Every process inside was started by us (through :meth:`argv`), so the safety
        net may end them by pid: a child killed before its ``finally`` ran leaves its
        MTA behind otherwise. Idempotent. (Rootless, the kernel does this: the pid
        namespace ends with the command; only the temporary ``/etc`` files are ours.)
        """
        if self.rootless:
            if self._etc is not None:
                shutil.rmtree(self._etc, ignore_errors=True)
                self._etc = None
            return
        shutil.rmtree(self.etc_dir, ignore_errors=True)
        if self._made:
            self._made = False
            self.kill_inside()
            _remove(self.name)

    def kill_inside(self) -> list[int]:
        """SIGKILL every process in the namespace (``ip netns pids``); their pids."""
        try:
            out = subprocess.run(
                ["ip", "netns", "pids", self.name],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            ).stdout
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return []
        pids = [int(p) for p in out.split() if p.isdigit()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` prefixed so that it runs inside (``ip netns exec NAME ...``).

        Rootless, each call makes a namespace of its own (``unshare``), which ends
        with the command: start one command (the black-box child) per instance.
        """
        if self.rootless:
            return userns.argv(self.etc_dir, command, self.user)
        return ["ip", "netns", "exec", self.name, *command]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: ``os.environ``) plus :data:`NETNS_ENV` = the name."""
        env = dict(os.environ if base is None else base)
        env[NETNS_ENV] = self.name
        return env


def _remove(name: str) -> None:
    with contextlib.suppress(NamespaceError):  # already gone (a concurrent sweep)
        _ip("netns", "del", name)


def current_namespace() -> str | None:
    """The name of the namespace of ours this process runs in, or None.

    Trusts :data:`NETNS_ENV` only when ``ip netns identify`` agrees (rootless: when it
    names this process's own network namespace by inode, :func:`harness.userns.marker`),
    so a stray environment variable never makes code believe it is isolated when it
    is not.
    """
    name = os.environ.get(NETNS_ENV)
    if name and _USERNS_NAME.match(name):
        # Ours, and isolated: nothing but a loopback (the host always has more).
        alone = [n for _, n in socket.if_nameindex()] == ["lo"]
        return name if alone and name == userns.marker() else None
    if not name or not _NAME.match(name):
        return None
    try:
        out = subprocess.run(
            ["ip", "netns", "identify", str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        ).stdout.split()
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return name if name in out else None


#: Netlink: NETLINK_NETFILTER, its ctnetlink subsystem and "delete" (no attributes: all).
_NETLINK_NETFILTER, _CTNETLINK, _CT_DELETE = 12, 1, 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLMSG_ERROR = 1, 4, 2


def flush_conntrack() -> None:
    """Forget every IPv4 connection-tracking entry of the namespace this process is in.

    A NAT mapping lives in its conntrack entry, not in the table: after the DNAT
    table changes (a new world, its DNS on a new port), a query that reuses the source
    port of one made shortly before (UDP entries live 30 s) still goes to the old,
    closed port, and the resolver fails at once ("Host not found, try again"). The
    black-box child calls this between worlds. One ctnetlink message, written here
    rather than pulling in a netlink library for it (no attributes means "all").

    Raises:
        NamespaceError: not inside a harness namespace (the host's table is never
            touched), or the kernel refused.
    """
    if current_namespace() is None:
        raise NamespaceError("refusing to flush connection tracking outside a harness namespace")
    body = struct.pack("=BBH", socket.AF_INET, 0, 0)  # nfgenmsg: family, version, res_id
    header = struct.pack(
        "=IHHII", 16 + len(body), (_CTNETLINK << 8) | _CT_DELETE, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0
    )
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as s:
            s.bind((0, 0))
            s.send(header + body)
            reply = s.recv(4096)
    except OSError as exc:
        raise NamespaceError(f"connection tracking could not be flushed: {exc}") from exc
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
    error = struct.unpack_from("=i", reply, 16)[0] if kind == _NLMSG_ERROR else 0
    if error and error != -errno.ENOENT:  # ENOENT: there was nothing to flush
        raise NamespaceError(f"connection tracking could not be flushed: {os.strerror(-error)}")


def sweep_stale(names: Iterable[str] | None = None) -> list[str]:
    """Delete namespaces named ``sts-<pid>-...`` whose pid no longer runs.

    Args:
        names: the namespaces to consider (default: ``ip netns list``).

    Returns:
        The names removed (none without root: rootless namespaces end with their run).
    """
    if rootless_mode():
        return []
    if names is None:
        try:
            out = subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, check=False
            ).stdout
        except FileNotFoundError:
            return []
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
    removed = []
    for name in names:
        m = _NAME.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            ns = Namespace.__new__(Namespace)
            ns.name = name
            ns.kill_inside()  # what a killed run left running in there
            _remove(name)
            shutil.rmtree(_NETNS_ETC / name, ignore_errors=True)
            removed.append(name)
    return removed


@dataclass(frozen=True, slots=True)
class Probe:
    """What this machine can do for black-box runs.

    Attributes:
        netns: namespaces can be made and entered here.
        nat: the namespace's standard-port DNAT works (``nft`` is installed).
        reason: why not, when ``netns`` or ``nat`` is False ("" otherwise).
        rootless: the namespaces are unprivileged user namespaces (not root): only
            profiles with ``rootless = true`` can run.
    """

    netns: bool
    nat: bool
    reason: str = ""
    rootless: bool = False

    @property
    def ok(self) -> bool:
        """Both namespaces and their port routing work."""
        return self.netns and self.nat


_PROBED: dict[bool, Probe] = {}
#: Set to 1 to make rootless namespaces even as root (to test that path, or by choice).
ROOTLESS_ENV = "STS_HARNESS_ROOTLESS"


def rootless_mode() -> bool:
    """Black-box namespaces here are rootless ones: not root, or :data:`ROOTLESS_ENV` is 1."""
    return os.geteuid() != 0 or os.environ.get(ROOTLESS_ENV) == "1"


def probe(*, refresh: bool = False) -> Probe:
    """Can black-box runs happen here? (cached per process; ``refresh`` re-probes).

    Checks, in order: root (else, or with :data:`ROOTLESS_ENV`, a rootless user
    namespace: :func:`harness.userns.probe`),
    ``ip`` installed, a namespace can be made and entered, ``nft`` installed and
    accepted inside it. The first failure is the reason.
    """
    mode = rootless_mode()
    if mode not in _PROBED or refresh:
        _PROBED[mode] = _probe(mode)
    return _PROBED[mode]


def _probe(rootless: bool) -> Probe:
    if rootless:
        why = userns.probe()
        if why:
            return Probe(False, False, f"black-box runs need root, or {why}", rootless=True)
        return Probe(True, True, rootless=True)
    if shutil.which("ip") is None:
        return Probe(False, False, "`ip` (iproute2) is not installed")
    if shutil.which("nft") is None:
        return Probe(True, False, "`nft` is not installed (scripts/install-blackbox.sh)")
    try:
        with Namespace() as ns:
            table = (
                "table ip probe { chain o { type nat hook output priority -100; policy accept; }; }"
            )
            done = subprocess.run(
                ns.argv(["nft", table]), capture_output=True, text=True, timeout=_TIMEOUT
            )
    except NamespaceError as exc:
        return Probe(False, False, f"`ip netns` does not work here: {exc}")
    if done.returncode != 0:
        return Probe(True, False, f"nft NAT is unavailable in a namespace: {done.stderr.strip()}")
    return Probe(True, True)
