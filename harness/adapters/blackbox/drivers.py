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

import os
import pwd
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.adapters.blackbox.profile import EngineProfile
from harness.world.world import World

__all__ = ["DRIVERS", "Driver", "Parsed", "driver_for"]

_STATUS = {"sent": "delivered", "delivered": "delivered", "deferred": "deferred"}
_STATUS |= {"bounced": "bounced", "failed": "bounced", "expired": "bounced"}
_STATUS |= {"temporary": "deferred", "permanent": "bounced"}


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
            return [Parsed(rule.code, fields, level)]
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


DRIVERS: dict[str, type[Driver]] = {
    "postfix": PostfixDriver,
    "chasquid": ChasquidDriver,
}


def driver_for(profile: EngineProfile) -> Driver:
    """A fresh driver for ``profile``."""
    return DRIVERS[profile.driver](profile)
