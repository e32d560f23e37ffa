"""Work-arounds for bugs of the CPython releases the project supports (3.11.0 and later).

Imported by ``engine/__init__.py``, so they are in place in every process that imports
any of the engine, the harness's world included (it reads TOML with ``engine.core``).

``asyncio.sslproto`` of early 3.11 releases (Debian 12's stock 3.11.2 among them): an SSL
transport closed twice forgets its protocol (``close()`` sets ``_ssl_protocol`` to None),
and a later ``abort()`` raises ``AttributeError: 'NoneType' object has no attribute
'_abort'`` instead of doing nothing. Later 3.11 releases (3.11.7 here) check for None in
``abort()``; :func:`_fix_sslproto_abort` adds the same check where a probe shows the bug,
and touches nothing elsewhere (probed, not read from the version number).
"""

from __future__ import annotations

import asyncio.sslproto
from typing import Any

__all__ = ["SSLPROTO_ABORT_FIXED"]


def _abort_is_broken() -> bool:
    """Whether ``abort()`` on a transport that lost its protocol raises (the bug)."""
    cls: Any = asyncio.sslproto._SSLProtocolTransport
    probe = cls.__new__(cls)  # no loop, no socket: only the two attributes abort() reads
    probe._closed, probe._ssl_protocol = True, None
    try:
        probe.abort()
    except AttributeError:
        return True
    return False


def _fix_sslproto_abort() -> bool:
    """Make ``abort()`` of a transport without a protocol a no-op; True if it was needed."""
    if not _abort_is_broken():
        return False
    cls: Any = asyncio.sslproto._SSLProtocolTransport
    broken = cls.abort

    def abort(self: Any) -> None:
        if self._ssl_protocol is None:  # closed twice: nothing left to abort
            self._closed = True
            return
        broken(self)

    abort.__doc__ = broken.__doc__
    cls.abort = abort
    return True


SSLPROTO_ABORT_FIXED = _fix_sslproto_abort()
