"""Peers that cannot do TLS: the fake MX's ``broken-*`` STARTTLS modes, on the wire.

Theory of operation
-------------------
After the STARTTLS 220 a ``broken-*`` server never runs a TLS library. It reads the
client's first record (normally the ClientHello: a 5-byte record header, then its
body, RFC 8446 §5.1) so that a close afterwards is a FIN rather than an RST over
unread data, and then plays its part:

============================  ======================================================
mode                          what the client gets
============================  ======================================================
``broken-close``              a FIN
``broken-close-after-220``    a FIN before its ClientHello was even read
``broken-reset``              a TCP RST (the session aborts the socket, SO_LINGER 0)
``broken-garbage``            bytes that are no TLS record
``broken-stall``              nothing: the connection stays open until the client
                              gives up (its handshake timeout)
``broken-alert-*``            one fatal alert record (RFC 8446 §6; RFC 5246 §7.2),
                              then a FIN
``broken-chain-malformed``    a TLS 1.2 ServerHello, a Certificate message whose one
                              entry is not a certificate, ServerHelloDone
============================  ======================================================

Why hand-written records rather than a TLS library: the point of these modes is to
send what no correct TLS stack sends. Python's ``ssl`` cannot load a certificate
chain holding bytes that are not a certificate (``load_cert_chain`` parses every PEM
block), and a full pure-Python TLS implementation would have to be patched to do it.
The records needed are few and fixed by the RFCs: an alert is seven bytes; a TLS 1.2
ServerHello, Certificate and ServerHelloDone are sent in the clear (RFC 5246 §7.3),
so no key exchange or encryption is needed before the client gives up on the
certificate. The ServerHello echoes the client's session id, picks the first TLS 1.2
suite the client offered, and carries an empty ``renegotiation_info`` (RFC 5746 §3.6),
which OpenSSL 3 clients require of a TLS 1.2 server.

Whatever the client sends after our bytes (normally its own alert, or nothing) is
kept, up to 1 KiB, so the session can tell a client that fell back to clear text on
the same connection (docs/gateway-behaviour.md §1.1, the "220 boundary").
"""

from __future__ import annotations

import asyncio
import os

from harness.world.mta.script import MxStartTls

__all__ = ["ALERTS", "break_handshake", "is_tls_record", "server_hello_flight"]

# Not a TLS record: a client expecting a handshake record (content type 22)
# fails with "wrong version number" or "record layer failure".
_GARBAGE = b"220 this is not a ServerHello\r\n" * 4
_HANDSHAKE, _ALERT = 22, 21
_TLS12 = b"\x03\x03"
_FATAL = 2
#: The alert each ``broken-alert-*`` mode sends (RFC 8446 §6: AlertDescription).
ALERTS = {
    MxStartTls.BROKEN_ALERT_PROTOCOL_VERSION: 70,
    MxStartTls.BROKEN_ALERT_HANDSHAKE_FAILURE: 40,
    MxStartTls.BROKEN_ALERT_INTERNAL_ERROR: 80,
}
#: What the Certificate message carries instead of a DER certificate.
NOT_A_CERTIFICATE = b"this is not a certificate, it is plain text"
_KEEP = 1024


def _record(content_type: int, body: bytes) -> bytes:
    return bytes([content_type]) + _TLS12 + len(body).to_bytes(2, "big") + body


def _handshake_message(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def _hello_fields(record: bytes) -> tuple[bytes, list[int]]:
    """The session id and the cipher suites of a ClientHello record (RFC 5246 §7.4.1.2).

    Raises:
        ValueError: the record is not a ClientHello, or is cut short.
    """
    if len(record) < 5 + 4 + 2 + 32 + 1 or record[0] != _HANDSHAKE or record[5] != 1:
        raise ValueError("not a ClientHello record")
    at = 5 + 4 + 2 + 32  # record header, handshake header, client_version, random
    sid_len = record[at]
    session_id = record[at + 1 : at + 1 + sid_len]
    at += 1 + sid_len
    count = int.from_bytes(record[at : at + 2], "big") // 2
    at += 2
    suites = [int.from_bytes(record[at + 2 * i : at + 2 * i + 2], "big") for i in range(count)]
    if len(session_id) != sid_len or len(record) < at + 2 * count:
        raise ValueError("ClientHello cut short")
    return session_id, suites


def server_hello_flight(client_hello: bytes, certificate: bytes = NOT_A_CERTIFICATE) -> bytes:
    """ServerHello, Certificate (one entry: ``certificate``) and ServerHelloDone, one record.

    Args:
        client_hello: the client's first record, whole.
        certificate: the bytes of the one certificate entry.

    Raises:
        ValueError: ``client_hello`` is not a readable ClientHello.
    """
    session_id, suites = _hello_fields(client_hello)
    # Not a TLS 1.3 suite (0x13xx) and no signalling value (RFC 5746 0x00FF, RFC 7507 0x5600).
    usable = [s for s in suites if s >> 8 != 0x13 and s not in (0x00FF, 0x5600)]
    suite = usable[0] if usable else 0xC02F  # the client refuses it, as it should
    renegotiation_info = b"\xff\x01\x00\x01\x00"  # RFC 5746 §3.6: empty, initial handshake
    hello = (
        _TLS12
        + os.urandom(32)
        + bytes([len(session_id)])
        + session_id
        + suite.to_bytes(2, "big")
        + b"\x00"  # compression: null
        + len(renegotiation_info).to_bytes(2, "big")
        + renegotiation_info
    )
    entry = len(certificate).to_bytes(3, "big") + certificate
    chain = len(entry).to_bytes(3, "big") + entry
    body = (
        _handshake_message(2, hello)  # ServerHello
        + _handshake_message(11, chain)  # Certificate
        + _handshake_message(14, b"")  # ServerHelloDone
    )
    return _record(_HANDSHAKE, body)


async def _drain_client(reader: asyncio.StreamReader, after: bytearray) -> None:
    while chunk := await reader.read(4096):
        after += chunk[: max(0, _KEEP - len(after))]


async def break_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    mode: MxStartTls,
    *,
    after: bytearray,
) -> None:
    """Play a server that said 220 to STARTTLS and then cannot do TLS (see above).

    Returns when the caller should end the connection: at once for ``broken-close``
    and ``broken-close-after-220``, after the client's EOF for the others. The
    caller closes (or, for ``broken-reset``, aborts) the connection.

    Args:
        reader: the connection's reader, just after the 220 reply.
        writer: the connection's writer.
        mode: a ``broken-*`` mode.
        after: receives the start (up to 1 KiB) of what the client sends after our
            bytes; filled as it arrives, so it is complete even if the read is
            cancelled by EOF.

    Raises:
        ValueError: ``mode`` is not a ``broken-*`` mode.
    """
    if not mode.breaks_handshake:
        raise ValueError(f"break_handshake plays broken-* modes only, got {mode.value!r}")
    if mode is MxStartTls.BROKEN_CLOSE_AFTER_220:
        return
    try:
        header = await reader.readexactly(5)
        record = header + await reader.readexactly(int.from_bytes(header[3:5], "big"))
    except asyncio.IncompleteReadError:
        return
    if mode in (MxStartTls.BROKEN_CLOSE, MxStartTls.BROKEN_RESET):
        return
    if mode is MxStartTls.BROKEN_GARBAGE:
        writer.write(_GARBAGE)
    elif mode in ALERTS:
        writer.write(_record(_ALERT, bytes([_FATAL, ALERTS[mode]])))
        return
    elif mode is MxStartTls.BROKEN_CHAIN_MALFORMED:
        try:
            writer.write(server_hello_flight(record))
        except ValueError:
            writer.write(_GARBAGE)  # no ClientHello to answer: the client broke it first
    await _drain_client(reader, after)


def is_tls_record(data: bytes | bytearray) -> bool:
    """True if ``data`` starts like a TLS record (content type 20..23, RFC 8446 §5.1)."""
    return bool(data) and 20 <= data[0] <= 23
