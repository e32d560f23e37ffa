"""The STARTTLS probe: what one MX's STARTTLS does, with nothing verified and nothing sent.

``sts-engine check`` and the harness's regression capture both ask the same
question of an MX host: does it offer STARTTLS, does the handshake complete, and
what does it serve (protocol, cipher, certificate chain)? :func:`probe_starttls`
answers it once for both, through the delivery's own SMTP client and dialer, so a
probe sees what a delivery would. The chain is captured, not judged (the context
verifies nothing): each caller judges it at its own clock. The probe never sends a
message: EHLO, STARTTLS, QUIT.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from enum import StrEnum

from engine.io.dialer import Dialer
from engine.io.smtp import SmtpClient, SmtpError, SmtpTimeouts, StartTlsOutcome, no_verify_context

__all__ = ["ProbeStatus", "StartTlsProbe", "probe_starttls"]


class ProbeStatus(StrEnum):
    """How far a probe got."""

    OFFERED = "offered"  # a TLS session came up
    ABSENT = "absent"  # EHLO did not offer STARTTLS
    REFUSED = "refused"  # STARTTLS was refused (or never answered) before a 220
    BROKEN_CLOSE = "broken-close"  # 220, then the handshake failed
    UNREACHABLE = "unreachable"  # no SMTP session: connection, banner or EHLO failed


@dataclass(frozen=True, slots=True)
class StartTlsProbe:
    """What one probe saw.

    Attributes:
        status: see :class:`ProbeStatus`.
        tls: the STARTTLS outcome (protocol, cipher, chain when ``offered``), once sent.
        detail: why it did not come to TLS (the error text), else empty.
        stage: where an ``unreachable`` session broke (``connect``, ``banner``,
            ``ehlo`` ...), else empty.
    """

    status: ProbeStatus
    tls: StartTlsOutcome | None = None
    detail: str = ""
    stage: str = ""


async def probe_starttls(
    dialer: Dialer,
    address: str,
    host: str,
    *,
    timeout: float,
    local_hostname: str,
    maximum: ssl.TLSVersion | None = None,
) -> StartTlsProbe:
    """Connect to ``address`` port 25, EHLO, and try STARTTLS with SNI ``host``.

    Args:
        dialer: where the connection goes (the harness's endpoint map, the guard).
        address: the MX address.
        host: the MX name (SNI).
        timeout: seconds for each SMTP stage.
        local_hostname: the EHLO name.
        maximum: the highest TLS version to offer (None: the library's); TLS 1.2 is
            the lowest, as for delivery (AMB-33).

    Returns:
        The probe's outcome; network failures are in it, never raised.
    """
    try:
        client = await SmtpClient.open(
            dialer,
            address,
            25,
            timeouts=SmtpTimeouts.uniform(timeout),
            local_hostname=local_hostname,
        )
    except SmtpError as exc:
        return StartTlsProbe(ProbeStatus.UNREACHABLE, detail=exc.detail, stage=exc.stage)
    try:
        await client.ehlo()
        if not client.offers_starttls:
            return StartTlsProbe(ProbeStatus.ABSENT)
        context = no_verify_context(minimum=ssl.TLSVersion.TLSv1_2)
        if maximum is not None:
            context.maximum_version = maximum
        tls = await client.starttls(context, host)
        if not tls.ok:
            status = ProbeStatus.BROKEN_CLOSE if tls.reached_220 else ProbeStatus.REFUSED
            return StartTlsProbe(status, tls, tls.error)
        return StartTlsProbe(ProbeStatus.OFFERED, tls)
    except SmtpError as exc:
        return StartTlsProbe(ProbeStatus.UNREACHABLE, detail=exc.detail, stage=exc.stage)
    finally:
        # Closing is best effort: a server gone by now changes nothing that was seen.
        with contextlib.suppress(Exception):
            await client.quit()
