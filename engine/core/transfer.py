"""What one message asks of the next hop's SMTP server: 8BITMIME and SMTPUTF8.

Theory of operation
-------------------
The gateway accepts 8-bit and internationalised mail, so before MAIL FROM each
transaction decides, from the message itself and the server's EHLO keywords,
which MAIL parameters it sends or whether this server cannot take it at all:

=====================================  ==================  ============================
the message                            the server offers   MAIL FROM / outcome
=====================================  ==================  ============================
7-bit, ASCII envelope and headers      anything            no parameter
8-bit data (a byte >= 0x80)            ``8BITMIME``        ``BODY=8BITMIME``
8-bit data                             no ``8BITMIME``     refused here: ``5.6.3``
a non-ASCII local part in the envelope ``SMTPUTF8``        ``SMTPUTF8`` (+ ``BODY=``)
a non-ASCII local part in the envelope no ``SMTPUTF8``     refused here: ``5.6.7``
UTF-8 in the header section            ``SMTPUTF8``        ``SMTPUTF8`` (+ ``BODY=``)
UTF-8 in the header section            no ``SMTPUTF8``     refused here: ``5.6.9``
=====================================  ==================  ============================

The body type is found in the bytes, not taken from the client's ``BODY=``: a
DSN or a TLS report the gateway writes itself has no client, a message queued
before this rule has no record of it, and a client that sent 8-bit data without
declaring it (RFC 6152 §3 forbids it, but it happens) still gets it labelled.
Sending ``BODY=8BITMIME`` for a message that turns out 7-bit would be harmless;
never sending it for 8-bit data is the defect this avoids.

"Refused here" is per server, not per message: the delivery moves on to the next
MX (RFC 5321 §5.1) and the message bounces with that status only when the last
host tried could not take it. Neither downconversion nor downgrading is done:

* 8-bit to 7-bit conversion (RFC 6152 §3 allows a relay to convert *or* return the
  message) rewrites the body, and so breaks every DKIM signature over it
  (RFC 6376 §5.3 asks signers to convert before signing for this reason); the
  gateway relays other people's signed mail and cannot re-sign it. A server
  without 8BITMIME is also rare enough now that a clear bounce serves better.
* An SMTPUTF8 message cannot be made ASCII in transit: RFC 6531 §3.2 has a relay
  that meets a server without SMTPUTF8 reject or bounce it (the in-transit
  downgrade of RFC 5504 was experimental and is obsolete; RFC 6857 downgrades
  only after delivery). A non-ASCII *domain* is no reason: it travels in A-labels.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["TransferNeeds", "TransferPlan", "plan_transfer", "transfer_needs"]

#: RFC 3463 §3.7 X.6.3 "Conversion required but not supported".
_STATUS_8BIT = "5.6.3"
#: RFC 6531 §3.2 / RFC 5248: X.6.7 "Non-ASCII addresses not permitted for that
#: sender/recipient" (a server answers it with 553).
_STATUS_UTF8_ADDRESS = "5.6.7"
#: RFC 6531: X.6.9 "UTF-8 header message cannot be transferred to one or more
#: recipients, so the message must be rejected".
_STATUS_UTF8_HEADER = "5.6.9"


@dataclass(frozen=True, slots=True)
class TransferNeeds:
    """What a message needs from the server that takes it.

    Attributes:
        eight_bit: some byte of the message is 0x80 or above (RFC 6152 §2: 8-bit data).
        utf8_addresses: a local part of the envelope is not ASCII (RFC 6531 §3.3).
        utf8_headers: the header section holds UTF-8 beyond ASCII (RFC 6532 §3).
    """

    eight_bit: bool = False
    utf8_addresses: bool = False
    utf8_headers: bool = False

    @property
    def smtputf8(self) -> bool:
        """The message is an internationalised one (RFC 6531 §1)."""
        return self.utf8_addresses or self.utf8_headers


@dataclass(frozen=True, slots=True)
class TransferPlan:
    """How one message goes to one server.

    Attributes:
        parameters: the MAIL FROM parameters to send (``BODY=8BITMIME``, ``SMTPUTF8``).
        status: the enhanced status code (RFC 3463) when this server cannot take it.
        reason: why, one line, when it cannot.
    """

    parameters: tuple[str, ...] = ()
    status: str | None = None
    reason: str = ""

    @property
    def sendable(self) -> bool:
        """The server can take the message."""
        return self.status is None


def _local_part(address: str) -> str:
    local, at, _domain = address.rpartition("@")
    return local if at else address


def _header_section(data: bytes) -> bytes:
    # RFC 5322 §2.1: the header section ends at the first empty line.
    end = len(data)
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at != -1:
            end = min(end, at)
    return data[:end]


def transfer_needs(mail_from: str, rcpts: Sequence[str], data: bytes) -> TransferNeeds:
    """What the message needs (see the module comment).

    Header bytes that are not ASCII but not UTF-8 either (a legacy client's raw
    Latin-1 subject) are 8-bit data, not an internationalised message.

    Args:
        mail_from: the envelope sender.
        rcpts: the envelope recipients.
        data: the message bytes.
    """
    if data.isascii():
        eight_bit = utf8_headers = False
    else:
        eight_bit = True
        head = _header_section(data)
        try:
            utf8_headers = not head.isascii() and bool(head.decode("utf-8"))
        except UnicodeDecodeError:
            utf8_headers = False
    # RFC 6531 §3.3: only a non-ASCII local part needs SMTPUTF8; a domain has A-labels.
    addresses = [mail_from, *rcpts]
    utf8_addresses = any(not _local_part(a).isascii() for a in addresses)
    return TransferNeeds(eight_bit, utf8_addresses, utf8_headers)


def plan_transfer(needs: TransferNeeds, extensions: Collection[str]) -> TransferPlan:
    """The MAIL FROM parameters for a message, or why this server cannot take it.

    Args:
        needs: from :func:`transfer_needs`.
        extensions: the server's EHLO keywords, upper case.
    """
    params: list[str] = []
    if needs.smtputf8:
        if "SMTPUTF8" not in extensions:
            # RFC 6531 §3.2: an internationalised message is never sent to a server
            # without SMTPUTF8; a relay returns it.
            if needs.utf8_addresses:
                return TransferPlan(
                    status=_STATUS_UTF8_ADDRESS,
                    reason="non-ASCII address, and the server does not offer SMTPUTF8 (RFC 6531)",
                )
            return TransferPlan(
                status=_STATUS_UTF8_HEADER,
                reason="UTF-8 header fields, and the server does not offer SMTPUTF8 (RFC 6531)",
            )
        params.append("SMTPUTF8")  # RFC 6531 §3.4
    if needs.eight_bit:
        if "8BITMIME" not in extensions:
            # RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME; no
            # conversion here (module comment), so the message goes back.
            return TransferPlan(
                status=_STATUS_8BIT,
                reason="8-bit message, and the server does not offer 8BITMIME (RFC 6152); "
                "not converted, so as not to break its DKIM signatures",
            )
        params.insert(0, "BODY=8BITMIME")  # RFC 6152 §2
    return TransferPlan(tuple(params))
