"""Rootless black-box runs: a user + network namespace that an unprivileged user makes.

Theory of operation
-------------------
As root, :class:`~harness.netns.Namespace` uses ``ip netns``. Without root, where the
kernel allows unprivileged user namespaces, it starts the black-box child with::

    unshare --map-current-user --keep-caps --net --mount --pid --fork --kill-child \\
        --mount-proc  python -m harness.userns ETC_DIR -- COMMAND...

* ``--map-current-user``: the caller's own id maps to itself, the only id there is
  inside. An MTA that must switch to another user (Postfix's ``mail_owner``) cannot
  run; its profile says ``rootless = false`` and why (``rootless_needs``). chasquid
  runs as the caller. A profile's ``rootless_user`` maps the caller's id to that
  user's instead (``--map-user``): Exim logs properly only when run by its own user.
* ``--keep-caps``: the capabilities the new user namespace grants (over its own
  network and mount namespaces only) stay as ambient ones for the caller's id, so
  the child may bring ``lo`` up, bind 25/53/443, load the nftables DNAT table and
  flush connection tracking, like root in an ``ip netns``;
* ``--mount``: :func:`main` (this module, run inside, before the command) bind-mounts
  ``ETC_DIR/resolv.conf`` and ``hosts`` over ``/etc``'s, as ``ip netns exec`` does;
* ``--pid --fork --kill-child``: the command is the namespace's init; when it ends,
  or the ``unshare`` above it is killed, the kernel ends every process inside. No
  MTA outlives a rootless run, and there is nothing to sweep.

:func:`main` marks the environment with :data:`NETNS_ENV` =
``sts-userns-<inode of the network namespace>``, which
:func:`~harness.netns.current_namespace` believes only when the inode is the
caller's own network namespace's.

:func:`probe` says whether this machine allows it, in words fit for a skip reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NETNS_ENV", "UNSHARE", "argv", "main", "mapping", "marker", "probe"]

#: The environment variable naming the network namespace a process runs in (set here
#: for a rootless namespace, by :mod:`harness.netns` for a named one).
NETNS_ENV = "STS_HARNESS_NETNS"

#: The ``unshare`` command line before the bootstrap (see the module docstring).
UNSHARE = (
    "unshare",
    "--keep-caps",
    "--net",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
)
_TIMEOUT = 10.0
_PROBE_TABLE = "table ip probe { chain o { type nat hook output priority -100; policy accept; }; }"


def marker() -> str:
    """The :data:`NETNS_ENV` value naming this process's network namespace."""
    return f"sts-userns-{os.stat('/proc/self/ns/net').st_ino}"


def mapping(user: str | None = None) -> list[str]:
    """The ``unshare`` options that map the caller's id: to itself, or to ``user``'s ids.

    ``user``: for an MTA that trusts its compiled-in user only (Exim keeps writing its
    own log, with message ids, after ``-C`` only when its caller is that user).

    Raises:
        KeyError: no such user here.
    """
    if user is None:
        return ["--map-current-user"]
    pw = pwd.getpwnam(user)
    return [f"--map-user={pw.pw_uid}", f"--map-group={pw.pw_gid}"]


def argv(etc_dir: Path, command: Sequence[str], user: str | None = None) -> list[str]:
    """``command`` prefixed so that it runs in a fresh rootless namespace, as ``user``
    (default: the caller's own ids; see :func:`mapping`)."""
    return [
        *UNSHARE[:1],
        *mapping(user),
        *UNSHARE[1:],
        sys.executable,
        "-m",
        "harness.userns",
        str(etc_dir),
        "--",
        *command,
    ]


def probe() -> str:
    """Why rootless namespaces cannot be used here ("" when they can).

    Checks ``unshare``, ``ip`` and ``nft`` are installed, then makes one namespace
    and loads a NAT table in it (the kernel may forbid unprivileged user namespaces:
    ``kernel.unprivileged_userns_clone=0``, AppArmor's ``restrict_unprivileged_userns``).
    """
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` ({package}) for rootless runs"
    script = f"ip link set lo up && nft '{_PROBE_TABLE}'"
    try:
        done = subprocess.run(
            [*UNSHARE[:1], *mapping(), *UNSHARE[1:], "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return "unprivileged user namespaces: `unshare` did not finish"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"unprivileged user namespaces do not work here: {why}"
    return ""


def _bind(source: Path, target: str) -> None:
    subprocess.run(
        ["mount", "--bind", str(source), target], check=True, capture_output=True, timeout=_TIMEOUT
    )


def main(args: Sequence[str] | None = None) -> int:
    """Inside the namespace: ``lo`` up, ``/etc`` files bound, then exec the command.

    ``args``: ``ETC_DIR -- COMMAND...``. Exits 125 (as ``env`` does) when the set-up
    fails, with one line on stderr.
    """
    rest = list(sys.argv[1:] if args is None else args)
    if len(rest) < 3 or rest[1] != "--":
        print("usage: python -m harness.userns ETC_DIR -- COMMAND...", file=sys.stderr)
        return 2
    etc, command = Path(rest[0]), rest[2:]
    try:
        subprocess.run(
            ["ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=_TIMEOUT
        )
        for name in ("resolv.conf", "hosts"):
            if (etc / name).exists():
                _bind(etc / name, f"/etc/{name}")
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        print(f"harness.userns: set-up failed: {exc} {err.decode(errors='replace')}".strip(),
              file=sys.stderr)  # fmt: skip
        return 125
    env = dict(os.environ)
    env[NETNS_ENV] = marker()
    os.execvpe(command[0], command, env)
    return 125  # not reached


if __name__ == "__main__":
    sys.exit(main())
