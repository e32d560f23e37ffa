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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type

__all__ = ["AuthMechanisms", "Users", "UsersFileError", "hash_password", "load_users"]

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


class AuthMechanisms:
    """AUTH PLAIN (RFC 4616) and LOGIN for aiosmtpd, checked against :attr:`Users`.

    aiosmtpd runs the exchange (``334`` challenges, base64, ``*`` to abort) through
    ``server.challenge_auth``, which answers a bad reply itself; we decode the
    credentials and check them in a worker thread.

    Args:
        owner: has ``users`` (the :class:`Users`, or None) and ``_emit`` (events).
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    async def plain(self, server: Any, args: list[str]) -> AuthResult:
        """``AUTH PLAIN [initial-response]``: ``authzid NUL authcid NUL password``."""
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
            # The hash is slow on purpose: never on the event loop.
            ok = await asyncio.to_thread(users.verify, name, secret)
        self.owner._emit(
            "listener.auth",
            "info" if ok else "warning",
            icid=server.icid,
            mechanism=mechanism,
            user=name or "?",
            result="ok" if ok else "failed",
        )
        if not ok:
            return AuthResult(success=False, handled=False)  # aiosmtpd: 535 5.7.8
        return AuthResult(success=True, auth_data=LoginPassword(user, b""))
