"""The seed's own ``mail_logs`` sequences, reproduced line for line.

The worlds use the seed's names: ``domain.com`` publishes ``v=STSv1; id=12345678598Z;``
and the seed's policy (``mode: enforce``, ``mx: *.mail123.domain.com``), and its MX
``mx1.mail123.domain.com`` presents a certificate for ``*.mail123.domain.com``. All of
it runs on loopback. Lines are compared after the timestamp prefix is stripped, with
the values the world decides substituted into ``<placeholders>``: DCID, MID,
addresses, the resolver and its timeout, the encache stamp.

How the seed's excerpts are read
--------------------------------
The seed prints an *info* excerpt and a *debug* excerpt of the same delivery. The
info excerpt is itself filtered: it leaves out ``Info: Applying MTA-STS policy``,
which the debug excerpt shows at Info level between the same two lines. So a seed
excerpt is an **ordered subsequence** of the full log, and:

* where the seed shows lines adjacent *in both excerpts* (the same second, nothing
  between them at that level), they must be **contiguous** in ours as well:
  ``New SMTP DCID`` → ``TLS success`` → ``MTA-STS ... Successful.`` →
  ``Delivery start`` at info level, and ``TLS success`` → ``Successful.`` →
  ``Delivery start`` at debug level too;
* every line of ours that is not a seed line must be one of the appliance's other
  documented lines (docs/gateway-behaviour.md §5.1: ``Message done``, ``Response``,
  ``DCID n close``; §5.4 ``Applying``) or, at debug level, a DNS or data line;
  anything else fails the test.

Two debug lines of the seed are not emulated, and the comparison skips them: the
``QN(..., 'recursive_nameserver0.parent')`` line (which names an appliance-internal
nameserver set) and the second ``Q(domain.com, 'MX')`` after ``New SMTP`` (the
appliance's own DNS cache at work). The seed's info excerpt says
``domain(mta-test.domain.com)`` in its first line, where its debug excerpt and every
other line say ``domain.com``: a redaction slip; we follow the debug excerpt.

The profile is TLS *Preferred* with MTA-STS on, the seed's CLI example: under
``enforce`` the RFC 8461 checks decide (the certificate names the MX pattern, not
``domain.com``). The troubleshooting pair comes from the same world under
*Required - Verify*.
"""

from __future__ import annotations

import re
from typing import Any

from tests.integration.sim import Simulation, simulation, substitute

DOMAIN = "domain.com"
MX = "mx1.mail123.domain.com"
RCPT = f"user@{DOMAIN}"
TXT = "v=STSv1; id=12345678598Z;"
SEED_POLICY = "version: STSv1\nmode: enforce\nmx: *.mail123.domain.com\nmax_age: 604800\n"

# Thu Sep 26 15:23:39-44 2024, info level (seed "info level mail_logs").
SEED_INFO = [
    "Info: Successfully fetched MTA-STS TXT record for domain(domain.com)",
    "Info: New SMTP DCID <dcid> interface <interface> address <address> port 25",
    "Info: DCID <dcid> TLS success protocol TLSv1.3 cipher TLS_AES_256_GCM_SHA384 "
    "subjectAltName:dNSName=*.mail123.domain.com",
    "Info: MTA-STS policy for the domain (domain.com) Successful.",
    "Info: Delivery start DCID <dcid> MID <mid> to RID [0]",
    "Info: Message finished MID <mid> done",
]

# The same delivery at debug level, with a warm policy cache (seed "debug level").
SEED_DEBUG = [
    "Debug: DNS query: Q(_mta-sts.domain.com, 'TXT')",
    "Debug: DNS query: QIP (_mta-sts.domain.com,'TXT','<resolver>',<timeout>)",
    "Debug: DNS encache (_mta-sts.domain.com, TXT, [(<stamp>L, 0, 'insecure', "
    "('v=STSv1; id=12345678598Z;',))])",
    "Info: Successfully fetched MTA-STS TXT record for domain(domain.com)",
    "Debug: Valid cache entry found for the domain (domain.com).",
    "Debug: DNS query: Q(domain.com, 'MX')",
    "Debug: DNS query: QIP (domain.com,'MX','<resolver>',<timeout>)",
    "Info: Applying MTA-STS policy for the domain (domain.com)",
    "Info: New SMTP DCID <dcid> interface <interface> address <address> port 25",
    "Info: DCID <dcid> TLS success protocol TLSv1.3 cipher TLS_AES_256_GCM_SHA384 "
    "subjectAltName:dNSName=*.mail123.domain.com",
    "Info: MTA-STS policy for the domain (domain.com) Successful.",
    "Info: Delivery start DCID <dcid> MID <mid> to RID [0]",
    "Info: Message finished MID <mid> done",
]

# Tue Sep 24 09:13:52 2024 (debug), translated as in docs/gateway-behaviour.md §5.4.
SEED_FETCH_TIMEOUT = [
    "Debug: DNS query: Q(_mta-sts.domain.com, 'TXT')",
    "Debug: DNS query: QIP (_mta-sts.domain.com,'TXT','<resolver>',<timeout>)",
    "Debug: DNS encache (_mta-sts.domain.com, TXT, [(<stamp>L, 0, 'insecure', "
    "('v=STSv1; id=12345678598Z;',))])",
    "Info: Successfully fetched MTA-STS TXT record for domain(domain.com)",
    "Debug: Fetch MTA-STS policy for the domain (domain.com)",
    "Debug: MTA-STS policy fetch request via the proxy",
    "Debug: STS policy fetch request failed due to connection timeout., for the domain domain.com",
    "Info: Failure encountered while fetching MTA-STS policy for the domain (domain.com)",
]

# Thu Sep 19 13:04:50 2024 (info): the same failure at info level.
SEED_FETCH_TIMEOUT_INFO = [
    "Info: Successfully fetched MTA-STS TXT record for domain(domain.com)",
    "Info: Failure encountered while fetching MTA-STS policy for the domain (domain.com)",
]

# Lines the appliance writes that the seed's excerpts leave out (docs/gateway-behaviour.md §5).
OTHER_INFO = [
    r"Info: Applying MTA-STS policy for the domain \(domain\.com\)",
    r"Info: Message done DCID \d+ MID \d+ to RID \[0\]",
    r"Info: MID \d+ RID \[0\] Response '250 .*'",
    r"Info: DCID \d+ close",
]
OTHER_DEBUG = [
    *OTHER_INFO,
    r"Debug: DNS (query:|encache) .*",
    r"Debug: tls\.session .*",  # the TLS-RPT data event
    r"Debug: sts\.policy\.none .*",
]


def seed_world(**policy_host: Any) -> dict[str, Any]:
    domain: dict[str, Any] = {
        "mx": [[10, MX]],
        "mta_sts_txt": [TXT],
        "policy": SEED_POLICY,
    }
    if policy_host:
        domain["policy_host"] = policy_host
    return {"domains": {DOMAIN: domain}, "hosts": {MX: {"cert": "wildcard"}}}


def values(sim: Simulation) -> dict[str, object]:
    """What the world and the engine chose for the placeholders."""
    out: dict[str, object] = {
        "resolver": sim.world.resolver[0],
        "timeout": f"{sim.engine.resolver.timeout:g}",
        "stamp": int(sim.clock.now() * 1e8),
        "mid": sim.reports[-1].mid,
    }
    connects = sim.codes("smtp.connect")
    if connects:
        (connect,) = connects
        out |= {
            "dcid": connect.fields["dcid"],
            "interface": connect.fields["interface"],
            "address": sim.world.address_of(MX),
        }
    return out


def positions(lines: list[str], expected: list[str]) -> list[int]:
    """Where each expected line sits in ``lines``, asserting an ordered subsequence."""
    found, at = [], 0
    for want in expected:
        try:
            at = lines.index(want, at)
        except ValueError:
            shown = "\n".join(lines)
            raise AssertionError(
                f"seed line missing or out of order:\n  {want}\nin:\n{shown}"
            ) from None
        found.append(at)
        at += 1
    return found


def assert_seed_sequence(
    lines: list[str],
    template: list[str],
    vals: dict[str, object],
    *,
    contiguous: list[tuple[int, int]],
    others: list[str],
) -> None:
    """The seed lines in order; ``contiguous`` index ranges adjacent; the rest allowed."""
    expected = [substitute(t, vals) for t in template]
    where = positions(lines, expected)
    for first, last in contiguous:
        assert where[first : last + 1] == list(range(where[first], where[last] + 1)), (
            f"seed lines {first}..{last} are adjacent in the seed but not here:\n"
            + "\n".join(lines[where[first] : where[last] + 1])
        )
    rest = [line for i, line in enumerate(lines) if i not in set(where)]
    stray = [line for line in rest if not any(re.fullmatch(p, line) for p in others)]
    assert stray == [], "lines the appliance would not write:\n" + "\n".join(stray)


async def test_seed_sep26_successful_delivery_at_info_level():
    async with simulation(seed_world(), tls="preferred", mta_sts=True, domain=DOMAIN) as sim:
        report = await sim.send(RCPT)
        assert report.status == "delivered"
        assert_seed_sequence(
            sim.lines("info"),
            SEED_INFO,
            values(sim),
            contiguous=[(1, 4)],
            others=OTHER_INFO,
        )
        (session,) = sim.world.sessions(MX)
        assert session.tls_version == "TLSv1.3" and session.sni == MX


async def test_seed_sep26_successful_delivery_at_debug_level_with_a_cached_policy():
    async with simulation(seed_world(), tls="preferred", mta_sts=True, domain=DOMAIN) as sim:
        await sim.send(RCPT)  # fetches and caches the policy
        sim.reset()
        sim.world.servers.clear_logs()
        await sim.send(RCPT)
        assert sim.world.policy_host.count() == 0
        assert_seed_sequence(
            sim.lines("debug"),
            SEED_DEBUG,
            values(sim),
            # Q .. QIP(MX) (the seed's QN line aside), Applying -> New SMTP, and
            # TLS success -> Successful. -> Delivery start.
            contiguous=[(0, 6), (7, 8), (9, 11)],
            others=OTHER_DEBUG,
        )


async def test_seed_sep24_policy_fetch_timeout_via_the_proxy_line_texts():
    world = seed_world(behaviour="hang") | {"proxy": {}}
    async with simulation(
        world, tls="preferred", mta_sts=True, domain=DOMAIN, use_proxy=True
    ) as sim:
        report = await sim.send(RCPT)
        # Seed §3 / FETCH-14: no policy and no cache, so delivery goes on under T.
        assert report.status == "delivered"
        assert sim.world.proxy is not None and len(sim.world.proxy.log()) == 1
        # The texts, contiguous, as the seed prints them (levels: see the next test).
        texts = [line.split(": ", 1)[1] for line in sim.lines("debug")]
        expected = [substitute(t, values(sim)).split(": ", 1)[1] for t in SEED_FETCH_TIMEOUT]
        start = texts.index(expected[0])
        assert texts[start : start + len(expected)] == expected
        (failed,) = sim.codes("sts.fetch.failed")
        assert failed.fields["result_type"] == "sts-policy-fetch-error"
        assert failed.fields["kind"] == "timeout"


async def test_seed_sep24_and_sep19_policy_fetch_timeout_levels():
    world = seed_world(behaviour="hang") | {"proxy": {}}
    async with simulation(
        world, tls="preferred", mta_sts=True, domain=DOMAIN, use_proxy=True
    ) as sim:
        await sim.send(RCPT)
        vals = values(sim)
        debug = sim.lines("debug")
        expected = [substitute(t, vals) for t in SEED_FETCH_TIMEOUT]
        start = debug.index(expected[0])
        assert debug[start : start + len(expected)] == expected
        info = sim.lines("info")
        start = info.index(SEED_FETCH_TIMEOUT_INFO[0])
        assert info[start : start + 2] == SEED_FETCH_TIMEOUT_INFO


async def test_seed_troubleshooting_required_verify_hosted_mx_lines():
    # Seed troubleshooting 1 (Tue Sep 24 10:02:52): the two lines, adjacent.
    async with simulation(seed_world(), tls="required-verify", mta_sts=True, domain=DOMAIN) as sim:
        report = await sim.send(RCPT)
        assert report.status == "deferred"
        vals = values(sim)
        expected = [
            "Info: DCID <dcid> TLS deferring: verify error: peer cert does not match domain "
            "domain.com",
            "Info: DCID <dcid> TLS was required but could not be successfully negotiated",
        ]
        lines = sim.lines("info")
        where = positions(lines, [substitute(t, vals) for t in expected])
        assert where[1] == where[0] + 1
        (session,) = sim.world.sessions(MX)
        assert not session.transactions
