"""The peer's certificate chain, as sent, from a live TLS connection.

DANE-TA (RFC 7672 §3.1.2) and verification at the engine's clock need the
whole chain the server sent, not only the leaf. Python exposes it publicly
from 3.13 (``SSLSocket.get_unverified_chain``); on 3.11 and 3.12 the same
call exists on the private ``_sslobj``. This module is the one place that
knows, so the rest of the engine never touches private attributes.
"""

from __future__ import annotations

import ssl

__all__ = ["peer_chain_der"]

# _ssl.ENCODING_DER is 2 (ENCODING_PEM is 1, which returns a str, not bytes).
_DER = 2


def peer_chain_der(conn: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The certificates the peer sent, leaf first, as DER.

    Args:
        conn: an established TLS connection (``SSLObject`` from asyncio, or ``SSLSocket``).

    Returns:
        The chain as sent (possibly only the leaf); empty if the peer sent none.
    """
    public = getattr(conn, "get_unverified_chain", None)
    if public is not None:  # Python >= 3.13
        chain = public()
        return [bytes(c) if isinstance(c, bytes) else _der(c) for c in chain or ()]
    inner = getattr(conn, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        leaf = conn.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    return [_der(c) for c in getter() or ()]


def _der(cert: object) -> bytes:
    data = cert.public_bytes(_DER)  # type: ignore[attr-defined]
    assert isinstance(data, bytes)
    return data
