"""SMTP AUTH users for the injection listener: a users file of Argon2id hashes.

Theory of operation
-------------------
``[listener] users_file`` names a text file with one user a line::

    # name:hash (the hash from `sts-engine users hash NAME`)
    app1:$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$...

The hashes are Argon2id (RFC 9106) in the PHC string format, made and checked by
``argon2-cffi`` (a well-kept binding of the reference implementation): a slow,
memory-hard hash, so a stolen file is expensive to attack. Its parameters travel in
each hash, so raising the cost later needs no change here. ``bcrypt`` was the other
candidate; it truncates or refuses passwords past 72 bytes and is not memory-hard.

Checking a password costs tens of milliseconds of CPU by design, so the listener runs
:meth:`Users.verify` in a worker thread (never on the event loop). An unknown user is
checked against a fixed hash, so the time of an answer does not say which names exist.

Guessing passwords
------------------
Three limits make guessing slow and cheap to refuse (docs/hardening.md):

* a session that fails ``max_auth_failures`` times is closed with ``421 4.7.0``
  (RFC 5321 §3.8: a server that ends the session says 421 first);
* a client address that failed ``max_auth_failures_per_client`` times within
  ``auth_failure_window`` seconds gets ``454 4.7.0`` to every AUTH until the window
  has moved past its failures, and no password of it is checked meanwhile
  (:class:`AuthThrottle`; RFC 4954 §6 gives 454 4.7.0 for a temporary failure);
* at most ``max_auth_checks`` passwords are hashed at once: each Argon2id check takes
  its memory cost (64 MiB by default), so a burst of AUTH commands waits its turn
  rather than taking the machine's memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type

from engine.config import ListenerConfig

__all__ = [
    "AuthMechanisms",
    "AuthThrottle",
    "Users",
    "UsersFileError",
    "hash_password",
    "load_users",
]

_HASHER = PasswordHasher(type=Type.ID)
# Verified against when the user is unknown, so that both paths cost the same.
_DUMMY = _HASHER.hash("not a password of anyone")


class UsersFileError(Exception):
    """The users file cannot be used: one line naming the file, the line and the rule."""


@dataclass(frozen=True, slots=True)
class Users:
    """The users allowed to AUTH: name -> Argon2id hash.

    Attributes:
        source: the file they came from (for messages).
        hashes: user name -> PHC hash string.
    """

    source: str
    hashes: dict[str, str]

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (slow by design: call it off the loop)."""
        stored = self.hashes.get(name)
        try:
            ok = _HASHER.verify(stored if stored is not None else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            return False
        # hmac.compare_digest: a constant-time "is this a known name".
        return ok and stored is not None and hmac.compare_digest(stored, self.hashes[name])


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` with argon2-cffi's default (RFC 9106) cost."""
    return _HASHER.hash(password)


def load_users(path: Path) -> Users:
    """Read a users file.

    Raises:
        UsersFileError: unreadable, a line without ``name:hash``, a hash that is not
            Argon2id, or a name given twice.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise UsersFileError(f"{path}: cannot read the users file ({reason})") from None
    hashes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        where = f"{path}:{number}"
        if not sep or not name or any(c.isspace() for c in name):
            raise UsersFileError(f"{where}: expected 'name:hash', got {line[:40]!r}")
        if not stored.startswith("$argon2id$"):
            raise UsersFileError(
                f"{where}: the hash of {name!r} is not Argon2id "
                "(make one with `sts-engine users hash NAME`)"
            )
        if name in hashes:
            raise UsersFileError(f"{where}: user {name!r} is listed twice")
        hashes[name] = stored
    if not hashes:
        raise UsersFileError(f"{path}: the users file lists no user")
    return Users(str(path), hashes)


class AuthThrottle:
    """Failed AUTH attempts per client address within a sliding window (sans-IO).

    Args:
        limit: failures within ``window`` after which the client is refused.
        window: seconds a failure counts for.
        max_clients: addresses remembered at most; past it the one whose last failure
            is oldest is forgotten (a flood of addresses cannot grow the table without end).
    """

    def __init__(self, limit: int, window: float, *, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, client: str, now: float) -> collections.deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def blocked(self, client: str, now: float) -> bool:
        """Whether ``client`` has used up its failures for now."""
        times = self._recent(client, now)
        return times is not None and len(times) >= self.limit

    def failed(self, client: str, now: float) -> bool:
        """Count a failure of ``client``; True when it has just become blocked."""
        times = self._recent(client, now)
        if times is None:
            if len(self._failures) >= self.max_clients:
                # The table is in order of last failure: the first is the oldest.
                del self._failures[next(iter(self._failures))]
            times = self._failures[client] = collections.deque()
        else:
            del self._failures[client]  # re-inserted: the table stays in recency order
            self._failures[client] = times
        times.append(now)
        while len(times) > self.limit:
            times.popleft()  # only the last ``limit`` failures matter
        return len(times) >= self.limit

    def __len__(self) -> int:
        return len(self._failures)


class AuthMechanisms:
    """AUTH PLAIN (RFC 4616) and LOGIN for aiosmtpd, checked against :attr:`Users`.

    aiosmtpd runs the exchange (``334`` challenges, base64, ``*`` to abort) through
    ``server.challenge_auth``, which answers a bad reply itself; we decode the
    credentials and check them in a worker thread.

    Args:
        owner: the listener: ``users`` (the :class:`Users`, or None), ``config`` (the
            limits), ``clock``, ``hostname`` and ``_emit`` (events).
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        cfg = owner.config
        self.throttle = AuthThrottle(cfg.max_auth_failures_per_client, cfg.auth_failure_window)
        self._checks = asyncio.Semaphore(cfg.max_auth_checks)
        self._checks_size = cfg.max_auth_checks

    def configure(self, config: ListenerConfig) -> None:
        """Take the limits of a (re)loaded ``[listener]``; the failures counted stay."""
        self.throttle.limit = config.max_auth_failures_per_client
        self.throttle.window = config.auth_failure_window
        if config.max_auth_checks != self._checks_size:
            # Checks running keep the old semaphore; new ones wait on the new one.
            self._checks = asyncio.Semaphore(config.max_auth_checks)
            self._checks_size = config.max_auth_checks

    async def _refused(self, server: Any) -> bool:
        """Refuse the exchange before it starts if the client used up its failures.

        Its password is then not checked at all: a blocked guesser costs no hash.
        """
        if not self.throttle.blocked(server.client, self.owner.clock.now()):
            return False
        reason = f"too many failed AUTH attempts from {server.client}"
        self.owner._emit("listener.auth.refused", "warning", icid=server.icid, reason=reason)
        # RFC 4954 §6: 454 4.7.0 "Temporary authentication failure".
        await server.push(
            f"454 4.7.0 Too many failed AUTH attempts from {server.client}, try again later"
        )
        return True

    async def plain(self, server: Any, args: list[str]) -> AuthResult:
        """``AUTH PLAIN [initial-response]``: ``authzid NUL authcid NUL password``."""
        if await self._refused(server):
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Cannot decode the base64 response")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        # RFC 4616 §2: an authorization identity, if given, must be the user itself here
        # (we do not let one user act as another).
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            await server.push("501 5.5.2 Malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._check(server, "PLAIN", parts[1], parts[2])

    async def login(self, server: Any, args: list[str]) -> AuthResult:
        """``AUTH LOGIN [user]``: user and password, each in answer to a ``334``."""
        if await self._refused(server):
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            user = await server.challenge_auth("Username:")
            if user is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                user = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Cannot decode the base64 response")
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._check(server, "LOGIN", user, password)

    async def _check(self, server: Any, mechanism: str, user: bytes, password: bytes) -> AuthResult:
        users: Users | None = self.owner.users
        try:
            name, secret = user.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            name, secret = "", ""
        ok = False
        if users is not None and name and secret:
            # The hash is slow and memory-hard on purpose: never on the event loop, and
            # only max_auth_checks at once.
            async with self._checks:
                ok = await asyncio.to_thread(users.verify, name, secret)
        owner = self.owner
        owner._emit(
            "listener.auth",
            "info" if ok else "warning",
            icid=server.icid,
            mechanism=mechanism,
            user=name or "?",
            result="ok" if ok else "failed",
        )
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(user, b""))
        cfg = owner.config
        server.auth_failures += 1
        if self.throttle.failed(server.client, owner.clock.now()):
            owner._emit(
                "listener.auth.blocked",
                "warning",
                address=server.client,
                failures=cfg.max_auth_failures_per_client,
                window=cfg.auth_failure_window,
            )
        if server.auth_failures >= cfg.max_auth_failures:
            owner._emit(
                "listener.auth.refused",
                "warning",
                icid=server.icid,
                reason=f"{server.auth_failures} failed AUTH attempts in the session",
            )
            # RFC 5321 §3.8: the server that ends a session replies 421 first.
            await server.push(f"421 4.7.0 {owner.hostname} Too many failed AUTH attempts, closing")
            server.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)  # aiosmtpd: 535 5.7.8
