"""One real TLS handshake over a loopback TCP socket, for tests of certificates.

The server listens on ``127.0.0.1`` port 0 before the client connects, so the
client never waits for readiness (the kernel queues the connection); the
server side runs in one short-lived thread that accepts exactly once. Both
ends are bounded by ``timeout`` and every socket is closed on every path.
Each end's outcome is recorded; neither end's failure is raised.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass

__all__ = ["HandshakeResult", "loopback_handshake"]


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What each end of :func:`loopback_handshake` saw.

    Attributes:
        client_error: the client's exception (e.g. ``ssl.SSLCertVerificationError``), or None.
        server_error: the server's exception, or None.
        version: the negotiated version (``"TLSv1.3"``) when the client completed, else None.
        cipher: the negotiated cipher name when the client completed, else None.
        peer_cert_der: the leaf the client received, when it completed, else None.
    """

    client_error: Exception | None
    server_error: Exception | None
    version: str | None
    cipher: str | None
    peer_cert_der: bytes | None

    @property
    def ok(self) -> bool:
        """True when both ends completed the handshake."""
        return self.client_error is None and self.server_error is None


def loopback_handshake(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    timeout: float = 10.0,
) -> HandshakeResult:
    """Run one TLS handshake between the two contexts over 127.0.0.1.

    Args:
        server_context: a ``PROTOCOL_TLS_SERVER`` context.
        client_context: a ``PROTOCOL_TLS_CLIENT`` context.
        server_hostname: the SNI and the name the client verifies (None: neither).
        timeout: bound on each end's socket operations, in seconds.

    Returns:
        Both ends' outcomes.
    """
    server_errors: list[Exception] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                server_errors.append(exc)
                return
            with conn:
                conn.settimeout(timeout)
                try:
                    tls = server_context.wrap_socket(conn, server_side=True)
                except OSError as exc:  # ssl.SSLError included: the handshake failed
                    server_errors.append(exc)
                    return
                # Hold the connection until the client is done with it; a reset after a
                # completed handshake is not a handshake failure.
                with tls, contextlib.suppress(OSError):
                    tls.recv(1)

        thread = threading.Thread(target=serve, name=f"tls-server-{port}", daemon=True)
        thread.start()
        version = cipher = None
        peer: bytes | None = None
        client_error: Exception | None = None
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
                client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                version = tls.version()
                cipher_info = tls.cipher()
                cipher = cipher_info[0] if cipher_info else None
                peer = tls.getpeercert(binary_form=True)
        except OSError as exc:
            client_error = exc
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"TLS server thread on port {port} did not finish in {timeout} s")
    return HandshakeResult(
        client_error=client_error,
        server_error=server_errors[0] if server_errors else None,
        version=version,
        cipher=cipher,
        peer_cert_der=peer,
    )
