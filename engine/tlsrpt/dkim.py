"""DKIM signing of emailed TLS reports (RFC 8460 §3, RPT-10).

RFC 8460 §3: a report sent by mail MUST carry a valid DKIM signature (RFC 6376) by
the reporting domain, MUST NOT use the ``l=`` (body length) tag, and the key's DNS
record SHOULD declare the service type ``s=tlsrpt`` (AMB-23; publishing the record is
the operator's part). The signing itself is ``dkimpy``'s; this module only fixes the
signed header set and forbids the length tag.
"""

from __future__ import annotations

import dkim  # type: ignore[import-untyped]

__all__ = ["REPORT_SIGNED_HEADERS", "sign_report"]

#: The headers a report's signature covers (RFC 8460 §5.3: the ``TLS-Report-*``
#: headers SHOULD be signed). A header absent from the message is signed as absent.
REPORT_SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
    "MIME-Version",
    "Content-Type",
)


def sign_report(message: bytes, *, selector: str, domain: str, key_pem: bytes) -> bytes:
    """``message`` with a ``DKIM-Signature`` header prepended (never with ``l=``).

    Args:
        message: the report mail (CRLF line ends, as ``EmailMessage.as_bytes()`` with
            the SMTP policy gives).
        selector: the DKIM selector (the key lives at ``<selector>._domainkey.<domain>``).
        domain: the signing domain (``d=``): the reporting domain.
        key_pem: the RSA private key, PEM.

    Raises:
        ValueError: the key or the message cannot be signed (``dkim.DKIMException``).
    """
    try:
        header = dkim.sign(
            message,
            selector.encode("ascii"),
            domain.encode("ascii"),
            key_pem,
            include_headers=[h.encode("ascii") for h in REPORT_SIGNED_HEADERS],
            length=False,  # RFC 8460 §3: MUST NOT use l=
            tlsrpt=True,
        )
    except dkim.DKIMException as exc:
        raise ValueError(f"cannot DKIM-sign the report: {exc}") from exc
    if not isinstance(header, bytes):
        raise ValueError("dkim.sign returned no header")
    return header + message
