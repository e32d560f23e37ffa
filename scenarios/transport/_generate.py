"""Write the transport-fault scenarios of this directory (issue 12, part 4).

Run ``python scenarios/transport/_generate.py`` from the repository root after changing
a rule below; every ``*.toml`` here is rewritten (the catalog collects only those).

One file is one fault (a TLS handshake behaviour, or one fault at one SMTP stage) in
one world of five mail domains, one per policy context, each with a faulty ``mx1`` and a
healthy ``mx2`` that the policy also lists:

==================  ==================================================================
domain              context
==================  ==================================================================
enforce.example     MTA-STS ``enforce`` (TLS Preferred, MTA-STS on)
testing.example     MTA-STS ``testing``
none.example        MTA-STS ``none``
dane.example        usable DANE: DNSSEC-signed, ``3 1 1`` TLSA at both hosts, DANE
                    Opportunistic (MTA-STS off)
nopolicy.example    no policy at all (MTA-STS on, no ``_mta-sts`` record)
==================  ==================================================================

One ``send`` step per domain, each with its own expectations, so a failure names the
cell (fault x context) that broke. What each cell expects, and why:

* A fault before MAIL FROM, or a handshake that fails: the message goes to ``mx2`` in
  the same attempt, ``mx1`` sees no transaction, nothing goes in clear (RFC 8461 §5 and
  APPLY-1/APPLY-2 under ``enforce``; RFC 7672 §2.2 and DANE-6 under DANE; under TLS
  Preferred, docs/gateway-behaviour.md §1.1: after the 220 there is no clear-text retry, and a
  lost connection means the next MX, RFC 5321 §5.1 "try ... each of the relevant
  addresses ... until a delivery attempt succeeds").
* A STARTTLS refused with 4yz/5yz: ``enforce`` and DANE go to ``mx2`` (CERT-1, CERT-2,
  DANE-6); under ``testing``, ``none`` and no policy the TLS setting (Preferred) goes on
  in clear on the same connection (docs/gateway-behaviour.md §1.1 "before the 220"; APPLY-4,
  APPLY-5). A malformed STARTTLS reply is an "unexpected reply" there: clear at ``mx1``
  and ``mx2`` both conform, so only delivery is expected.
* A transient fault at or after MAIL FROM (reset, stall, 4yz, malformed, broken
  multi-line reply): RFC 5321 §4.2.5 says a lost connection is handled as a 451, and a
  4yz means "try again", which with another MX is the next MX now (§5.1): the message
  reaches ``mx2`` in the same attempt.
* A 5yz at MAIL, RCPT, DATA or after the data: a permanent refusal of this message
  (RFC 5321 §4.2.1): the recipient bounces, in every context.
* The long chain (101 CAs, beyond every usual verification depth) completes the
  handshake: ``enforce`` refuses ``mx1`` (CERT-3) and uses ``mx2``; DANE-EE ignores the
  chain (RFC 7672 §3.1.1, DANE-20) and delivers at ``mx1``; ``testing``, ``none`` and
  no policy deliver at ``mx1`` (reported under ``testing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SENDER = "alice@sender.example"
CONTEXTS = ("enforce", "testing", "none", "dane", "nopolicy")
STRICT = ("enforce", "dane")  # TLS is mandatory there: never in clear
TITLES = {
    "enforce": "MTA-STS enforce",
    "testing": "MTA-STS testing",
    "none": "MTA-STS none",
    "dane": "usable DANE",
    "nopolicy": "no policy",
}

# -- the faults -----------------------------------------------------------------------

HANDSHAKE: dict[str, tuple[dict[str, Any], str | None, str]] = {
    # name: (mx1's host keys, the fault its session records, what it is)
    "reset": ({"starttls": "broken-reset"}, "handshake: broken-reset", "a TCP RST"),
    "close-after-220": (
        {"starttls": "broken-close-after-220"},
        "handshake: broken-close-after-220",
        "a close right after the STARTTLS 220",
    ),
    "stall": (
        {"starttls": "broken-stall"},
        "handshake: broken-stall",
        "no answer to the ClientHello (the client's handshake timeout ends it)",
    ),
    "alert-protocol-version": (
        {"starttls": "broken-alert-protocol-version"},
        "handshake: broken-alert-protocol-version",
        "a fatal protocol_version alert",
    ),
    "alert-handshake-failure": (
        {"starttls": "broken-alert-handshake-failure"},
        "handshake: broken-alert-handshake-failure",
        "a fatal handshake_failure alert",
    ),
    "alert-internal-error": (
        {"starttls": "broken-alert-internal-error"},
        "handshake: broken-alert-internal-error",
        "a fatal internal_error alert",
    ),
    "garbage": (
        {"starttls": "broken-garbage"},
        "handshake: broken-garbage",
        "plaintext instead of a ServerHello",
    ),
    "tls-1.0-only": (
        {"tls_min": "1.0", "tls_max": "1.0"},
        "~^handshake: failed",
        "TLS 1.0 only (RFC 8996: never negotiated)",
    ),
    "tls-1.1-only": (
        {"tls_min": "1.1", "tls_max": "1.1"},
        "~^handshake: failed",
        "TLS 1.1 only (RFC 8996: never negotiated)",
    ),
    "no-shared-cipher": (
        {"starttls": "no-shared-cipher"},
        "handshake: no-shared-cipher",
        "NULL-encryption suites only: no cipher in common",
    ),
    "chain-malformed": (
        {"starttls": "broken-chain-malformed"},
        "handshake: broken-chain-malformed",
        "a Certificate message holding bytes that are not a certificate",
    ),
    "chain-too-long": (
        {"cert": "long-chain"},
        None,
        "a chain of 101 CAs below the root, beyond every usual verification depth",
    ),
}

STAGES = {  # file name part: (replies key, what it is)
    "greeting": ("banner", "the greeting"),
    "ehlo": ("ehlo", "the EHLO reply"),
    "starttls": ("starttls", "the reply to STARTTLS"),
    "mail": ("mail", "the reply to MAIL FROM"),
    "rcpt": ("rcpt", "the reply to RCPT TO"),
    "data": ("data_start", "the reply to DATA"),
    "end-of-data": ("data", "the reply after the final dot"),
}
REPLIES = {
    "4xx": {
        "banner": "421 4.3.2 Service not available, closing channel",
        "ehlo": "421 4.3.2 Service shutting down",
        "starttls": "454 4.7.0 TLS not available due to temporary reason",
        "mail": "451 4.3.0 Temporary failure, try again later",
        "rcpt": "450 4.2.1 Mailbox busy, try again later",
        "data_start": "451 4.3.1 Insufficient system storage",
        "data": "451 4.3.0 Queue full, try again later",
    },
    "5xx": {
        "banner": "554 5.3.2 No SMTP service here",
        "ehlo": "554 5.7.1 Access denied",
        "starttls": "502 5.5.1 Command not implemented",
        "mail": "550 5.7.1 Sender rejected",
        "rcpt": "550 5.1.1 No such user",
        "data_start": "554 5.3.4 Transaction failed",
        "data": "554 5.7.1 Message rejected",
    },
}
FAULTS = {
    "reset": "a TCP RST instead of the reply",
    "stall": "no reply (the client's timeout ends it)",
    "4xx": "a temporary refusal",
    "5xx": "a permanent refusal",
    "malformed": "a line that is no SMTP reply",
    "multiline-broken": "a multi-line reply that changes its code and never ends",
}
BEFORE_MAIL = ("banner", "ehlo", "starttls")

# -- the world ------------------------------------------------------------------------


def _policy(domain: str, mode: str) -> str:
    return f"version: STSv1\nmode: {mode}\nmx: mx1.{domain}\nmx: mx2.{domain}\nmax_age: 86400\n"


def world(mx1: dict[str, Any], *, bounces: bool = False) -> dict[str, Any]:
    domains: dict[str, Any] = {}
    if bounces:
        # Where the bounce's DSN lands: a queueing engine (the gateway) sends one, and
        # without an MX it would wait in the queue and write a Delayed: line of its own.
        domains["sender.example"] = {"mx": ["10 mx.sender.example"]}
    hosts: dict[str, Any] = {}
    for context in CONTEXTS:
        d = f"{context}.example"
        table: dict[str, Any] = {"mx": [f"10 mx1.{d}", f"20 mx2.{d}"]}
        if context in ("enforce", "testing", "none"):
            table["mta_sts_txt"] = ["v=STSv1; id=T1"]
            table["policy"] = _policy(d, context)
        if context == "dane":
            table["dnssec"] = "secure"
        domains[d] = table
        dane = {"tlsa": [[3, 1, 1]]} if context == "dane" else {}
        hosts[f"mx1.{d}"] = {**mx1, **dane}
        hosts[f"mx2.{d}"] = dict(dane)
    return {"domains": domains, "hosts": hosts}


SENDER_TABLE = {
    "destination_controls": {
        "default": {"tls": "preferred", "mta_sts": True},
        "dane.example": {"tls": "preferred", "dane": "opportunistic", "mta_sts": False},
    }
}

# -- expectations ---------------------------------------------------------------------


def _via(context: str, host: str) -> dict[str, Any]:
    d = f"{context}.example"
    expect: dict[str, Any] = {
        "outcome": "delivered",
        "via": f"{host}.{d}",
        "tls": "TLSv1.3",
        "in_clear": False,
        "no_events": [{"code": "delivery.delayed"}, {"code": "delivery.bounced"}],
    }
    if context == "enforce":
        expect["verified"] = "pkix"
    if context == "dane":
        expect["verified"] = "dane"
    return expect


def _faulted(expect: dict[str, Any], context: str, fault: str | None) -> dict[str, Any]:
    if fault is not None:
        expect["faults"] = {f"mx1.{context}.example": fault}
    return expect


_POLICY_TYPE = {"enforce": "sts", "dane": "tlsa"}


def handshake_expect(name: str, context: str, fault: str | None) -> dict[str, Any]:
    d = f"{context}.example"
    if name == "chain-too-long" and context != "enforce":
        expect = _via(context, "mx1")
        if context == "dane":  # RFC 7672 §3.1.1: DANE-EE does not look at the chain
            expect["events"] = [{"code": "dane.success", "mx": f"mx1.{d}"}]
        return expect
    expect = _via(context, "mx2")
    expect["no_transaction"] = [f"mx1.{d}"]
    # The reason event: the TLS failure at mx1 (and, where a policy applies, the
    # session's RFC 8460 failure of that policy type), then mx2.
    reason = "tls.verify.deferring" if name == "chain-too-long" else "tls.failed"
    events: list[dict[str, Any]] = [{"code": "smtp.connect", "mx": f"mx1.{d}"}]
    if context in _POLICY_TYPE:
        events.append(
            {
                "code": "tls.session",
                "mx": f"mx1.{d}",
                "success": False,
                "failures.0.policy_type": _POLICY_TYPE[context],
            }
        )
    events += [{"code": reason, "mx": f"mx1.{d}"}, {"code": "smtp.connect", "mx": f"mx2.{d}"}]
    expect["events"] = events
    return _faulted(expect, context, fault)


def stage_expect(stage: str, kind: str, context: str, fault: str) -> dict[str, Any]:
    d = f"{context}.example"
    if stage not in BEFORE_MAIL and kind == "5xx":
        return _faulted(
            {"outcome": "bounced", "in_clear": False, "no_events": [{"code": "delivery.delayed"}]},
            context,
            fault,
        )
    if stage == "starttls" and context not in STRICT and kind in ("4xx", "5xx"):
        expect = {
            "outcome": "delivered",
            "via": f"mx1.{d}",
            "tls": "none",
            "in_clear": True,
            "no_events": [{"code": "delivery.delayed"}],
        }
        return _faulted(expect, context, fault)
    if stage == "starttls" and context not in STRICT and kind == "malformed":
        expect = {"outcome": "delivered", "no_events": [{"code": "delivery.delayed"}]}
        return _faulted(expect, context, fault)
    expect = _via(context, "mx2")
    if stage in BEFORE_MAIL:
        expect["no_transaction"] = [f"mx1.{d}"]
    elif kind == "4xx":
        # The host that refused for now leaves its line, though no Delayed: line follows.
        expect["events"] = [
            {"code": "delivery.refused.transient", "stage": _COMMAND[stage], "rids": [0]}
        ]
    return _faulted(expect, context, fault)


_COMMAND = {"mail": "MAIL", "rcpt": "RCPT", "data_start": "DATA", "data": "end of data"}


# -- files ----------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _table(lines: list[str], header: str, table: dict[str, Any]) -> None:
    lines.append(f"[{header}]")
    lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    lines.append("")


def render(
    sid: str,
    title: str,
    covers: list[str],
    comment: str,
    mx1: dict[str, Any],
    expects: list[Any],
    *,
    bounces: bool = False,
) -> str:
    lines = [f"# {line}".rstrip() for line in comment.strip().splitlines()]
    lines += ["# Written by scenarios/transport/_generate.py: change the rules there.", ""]
    _table(lines, "scenario", {"id": sid, "title": title, "covers": covers})
    w = world(mx1, bounces=bounces)
    for name, table in w["domains"].items():
        _table(lines, f'world.domains."{name}"', table)
    for name, table in w["hosts"].items():
        if table:
            _table(lines, f'world.hosts."{name}"', table)
    for name, table in SENDER_TABLE["destination_controls"].items():
        header = "default" if name == "default" else f'"{name}"'
        _table(lines, f"sender.destination_controls.{header}", table)
    for context, expect in zip(CONTEXTS, expects, strict=True):
        lines.append(f"# {TITLES[context]}")
        lines.append("[[steps]]")
        lines.append(f"send = {_toml_value({'from': SENDER, 'to': [f'rcpt@{context}.example']})}")
        lines.append("")
        _table(lines, "steps.expect", expect)
    return "\n".join(lines).rstrip() + "\n"


BASE_COVERS = ["APPLY-1", "APPLY-2", "APPLY-3", "APPLY-5", "DANE-6", "MX-8"]


def main() -> None:
    for old in HERE.glob("*.toml"):
        old.unlink()
    for name, (keys, fault, what) in HANDSHAKE.items():
        covers = [*BASE_COVERS, "CERT-2", "seed:tls-preferred-failure"]
        if name.startswith("tls-1."):
            covers.append("CERT-12")
        if name == "chain-too-long":
            covers = ["CERT-3", "APPLY-2", "APPLY-3", "APPLY-5", "DANE-20"]
        comment = (
            f"TLS handshake fault: mx1 answers STARTTLS with {what}; mx2 is healthy.\n"
            "One domain per context (enforce, testing, none, usable DANE, no policy).\n"
        )
        expects = [handshake_expect(name, c, fault) for c in CONTEXTS]
        text = render(
            f"transport-handshake-{name}",
            f"TLS handshake: {what}, in five policy contexts",
            covers,
            comment,
            keys,
            expects,
        )
        (HERE / f"handshake-{name}.toml").write_text(text, encoding="utf-8")
    for stage, (key, where) in STAGES.items():
        for kind, what in FAULTS.items():
            action = REPLIES[kind][key] if kind in REPLIES else kind
            replies: dict[str, Any] = {key: action}
            if key == "ehlo" and kind == "5xx":
                replies["helo"] = action  # the greeting is refused whichever verb is used
            fault = f"{key}: {action}"
            covers = list(BASE_COVERS)
            if key == "starttls":
                covers += ["CERT-1", "CERT-2", "APPLY-4"]
            if key not in BEFORE_MAIL and kind == "5xx":
                covers = ["APPLY-3", "APPLY-5", "DANE-6"]
            comment = (
                f"SMTP stage fault: as {where}, mx1 gives {what}\n"
                f"({action!r}); mx2 is healthy.\n"
                "One domain per context (enforce, testing, none, usable DANE, no policy).\n"
            )
            expects = [stage_expect(key, kind, c, fault) for c in CONTEXTS]
            text = render(
                f"transport-{stage}-{kind}",
                f"{where[0].upper()}{where[1:]}: {what}, in five policy contexts",
                covers,
                comment,
                {"replies": replies},
                expects,
                bounces=key not in BEFORE_MAIL and kind == "5xx",
            )
            (HERE / f"{stage}-{kind}.toml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
