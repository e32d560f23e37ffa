"""What the injection listener accepts: command lines, paths, parameters, body lines.

Theory of operation
-------------------
Pure functions over the text aiosmtpd hands the listener (it decodes a command's
argument as UTF-8 with ``surrogateescape``, so bytes that are not UTF-8 arrive as
lone surrogates U+DC80..U+DCFF and can be told apart). Each check either returns the
parsed value or raises :class:`Refusal` carrying the reply for the command that
carried the fault, so nothing bad is taken now and refused later:

* a command line with a control character (NUL, CR, ESC, ...) or bytes that are not
  UTF-8 is refused with ``501``; inside MAIL and RCPT, where it is an address that is
  bad, with ``553`` and the address code (RFC 5321 §4.2.3: 553 "mailbox syntax
  incorrect"; RFC 3463: X.1.7 the sender's, X.1.3 a recipient's);
* a path follows RFC 5321 §4.1.2 (``<`` [source route ``:``] Mailbox ``>``), the
  Mailbox is checked by ``email-validator`` (RFC 5322 dot-atom or quoted local part,
  IDNA 2008 domain, LDH labels of at most 63 octets, address literals ``[IPv4]`` and
  ``[IPv6:...]``) and then against RFC 5321's octet limits, which email-validator
  counts in characters (§4.5.3.1: 64 octets of local part, 255 of domain, 256 of path);
* non-ASCII in MAIL or RCPT without ``SMTPUTF8`` on MAIL is ``553 5.6.7`` (RFC 6531
  §3.5); the whole transaction is SMTPUTF8 or not (RFC 6531 §3.4);
* MAIL parameters: ``SIZE`` (RFC 1870), ``BODY`` (RFC 6152), ``SMTPUTF8`` (RFC 6531)
  and ``AUTH`` (RFC 4954 §5, accepted and ignored); anything else ``555 5.5.4``
  (RFC 5321 §4.1.1.11). RCPT takes no parameter.

Why email-validator and not our own grammar: it is well kept and gets the hard part
right (UTF-8 local parts, IDNA 2008 U-labels, address literals). Where it differs
from RFC 5321, this module says so: it measures lengths in characters (we add the
octet limits), and it refuses special-use names that cannot receive mail from the
Internet (``localhost``, ``.invalid``, ``.local``, ``.onion``: RFC 6761, RFC 6762,
RFC 7686), which a relay cannot deliver to anyway; ``test_environment`` keeps
``.test`` usable. It knows nothing of SMTP paths, parameters or the null path, which
are parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

__all__ = [
    "MailFrom",
    "Refusal",
    "check_argument",
    "parse_mail",
    "parse_rcpt",
]

_LOCAL_MAX = 64  # RFC 5321 §4.5.3.1.1, octets
_DOMAIN_MAX = 255  # RFC 5321 §4.5.3.1.2, octets
_PATH_MAX = 256  # RFC 5321 §4.5.3.1.3, octets, with the angle brackets
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")  # RFC 5321 §4.1.2 esmtp-keyword
_SYNTAX = {
    "MAIL": "501 5.5.2 Syntax: MAIL FROM:<address> [parameters]",
    "RCPT": "501 5.5.2 Syntax: RCPT TO:<address>",
}


class Refusal(Exception):
    """A command refused; :attr:`reply` is the whole reply line to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailFrom:
    """A MAIL command that passed: the reverse-path and what its parameters said.

    Attributes:
        address: the sender mailbox, ``""`` for the null reverse-path ``<>``.
        smtputf8: the ``SMTPUTF8`` parameter was given (RFC 6531 §3.4).
        options: the parameters as sent (upper-cased keywords), for the envelope.
    """

    address: str
    smtputf8: bool
    options: tuple[str, ...]


def _bad_character(text: str) -> str | None:
    """Why ``text`` cannot be in a command line, or None."""
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            # RFC 6531 §3.3 extends the grammar with UTF-8 (RFC 3629) only.
            return "not valid UTF-8"
        if code < 0x20 or code == 0x7F:
            # RFC 5321 §4.1.2 / §2.3.8: commands are printable text ending in CRLF; no
            # NUL, no bare CR or LF, no other control character.
            return f"control character U+{code:04X}"
    return None


def check_argument(verb: str, argument: str | None) -> None:
    """Refuse a command whose argument carries a control character or invalid UTF-8.

    Raises:
        Refusal: ``501 5.5.2`` (RFC 5321 §4.2.3, RFC 3463 X.5.2 syntax error).
    """
    why = _bad_character(argument or "")
    if why is not None:
        raise Refusal(f"501 5.5.2 Syntax error in {verb} arguments: {why}")


def _split_path(text: str, verb: str) -> tuple[str, str]:
    """``<...>`` at the start of ``text`` -> (inside, rest); quoted ``>`` are skipped."""
    if not text.startswith("<"):
        check_argument(verb, text)
        raise Refusal(_SYNTAX[verb])
    quoted = escaped = False
    for i in range(1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif quoted:
            escaped, quoted = ch == "\\", ch != '"'
        elif ch == '"':
            quoted = True
        elif ch == ">":
            rest = text[i + 1 :]
            if rest and not rest.startswith(" "):
                raise Refusal(_SYNTAX[verb])
            return text[1:i], rest.strip()
    raise Refusal(_SYNTAX[verb])


def _mailbox(inside: str, *, smtputf8: bool, code: str, what: str) -> str:
    """Check the Mailbox of a path (the part between the angle brackets)."""
    if inside.startswith("@"):
        # RFC 5321 §4.1.1.3 / Appendix C: a source route is accepted and ignored.
        _, colon, inside = inside.partition(":")
        if not colon:
            raise Refusal(f"553 {code} Bad {what} address syntax: a route without a mailbox")
    why = _bad_character(inside)
    if why is not None:
        raise Refusal(f"553 {code} Bad {what} address syntax: {why}")
    if not smtputf8 and not inside.isascii():
        # RFC 6531 §3.5: a non-ASCII address without SMTPUTF8 is 553 with 5.6.7.
        raise Refusal(f"553 5.6.7 Non-ASCII {what} address needs the SMTPUTF8 parameter")
    local, at, domain = inside.rpartition("@")
    if not at:
        raise Refusal(f"553 {code} Bad {what} address syntax: no domain")
    if len(local.encode()) > _LOCAL_MAX:
        raise Refusal(f"553 {code} Bad {what} address syntax: local part over 64 octets")
    if len(domain.encode()) > _DOMAIN_MAX or len(inside.encode()) + 2 > _PATH_MAX:
        raise Refusal(f"553 {code} Bad {what} address syntax: address too long")
    try:
        validate_email(
            inside,
            allow_smtputf8=smtputf8,
            allow_quoted_local=True,
            allow_domain_literal=True,
            allow_display_name=False,
            allow_empty_local=False,
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
            strict=True,
        )
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise Refusal(f"553 {code} Bad {what} address syntax: {reason}") from None
    return inside


def _params(options: str, verb: str) -> list[tuple[str, str | None]]:
    """``KEY[=VALUE] ...`` -> [(KEY, VALUE)], keywords upper-cased (RFC 5321 §4.1.2)."""
    out: list[tuple[str, str | None]] = []
    for word in options.split():
        key, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not value):
            raise Refusal(f"501 5.5.4 Syntax error in {verb} parameter {word!r}")
        out.append((key.upper(), value if eq else None))
    return out


def parse_mail(argument: str | None, *, max_size: int, utf8_offered: bool = True) -> MailFrom:
    """Check ``MAIL FROM:<reverse-path> [parameters]``.

    Args:
        argument: the text after ``MAIL `` (None when there was none).
        max_size: the ``SIZE`` limit in bytes (RFC 1870 §6).
        utf8_offered: whether the listener advertised SMTPUTF8.

    Raises:
        Refusal: the reply to send instead of ``250``.
    """
    text = argument or ""
    if text[:5].upper() != "FROM:":
        check_argument("MAIL", argument)
        raise Refusal(_SYNTAX["MAIL"])
    inside, rest = _split_path(text[5:].lstrip(" "), "MAIL")
    check_argument("MAIL", rest)  # the path's own characters are the address's fault
    params = _params(rest, "MAIL")
    keys = [k for k, _ in params]
    if len(set(keys)) != len(keys):
        raise Refusal("501 5.5.4 A MAIL parameter is given twice")
    smtputf8 = False
    for key, value in params:
        if key == "SMTPUTF8" and value is None and utf8_offered:
            smtputf8 = True
        elif key == "BODY" and value is not None and value.upper() in ("7BIT", "8BITMIME"):
            pass  # RFC 6152 §2
        elif key == "SIZE" and value is not None and value.isdigit():
            if int(value) > max_size:
                # RFC 1870 §6.1: a declared size over the limit is refused at MAIL.
                raise Refusal("552 5.3.4 Message size exceeds fixed maximum message size")
        elif key == "AUTH" and value is not None:
            pass  # RFC 4954 §5: the identity a relay vouches for; we do not pass it on
        else:
            raise Refusal(f"555 5.5.4 MAIL parameter {key} not recognized or not implemented")
    options = tuple(f"{k}={v}" if v is not None else k for k, v in params)
    if inside == "":
        return MailFrom("", smtputf8, options)  # the null reverse-path (RFC 5321 §4.5.5)
    address = _mailbox(inside, smtputf8=smtputf8, code="5.1.7", what="sender")
    return MailFrom(address, smtputf8, options)


def parse_rcpt(argument: str | None, *, smtputf8: bool) -> str:
    """Check ``RCPT TO:<forward-path>`` and return the recipient address.

    Args:
        argument: the text after ``RCPT ``.
        smtputf8: whether this transaction's MAIL carried ``SMTPUTF8``.

    Raises:
        Refusal: the reply to send instead of ``250``.
    """
    text = argument or ""
    if text[:3].upper() != "TO:":
        check_argument("RCPT", argument)
        raise Refusal(_SYNTAX["RCPT"])
    inside, rest = _split_path(text[3:].lstrip(" "), "RCPT")
    check_argument("RCPT", rest)
    if rest:
        _params(rest, "RCPT")  # well-formed, but none is supported:
        raise Refusal("555 5.5.4 RCPT parameters not recognized or not implemented")
    if inside.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: <Postmaster> without a domain is a valid forward-path.
        return inside
    return _mailbox(inside, smtputf8=smtputf8, code="5.1.3", what="recipient")
