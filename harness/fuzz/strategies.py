"""Hypothesis strategies that draw whole scenarios: a world, a sender, one send step.

Theory of operation
-------------------
Every strategy here draws *data in the scenario file format* (scenarios/README.md),
never objects: :func:`fuzz_scenarios` returns the dict a scenario TOML file would
hold, so a failing example is already a regression file (``regressions.py`` only
adds comments and expectations) and the run goes through the same loader checks as
the catalog. The invariants (``invariants.py``) re-derive every fact they need from
that dict; nothing the strategy "knew" travels beside it.

The world space, by part (each drawn by one ``@st.composite``):

* the MX set (:func:`mx_sets`): one to three hosts at distinct or equal preferences,
  in the domain or at a hoster (its own zone, signed or not);
* each host (:func:`receiving_hosts`): a certificate profile (every one the factory
  has, long-chain included, or none with STARTTLS absent), key type, STARTTLS and
  handshake behaviour (every ``MxStartTls`` mode: offered, absent, refused,
  no-shared-cipher and each ``broken-*`` way of failing after the 220), a TLS version
  window (1.0 only, 1.1 only, 1.2, 1.3), TLSA records (DANE-EE that match the
  certificate served in three selector/matching-type forms, a wrong digest, an
  unusable PKIX-EE record) and, at one SMTP stage (:data:`STAGE_ACTIONS`: greeting,
  EHLO, the STARTTLS reply, MAIL, RCPT, DATA, end of data), a transport fault
  (reset, stall, malformed, multiline-broken, disconnect) or a 4yz/5yz reply;
* MTA-STS (:func:`sts_parts`): the ``_mta-sts`` TXT (valid, absent, two records,
  malformed), the policy mode and ``mx`` patterns (exact, mixed case, ``*.``
  wildcard, unrelated), body layout (LF/CRLF, extension fields) or a malformed body,
  and the policy host's answer (status, media type, redirect, reset, oversize, hang,
  and its certificate profile);
* DNS faults (:func:`dns_faults`): servfail / drop / refused / bogus on the TXT, MX,
  host A, TLSA and ``mta-sts`` names;
* Destination Controls (:func:`destination_controls`): the six TLS settings, DANE
  option, MTA-STS switch and the [INF] knobs (coexistence, testing fall-back,
  opportunistic DANE fall-back, post-220 failure).

Draws are weighted towards worlds that can deliver (valid certificates, STARTTLS
offered, no faults), so both outcomes are common, and towards fast faults: ``drop``
and ``hang`` cost a timeout each (DNS 0.5 s, fetch 1 s), and a stall an SMTP timeout
(2 s, and as much again for the QUIT the client sends), so they are rare.

A third of the worlds are drawn with an MTA-STS ``enforce`` policy certainly in force
(``focus = "enforce"``: a valid TXT record, a well-formed ``enforce`` body served
``200 text/plain`` over a valid certificate, no DNS fault on those two names, and
MTA-STS on in the domain's Destination Controls); everything else in them (MX hosts,
their certificates and faults, the policy's patterns, DANE) is drawn as in the other
worlds. Without it, the independent draws above left an enforce policy in force in
one world in five (190 of 1,000 derandomized draws), so the two ``sts-enforce-*``
invariants, the ones a downgrade breaks, were judged least often; with it, 393 of
1,000. A world that can deliver cleanly went from 289 to 232 (an enforce policy's
patterns often permit no MX, by design).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from certs import CertProfile
from engine.core.controls import TlsSetting
from harness.world.mta.script import MxStartTls

__all__ = [
    "CERT_PROFILES",
    "DOMAIN",
    "SENDER",
    "STAGE_ACTIONS",
    "STARTTLS_MODES",
    "destination_controls",
    "dns_faults",
    "fuzz_scenarios",
    "mx_sets",
    "receiving_hosts",
    "stage_faults",
    "sts_parts",
]

DOMAIN = "example.com"
HOSTER = "hoster.example"
SENDER = "fuzz@sender.example"
# Every profile the certificate factory has, so a new one is fuzzed as soon as it exists.
CERT_PROFILES = tuple(p.value for p in CertProfile)
WRONG_DIGEST = "3 1 1 " + "5a" * 32
UNUSABLE_TLSA = "1 1 1 " + "a5" * 32
_TLS_SETTINGS = tuple(t.value for t in TlsSetting)
#: Every STARTTLS mode but ``offered``, so a new mode is fuzzed as soon as it exists;
#: the stall (a 2 s handshake timeout) is left to ``_STARTTLS_SLOW``, drawn rarely.
STARTTLS_MODES = tuple(m.value for m in MxStartTls if m is not MxStartTls.OFFERED)
_STARTTLS_SLOW = (MxStartTls.BROKEN_STALL.value,)
_STARTTLS = tuple(m for m in STARTTLS_MODES if m not in _STARTTLS_SLOW)
#: Per SMTP stage (a ``replies`` key), its temporary and permanent refusals.
STAGE_ACTIONS = {
    "banner": ("421 4.3.2 too busy", "554 5.3.2 no SMTP service here"),
    "ehlo": ("421 4.3.2 shutting down", "554 5.7.1 access denied"),
    "starttls": ("454 4.7.0 TLS not available", "502 5.5.1 not implemented"),
    "mail": ("451 4.3.0 try again later", "550 5.7.1 sender rejected"),
    "rcpt": ("450 4.2.0 mailbox busy", "550 5.1.1 no such user"),
    "data_start": ("451 4.3.1 insufficient storage", "554 5.3.4 transaction failed"),
    "data": ("451 4.3.0 local error", "554 5.7.1 message refused"),
}
# The transport faults of a stage, by weight; "stall" costs an SMTP timeout, so it is rare.
_STAGE_FAULTS = (
    ("4xx", 3),
    ("5xx", 2),
    ("reset", 2),
    ("malformed", 2),
    ("multiline-broken", 2),
    ("disconnect", 1),
    ("stall", 1),
)
_RCPTS = ("rcpt@example.com", "second@example.com", "third@example.com")


def _weighted(common: Any, rare: tuple[Any, ...], weight: int) -> st.SearchStrategy[Any]:
    """``common`` ``weight`` times as likely as each of ``rare``."""
    if weight < 1:
        raise InvalidArgument(f"weight={weight!r} must be at least 1")
    return st.sampled_from((common,) * weight + rare)


@st.composite
def receiving_hosts(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """One ``[world.hosts."<name>"]`` table (see the module docstring)."""
    host: dict[str, Any] = {}
    cert = draw(_weighted("valid", (*CERT_PROFILES, "none"), 8))
    if cert == "none":
        starttls = draw(st.sampled_from(("absent", "absent", "refused", *_STARTTLS_BROKEN)))
    else:
        starttls = draw(_weighted("offered", _STARTTLS, 2 * len(_STARTTLS)))
        if draw(st.integers(0, 49)) == 0:
            starttls = draw(st.sampled_from(_STARTTLS_SLOW))
    host["cert"] = cert
    if starttls != "offered":
        host["starttls"] = starttls
    if cert != "none" and draw(st.integers(0, 4)) == 0:
        host["key_type"] = draw(st.sampled_from(("rsa", "ecdsa")))
    window = draw(
        st.sampled_from(
            ((), (), (), (), ("1.2", "1.2"), ("1.3", "1.3"), ("1.0", "1.0"), ("1.1", "1.1"))
        )
    )
    if window:
        host["tls_min"], host["tls_max"] = window
    tlsa = draw(st.sampled_from(("absent", "absent", "match", "match", "wrong", "both", "pkix")))
    if cert != "none" and tlsa in ("match", "both"):
        # DANE-EE records that match whatever is served; the wrong digest always uses
        # matching type 1, so digest agility (RFC 7671 §9) never discards the match.
        host["tlsa"] = [draw(st.sampled_from(([3, 1, 1], [3, 0, 1], [3, 1, 2], [3, 1, 0])))]
    if tlsa in ("wrong", "both") or (cert == "none" and tlsa == "match"):
        host["tlsa_raw"] = [WRONG_DIGEST]
    elif tlsa == "pkix":
        host["tlsa_raw"] = [UNUSABLE_TLSA]
    if draw(st.integers(0, 5)) == 0:
        host["replies"] = draw(stage_faults())
    return host


#: The ``broken-*`` modes a host without a certificate can still play (no real TLS).
_STARTTLS_BROKEN = tuple(m for m in _STARTTLS if m.startswith("broken-"))


@st.composite
def stage_faults(draw: st.DrawFn) -> dict[str, str]:
    """A ``replies`` table: one fault, or one refusal, at one SMTP stage."""
    stage = draw(st.sampled_from(sorted(STAGE_ACTIONS)))
    kind = draw(st.sampled_from(tuple(k for k, w in _STAGE_FAULTS for _ in range(w))))
    temporary, permanent = STAGE_ACTIONS[stage]
    action = {"4xx": temporary, "5xx": permanent}.get(kind, kind)
    replies = {stage: action}
    if stage == "ehlo" and kind == "5xx":
        replies["helo"] = action  # a refused greeting, whichever verb the client uses
    return replies


@st.composite
def mx_sets(draw: st.DrawFn) -> list[tuple[int, str]]:
    """One to three (preference, host) pairs; hosts in the domain or at the hoster."""
    count = draw(st.integers(1, 3))
    prefs = draw(st.lists(st.sampled_from((0, 10, 10, 20, 30)), min_size=count, max_size=count))
    names = [
        f"mx{i}.{HOSTER}" if draw(st.integers(0, 5)) == 0 else f"mx{i}.{DOMAIN}"
        for i in range(1, count + 1)
    ]
    return sorted(zip(prefs, names, strict=True))


def _pattern(draw: st.DrawFn, host: str) -> str:
    form = draw(st.sampled_from(("exact", "exact", "upper", "wildcard")))
    if form == "upper":
        return host.upper() if draw(st.booleans()) else host.title()
    if form == "wildcard":
        return "*." + host.partition(".")[2]
    return host


@st.composite
def _policy_body(
    draw: st.DrawFn, mode: str, mx: list[tuple[int, str]], *, well_formed: bool = False
) -> str:
    patterns = [_pattern(draw, h) for _, h in mx if draw(st.integers(0, 3))]
    if draw(st.integers(0, 5)) == 0:
        patterns.append(draw(st.sampled_from(("other.example.net", f"*.mx1.{DOMAIN}"))))
    if mode == "enforce" and not patterns:
        patterns = ["unrelated.example.net"]
    fields = [f"mode: {mode}", *(f"mx: {p}" for p in dict.fromkeys(patterns))]
    fields.append(f"max_age: {draw(st.sampled_from((86400, 604800, 31557600)))}")
    if draw(st.integers(0, 5)) == 0:
        fields.append("x-note: fuzzed")
    fields = draw(st.permutations(fields))
    malformed = (
        None if well_formed else draw(_weighted(None, ("version", "max_age", "mode", "junk"), 30))
    )
    if malformed == "version":
        head = ["version: STSv2"]
    elif malformed == "max_age":
        head, fields = ["version: STSv1"], [f for f in fields if not f.startswith("max_age")]
    elif malformed == "mode":
        head, fields = (
            ["version: STSv1"],
            ["mode: strict" if f.startswith("mode") else f for f in fields],
        )
    elif malformed == "junk":
        head = ["<html>not a policy</html>"]
    else:
        head = ["version: STSv1"]
    newline = draw(st.sampled_from(("\n", "\n", "\r\n")))
    return newline.join(head + fields) + newline


@st.composite
def sts_parts(
    draw: st.DrawFn, mx: list[tuple[int, str]], *, enforce: bool = False
) -> dict[str, Any]:
    """The ``mta_sts_txt``, ``policy`` and ``policy_host`` keys of the domain table.

    Args:
        mx: the domain's MX set (the policy's patterns are drawn from it).
        enforce: draw only a TXT record, body and answer that put ``enforce`` in force.
    """
    parts: dict[str, Any] = {}
    txt = (
        "valid"
        if enforce
        else draw(_weighted("valid", ("absent", "two", "malformed", "other"), 16))
    )
    if txt == "valid":
        parts["mta_sts_txt"] = [draw(st.sampled_from(("v=STSv1; id=F1", "v=STSv1;id=20260101")))]
    elif txt == "two":
        parts["mta_sts_txt"] = ["v=STSv1; id=F1", "v=STSv1; id=F2"]
    elif txt == "malformed":
        parts["mta_sts_txt"] = [draw(st.sampled_from(("v=STSv1; id=", "v=STSv2; id=F1")))]
    elif txt == "other":
        parts["mta_sts_txt"] = ["v=spf1 -all", "v=STSv1; id=F1"]
    if not enforce and draw(st.integers(0, 19)) == 0:
        return parts  # no policy host at all
    mode = "enforce" if enforce else draw(_weighted("enforce", ("testing", "none"), 5))
    parts["policy"] = draw(_policy_body(mode, mx, well_formed=enforce))
    host: dict[str, Any] = {}
    cert = "valid" if enforce else draw(_weighted("valid", CERT_PROFILES, 30))
    if cert != "valid":
        host["cert"] = cert
    answer = (
        "ok"
        if enforce
        else draw(
            _weighted(
                "ok",
                ("404", "500", "html", "no-type", "charset", "redirect", "reset", "oversize",
                 "hang"),
                40,
            )
        )
    )  # fmt: skip
    if answer in ("404", "500"):
        host["status"] = int(answer)
    elif answer == "html":
        host["content_type"] = "text/html"
    elif answer == "no-type":
        host["content_type"] = False
    elif answer == "charset":
        host["content_type"] = "text/plain; charset=utf-8"
    elif answer == "redirect":
        host["behaviour"] = "redirect"
        host["location"] = f"https://www.{DOMAIN}/.well-known/mta-sts.txt"
    elif answer in ("reset", "hang"):
        host["behaviour"] = answer
    elif answer == "oversize":
        host["behaviour"], host["oversize_bytes"] = "oversize", 200_000
    if host:
        parts["policy_host"] = host
    return parts


@st.composite
def dns_faults(
    draw: st.DrawFn, mx: list[tuple[int, str]], *, spare_sts: bool = False
) -> dict[str, Any]:
    """A ``[world.dns]`` table: at most two faults, on names the delivery looks up.

    Args:
        mx: the domain's MX set.
        spare_sts: no fault on the ``_mta-sts`` TXT record or the policy host's name.
    """
    hosts = [h for _, h in mx]
    sts_names = [] if spare_sts else [(f"_mta-sts.{DOMAIN}", "TXT"), (f"mta-sts.{DOMAIN}", "A")]
    names = [
        *sts_names,
        (DOMAIN, "MX"),
        *((h, "A") for h in hosts),
        *((f"_25._tcp.{h}", "TLSA") for h in hosts),
    ]
    count = draw(st.sampled_from((0, 0, 0, 0, 1, 1, 2)))
    chosen = draw(st.lists(st.sampled_from(names), min_size=count, max_size=count, unique=True))
    table: dict[str, Any] = {}
    for name, rrtype in chosen:
        fault = draw(st.sampled_from(("servfail", "servfail", "refused", "bogus", "drop")))
        if fault == "bogus" and rrtype == "MX":
            fault = "servfail"
        table.setdefault(name, {})[rrtype] = fault
    return table


@st.composite
def destination_controls(draw: st.DrawFn, *, sts_on: bool = False) -> dict[str, Any]:
    """``[sender.destination_controls]``: the Default entry and the domain's entry.

    Args:
        sts_on: MTA-STS switched on for the domain (so a TLS setting other than No).
    """
    settings = tuple(t for t in _TLS_SETTINGS if t != "no") if sts_on else _TLS_SETTINGS
    tls = draw(st.sampled_from(settings))
    entry: dict[str, Any] = {"tls": tls}
    entry["dane"] = draw(st.sampled_from(("none", "none", "opportunistic", "mandatory")))
    # docs/gateway-behaviour.md §3 [SEED]: MTA-STS cannot be switched on with TLS No.
    entry["mta_sts"] = sts_on or (tls != "no" and draw(st.sampled_from((True, True, True, False))))
    knobs = {
        "coexistence": ("hybrid", "dane-precedence", "literal"),
        "sts_testing_falls_back": (True, False),
        "opportunistic_dane_fail_falls_back": (False, True),
        "preferred_post220_failure": ("defer", "clear"),
    }
    for key, values in knobs.items():
        if draw(st.integers(0, 3)) == 0:
            entry[key] = draw(st.sampled_from(values))
    return {"default": {"tls": "preferred"}, DOMAIN: entry}


@st.composite
def fuzz_scenarios(
    draw: st.DrawFn, controls: dict[str, Any] | None = None, *, waits: bool = True
) -> dict[str, Any]:
    """A whole scenario dict: ``scenario``, ``world``, ``sender`` and one ``send`` step.

    Args:
        controls: the domain's Destination Controls entry to use instead of drawing
            one (a real MTA's profile has one fixed configuration).
        waits: draw faults that keep the client waiting until its timeout (an MX
            that stalls, a policy host that hangs); False for an engine whose own
            timeouts are too long to wait for.
    """
    # One world in three with enforce certainly in force (module docstring); for a real
    # MTA (``controls`` given) its MTA-STS switch is its own.
    enforce = draw(st.sampled_from((False, False, True)))
    mx = draw(mx_sets())
    domain: dict[str, Any] = {
        "dnssec": draw(st.sampled_from(("insecure", "secure", "secure"))),
        "mx": [f"{p} {h}" for p, h in mx],
        **draw(sts_parts(mx, enforce=enforce)),
    }
    world: dict[str, Any] = {"domains": {DOMAIN: domain}}
    if any(h.endswith(HOSTER) for _, h in mx):
        world["domains"][HOSTER] = {"dnssec": draw(st.sampled_from(("insecure", "secure")))}
    world["hosts"] = {h: draw(receiving_hosts(h)) for _, h in mx}
    faults = draw(dns_faults(mx, spare_sts=enforce))
    if faults:
        world["dns"] = faults
    if not waits:
        _without_waits(world)
    rcpts = draw(st.lists(st.sampled_from(_RCPTS), min_size=1, max_size=3, unique=True))
    if controls is None:
        sender = draw(destination_controls(sts_on=enforce))
    else:
        sender = {"default": {"tls": "preferred"}, DOMAIN: dict(controls)}
    return {
        "scenario": {"id": "fuzz-world", "title": "a world drawn by harness.fuzz", "topic": "fuzz"},
        "world": world,
        "sender": {"destination_controls": sender},
        "steps": [{"send": {"from": SENDER, "to": rcpts}}],
    }


def _without_waits(world: dict[str, Any]) -> None:
    """Turn each stall, hanging policy host and dropped DNS query into a quick failure."""
    for host in world["hosts"].values():
        if host.get("starttls") == "broken-stall":
            host["starttls"] = "broken-reset"
        replies = host.get("replies", {})
        for stage, action in list(replies.items()):
            if action == "stall":
                replies[stage] = "reset"
    for domain in world["domains"].values():
        if domain.get("policy_host", {}).get("behaviour") == "hang":
            domain["policy_host"]["behaviour"] = "reset"
    for answers in world.get("dns", {}).values():
        for rrtype, fault in list(answers.items()):
            if fault == "drop":
                answers[rrtype] = "servfail"
