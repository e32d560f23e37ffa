"""Checking a mailed TLS report's DKIM signature (RFC 8460 §3, RPT-10, AMB-23).

:func:`dkim_verdict` is what a report's ``mail.dkim`` fact holds:

* ``"none"``: the message carries no ``DKIM-Signature``;
* ``"pass"``: the topmost signature verifies (``dkimpy``, keys read from the world's
  zones), no signature has an ``l=`` tag, the key record's service type lists
  ``tlsrpt``, and ``d=`` is the ``TLS-Report-Submitter`` domain or a parent of it
  (signed "by the reporting domain");
* ``"fail: <why>"`` otherwise.
"""

from __future__ import annotations

import email
from collections.abc import Callable, Sequence

import dkim  # type: ignore[import-untyped]
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]

__all__ = ["TxtLookup", "dkim_verdict"]

#: A TXT lookup: owner name -> the RRset (each RR's strings joined), None if no data.
TxtLookup = Callable[[str], Sequence[bytes] | None]


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        tags = parse_tag_value(value)
    except InvalidTagValueList:
        return None
    return {k: v for k, v in tags.items()} if isinstance(tags, dict) else None


def dkim_verdict(message: bytes, txt: TxtLookup) -> str:
    """The DKIM verdict on a mailed report (see the module docstring)."""
    parsed = email.message_from_bytes(message)
    sigs = parsed.get_all("DKIM-Signature") or []
    if not sigs:
        return "none"
    for raw in sigs:
        tags = _tags(str(raw).encode("ascii", "replace"))
        if tags is None:
            return "fail: malformed DKIM-Signature"
        if b"l" in tags:  # RFC 8460 §3: MUST NOT use l=
            return "fail: l= tag in DKIM-Signature"
    top = _tags(str(sigs[0]).encode("ascii", "replace")) or {}
    signer = top.get(b"d", b"").decode("ascii", "replace").lower().rstrip(".")
    submitter = str(parsed.get("TLS-Report-Submitter", "")).strip().lower().rstrip(".")
    if not signer or not (submitter == signer or submitter.endswith("." + signer)):
        return f"fail: d={signer} is not the reporting domain {submitter or '<none>'}"
    keys: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        rrset = txt(name.decode("ascii", "replace").rstrip(".").lower())
        found = [r for r in rrset or () if r.startswith(b"v=DKIM1") or b"p=" in r]
        if not found:
            return None
        keys.append(found[0])
        return found[0]

    try:
        ok = dkim.DKIM(message, tlsrpt=True).verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return f"fail: {exc}"
    if not keys:
        return "fail: no key record"
    if not ok:
        return "fail: signature does not verify"
    key = _tags(keys[0]) or {}
    services = [s.strip() for s in key.get(b"s", b"*").split(b":")]
    if b"tlsrpt" not in services:  # RFC 8460 §3 / AMB-23: the record lists tlsrpt
        return f"fail: key record service type s={b':'.join(services).decode()} lacks tlsrpt"
    return "pass"
