"""What differs between real MTAs beyond their profile: set-up, log reading, outcomes.

Theory of operation
-------------------
The adapter (:mod:`harness.adapters.blackbox.adapter`) turns every log line into zero or
more :class:`Parsed` events with :meth:`Driver.parse`, and settles a recipient
when an ``outcome`` event (fields ``qid``, ``rcpt``, ``status`` in
``delivered|deferred|bounced``, optional ``mx``, ``reason``, ``proc``) names it.
A driver adds, per MTA family:

* ``prepare``: files and directories the templates cannot make (Postfix's queue
  owned by ``postfix``; chasquid's certificate and submission user), and extra
  template values;
* ``parse``: the profile's regex log map;
* outcome normalisation: Postfix's ``status=sent`` is ``delivered``.

Our own gateway is not a black box here: :mod:`harness.adapters.process` runs
``sts-engine serve`` as a process without a namespace, judged on its own events.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.adapters.base import AdapterError
from harness.adapters.blackbox.profile import EngineProfile
from harness.world.world import World

__all__ = ["DRIVERS", "EXIM_USER", "Driver", "Parsed", "driver_for"]

#: The user Exim delivers as when the harness runs as root (Debian's exim4-base makes it).
EXIM_USER = "Debian-exim"

_STATUS = {"sent": "delivered", "delivered": "delivered", "deferred": "deferred"}
_STATUS |= {"bounced": "bounced", "failed": "bounced", "expired": "bounced"}
_STATUS |= {"temporary": "deferred", "permanent": "bounced"}
# Exim's log flags; `->` is a further recipient delivered in the same transaction.
_STATUS |= {"=>": "delivered", "->": "delivered", "==": "deferred", "**": "bounced"}


@dataclass(frozen=True, slots=True)
class Parsed:
    """One event read from a log line."""

    code: str
    fields: Mapping[str, Any]
    level: str = "info"


@dataclass(slots=True)
class Driver:
    """The default driver: the profile's regex log map (see the module docstring)."""

    profile: EngineProfile
    state: dict[str, Any] = field(default_factory=dict)
    #: The template values :meth:`prepare` adds (``sts-harness profile check`` knows them).
    placeholders: ClassVar[tuple[str, ...]] = ()

    def prepare(self, instance: Path, world: World, sender: Mapping[str, Any]) -> dict[str, str]:
        """Make what the templates need; returns extra template values."""
        return {}

    def settle(
        self, qid: str, rcpts: Sequence[str], events: Sequence[Parsed]
    ) -> dict[str, Mapping[str, Any]]:
        """Recipients of submission ``qid`` settled so far: rcpt -> outcome fields."""
        out: dict[str, Mapping[str, Any]] = {}
        for e in events:
            if e.code == "outcome" and e.fields.get("qid") == qid:
                out.setdefault(str(e.fields.get("rcpt", "")).lower(), e.fields)
        return out

    def parse(self, stream: str, line: str) -> list[Parsed]:
        """Events from one log line (the first matching rule wins)."""
        for rule in self.profile.log:
            m = rule.match.search(line)
            if m is None:
                continue
            fields = {k: v for k, v in m.groupdict().items() if v is not None}
            if rule.code == "outcome":
                fields["status"] = _STATUS.get(fields.get("status", ""), fields.get("status"))
                fields["rcpt"] = fields.get("rcpt", "").lower()
            level = "warning" if rule.code.endswith(("warning", "failed")) else "info"
            out = [Parsed(rule.code, fields, level)]
            if rule.code == "outcome" and "trust" in fields:
                # One line says both (Exim's `=> ... CV=dane`): the session's trust too.
                keys = ("qid", "rcpt", "mx", "trust", "proc")
                tls: dict[str, Any] = {k: fields[k] for k in keys if k in fields}
                out.append(Parsed("tls.established", tls))
            return out
        return []


class PostfixDriver(Driver):
    """Postfix: the queue directory tree belongs to ``postfix``; data likewise."""

    def prepare(self, instance: Path, world: World, sender: Mapping[str, Any]) -> dict[str, str]:
        """Create ``queue/`` (root) and ``data/`` (postfix); ``postfix start`` fills them."""
        (instance / "queue").mkdir(mode=0o755, exist_ok=True)
        data = instance / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        return {}


class ChasquidDriver(Driver):
    """chasquid: a certificate for its own name, a submission user, its domain dirs."""

    def prepare(self, instance: Path, world: World, sender: Mapping[str, Any]) -> dict[str, str]:
        """Write ``certs/<hostname>/``, ``domains/<sender domain>/users``, data dirs."""
        hostname = "sender.harness.test"
        cert = world.certs.issue(hostname, profile="valid")
        certdir = instance / "certs" / hostname
        certdir.mkdir(parents=True, exist_ok=True)
        (certdir / "fullchain.pem").write_bytes(cert.chain_pem)
        (certdir / "privkey.pem").write_bytes(cert.private_key_pem)
        for sub in ("domains/harness.test", "data", "queue"):
            (instance / sub).mkdir(parents=True, exist_ok=True)
        chasquid_util = shutil.which("chasquid-util") or "chasquid-util"
        self.state["users_cmd"] = [
            chasquid_util,
            f"--configdir={instance}",
            "user-add",
            "submit@harness.test",
            "--password=harness",
        ]
        return {}


class EximDriver(Driver):
    """Exim: its spool, its own path (it re-executes itself) and the user it delivers as."""

    placeholders = ("exim_path", "exim_user", "exim_group")

    def prepare(self, instance: Path, world: World, sender: Mapping[str, Any]) -> dict[str, str]:
        """Create ``spool/`` and the log files, owned by the user Exim delivers as.

        Exim refuses to deliver as root (Debian builds it with FIXED_NEVER_USERS=root):
        as root it delivers as ``Debian-exim``; unprivileged (a rootless run, where only
        the caller's own id exists) it runs and delivers as the caller. ``exim_path``
        is the binary found on PATH: Exim re-executes itself by that path, and the
        compiled-in one may not be where it is (scripts/install-blackbox.sh).

        Raises:
            AdapterError: root, and no ``Debian-exim`` user.
        """
        if os.getuid() == 0:
            try:
                pw = pwd.getpwnam(EXIM_USER)
            except KeyError:
                raise AdapterError(
                    f"{self.profile.name}: no user {EXIM_USER!r} (scripts/install-blackbox.sh)"
                ) from None
        else:
            pw = pwd.getpwuid(os.getuid())
        spool = instance / "spool"
        spool.mkdir(mode=0o750, exist_ok=True)
        for path in (spool, *(instance / f"{k}log" for k in ("main", "panic", "reject"))):
            path.touch(mode=0o640)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        return {
            "exim_path": shutil.which("exim4") or shutil.which("exim") or "exim4",
            "exim_user": pw.pw_name,
            "exim_group": grp.getgrgid(pw.pw_gid).gr_name,
        }


DRIVERS: dict[str, type[Driver]] = {
    "postfix": PostfixDriver,
    "chasquid": ChasquidDriver,
    "exim": EximDriver,
    "generic": Driver,
}


def driver_for(profile: EngineProfile) -> Driver:
    """A fresh driver for ``profile``."""
    return DRIVERS[profile.driver](profile)
