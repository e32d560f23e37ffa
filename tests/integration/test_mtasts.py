"""MTA-STS end to end: discovery, fetch, cache and the three modes, against W-STS.

W-STS (docs/requirements.md §0.2): ``example.com MX 10 mx1, MX 20 mx2``, the TXT
``v=STSv1; id=A1`` and P-enf (both MX listed) served at
``https://mta-sts.example.com``; both MX present trusted certificates for their own
names. "mx1-bad" is mx1 presenting a self-signed certificate.

The profile is TLS *Preferred* with MTA-STS on (the seed's CLI example) unless a test
says otherwise. Under ``enforce`` the setting's own blocking checks stay and RFC 8461's
are added (docs/gateway-behaviour.md §2.2), so with Preferred the RFC checks alone decide, while
Required-Verify adds the appliance's Verify algorithm, which rejects a certificate that
names only the MX host (seed troubleshooting 1).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.sim import (
    Simulation,
    assert_delivered_to,
    assert_no_mail_anywhere,
    mail_sessions,
    one_reason,
    simulation,
    sts_world,
)

MX1, MX2 = "mx1.example.com", "mx2.example.com"
POLICY_HOST = "mta-sts.example.com"
HOSTED = "required-verify-hosted"
PREFERRED = "preferred"
MX1_BAD = {MX1: {"cert": "self-signed"}}


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\n".join(lines) + "\n"


def recipient(sim: Simulation) -> Any:
    (r,) = sim.reports[-1].recipients
    return r


def session_failures(sim: Simulation, mx: str) -> list[dict[str, Any]]:
    """The ``sts`` failure entries of the ``tls.session`` events (TLS-RPT data) for ``mx``."""
    out: list[dict[str, Any]] = []
    for e in sim.codes("tls.session"):
        if e.fields["mx"] == mx:
            out += [f for f in e.fields["failures"] if f["policy_type"] == "sts"]  # type: ignore[attr-defined]
    return out


# --- enforce -----------------------------------------------------------------------------


async def test_enforce_mx1_bad_delivers_via_mx2_disc_1_apply_2_cert_3():
    async with simulation(sts_world(hosts=MX1_BAD), tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX2, tls=True)
        assert mail_sessions(sim.world, MX1) == []
        assert recipient(sim).verified == "pkix"
        assert [q.qname for q in sim.world.dns.queries(qtype="TXT")] == ["_mta-sts.example.com"]
        assert sim.world.policy_host.count(POLICY_HOST) == 1
        (deferring,) = sim.codes("tls.verify.deferring")
        assert deferring.fields["mx"] == MX1
        assert deferring.fields["result_type"] == "certificate-not-trusted"
        assert "MTA-STS policy for the domain (example.com) Successful." in sim.texts()


async def test_enforce_skips_an_mx_not_in_the_policy_mx_1():
    world = sts_world(policy=policy("enforce", MX2))
    async with simulation(world, tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX2, tls=True)
        assert sim.world.sessions(MX1) == []  # not even a connection
        (skipped,) = sim.codes("delivery.host.skipped")
        assert skipped.fields["mx"] == MX1


async def test_enforce_all_candidates_bad_defers_with_no_mail_anywhere_apply_1_mx_6():
    world = sts_world(policy=policy("enforce", MX2), hosts={MX2: {"cert": "self-signed"}})
    async with simulation(world, tls=PREFERRED, mta_sts=True) as sim:
        report = await sim.send()
        assert report.status == "deferred"
        assert_no_mail_anywhere(sim.world)
        assert sim.world.sessions(MX1) == []
        assert not sim.codes("delivery.bounced")


async def test_enforce_no_starttls_is_not_delivered_in_clear_cert_1():
    world = sts_world(hosts={MX1: {"starttls": "absent"}})
    async with simulation(world, tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX2, tls=True)
        assert not [s for s in sim.world.sessions() if s.in_clear]


async def test_enforce_with_required_verify_defers_a_hosted_mx_seed_troubleshooting_1():
    # Seed troubleshooting 1: the certificate names only the MX host, and Required-Verify's
    # own check (the Verify algorithm) stays under enforce; the fix is Verify Hosted.
    world = sts_world(mx=[(10, MX1)])
    async with simulation(world, tls="required-verify", mta_sts=True) as sim:
        await sim.send()
        r = recipient(sim)
        assert (r.status, r.result_type) == ("deferred", "certificate-host-mismatch")
        event = one_reason(sim, "tls.verify.deferring", "certificate-host-mismatch")
        assert event.fields["detail"] == "peer cert does not match domain example.com"
        assert_no_mail_anywhere(sim.world)


async def test_enforce_with_required_verify_hosted_delivers_to_the_hosted_mx():
    world = sts_world(mx=[(10, MX1)])
    async with simulation(world, tls=HOSTED, mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "pkix"


async def test_enforce_with_preferred_requires_starttls_cert_1():
    # RFC 8461 §5: under enforce even a Preferred setting never falls back to clear.
    world = sts_world(mx=[(10, MX1)], hosts={MX1: {"starttls": "refused"}})
    async with simulation(world, tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        r = recipient(sim)
        assert (r.status, r.result_type) == ("deferred", "starttls-not-supported")
        one_reason(sim, "tls.required.failed", "starttls-not-supported")
        assert_no_mail_anywhere(sim.world)


async def test_enforce_rejects_a_certificate_for_another_host_cert_6():
    # mx1's certificate names mx2, another host the policy allows: not enough (CERT-6b).
    world = sts_world(mx=[(10, MX1)], hosts={MX1: {"names": [MX2]}})
    async with simulation(world, tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        r = recipient(sim)
        assert (r.status, r.result_type) == ("deferred", "certificate-host-mismatch")
        one_reason(sim, "tls.verify.deferring", "certificate-host-mismatch")


async def test_enforce_defers_on_the_first_attempt_and_never_bounces_apply_7():
    world = sts_world(mx=[(10, MX1)], hosts=MX1_BAD)
    async with simulation(world, tls=PREFERRED, mta_sts=True) as sim:
        report = await sim.send(final=True)
        assert report.status == "deferred"
        r = recipient(sim)
        assert (r.status, r.result_type) == ("deferred", "certificate-not-trusted")
        (delayed,) = sim.codes("delivery.delayed")
        assert delayed.fields["result_type"] == "certificate-not-trusted"
        # APPLY-6: the final attempt looked the TXT record up (in re-check mode, which
        # also ignores the FETCH-15 throttle) before the message can fail for good.
        assert len(sim.world.dns.queries("_mta-sts.example.com", "TXT")) == 1


# --- testing and none ---------------------------------------------------------------------


async def test_testing_delivers_despite_a_bad_certificate_and_records_it_apply_3():
    world = sts_world(policy=policy("testing", MX1, MX2), mx=[(10, MX1)], hosts=MX1_BAD)
    async with simulation(world, tls="preferred", mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        failures = session_failures(sim, MX1)
        assert [(f["policy_type"], f["result_type"]) for f in failures] == [
            ("sts", "certificate-not-trusted")
        ]
        assert not sim.codes("tls.verify.deferring", "tls.required.failed")


async def test_testing_delivers_to_an_mx_outside_the_policy_mx_7():
    world = sts_world(policy=policy("testing", "other.example.net"), mx=[(10, MX1)])
    async with simulation(world, tls="preferred", mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert session_failures(sim, MX1) != []


async def test_testing_without_starttls_delivers_in_clear_apply_4():
    world = sts_world(
        policy=policy("testing", MX1), mx=[(10, MX1)], hosts={MX1: {"starttls": "absent"}}
    )
    async with simulation(world, tls="preferred", mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=False)
        failures = session_failures(sim, MX1)
        assert [f["result_type"] for f in failures] == ["starttls-not-supported"]


async def test_mode_none_ignores_the_policy_apply_5():
    world = sts_world(policy=policy("none"), mx=[(10, MX1)], hosts=MX1_BAD)
    async with simulation(world, tls="preferred", mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert not sim.codes("sts.apply", "sts.success")
        assert session_failures(sim, MX1) == []


# --- fetch failures without a cache: no policy, delivered under the TLS setting -----------

FETCH_FAILURES = {
    "404": ({"status": 404}, "sts-policy-fetch-error"),
    "redirect": (
        {"behaviour": "redirect", "location": "https://mta-sts.example.com/elsewhere"},
        "sts-policy-fetch-error",
    ),
    "timeout": ({"behaviour": "hang"}, "sts-policy-fetch-error"),
    "bad-cert": ({"cert": "self-signed"}, "sts-webpki-invalid"),
    "wrong-name": ({"cert": "wrong-name"}, "sts-webpki-invalid"),
    "oversize": ({"behaviour": "oversize"}, "sts-policy-fetch-error"),
    "endless": ({"behaviour": "endless"}, "sts-policy-fetch-error"),
    "media-type": ({"content_type": "text/html"}, "sts-policy-invalid"),
}


@pytest.mark.parametrize("case", sorted(FETCH_FAILURES))
async def test_fetch_failure_without_cache_means_no_policy_fetch_14(case):
    host, result_type = FETCH_FAILURES[case]
    world = sts_world(policy_host=host, hosts=MX1_BAD)
    async with simulation(world, tls="preferred", mta_sts=True) as sim:
        await sim.send()
        # FETCH-14: deliver as though the domain had no MTA-STS: mx1 (bad) is used.
        assert_delivered_to(sim.world, MX1, tls=True)
        one_reason(sim, "sts.fetch.failed", result_type)
        assert "Failure encountered while fetching MTA-STS policy for the domain (example.com)" in (
            sim.texts()
        )
        assert not sim.codes("sts.apply")
        if case == "redirect":  # FETCH-9: the Location is never requested
            paths = [r.path for r in sim.world.policy_host.requests(POLICY_HOST)]
            assert paths == ["/.well-known/mta-sts.txt"]


@pytest.mark.parametrize("case", ["404", "timeout", "bad-cert", "media-type"])
async def test_fetch_failure_with_a_cached_policy_keeps_enforcing_cache_6(case):
    host, result_type = FETCH_FAILURES[case]
    async with simulation(sts_world(), tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()  # caches P-enf under id A1
        assert_delivered_to(sim.world, MX1, tls=True)
        # A new id makes the engine fetch again; the host now fails and mx1 goes bad.
        await sim.world.update_domain("example.com", mta_sts_txt=["v=STSv1; id=A2"])
        await sim.world.update_policy("example.com", **host)
        await sim.world.rotate_cert(MX1, "self-signed")
        sim.world.servers.clear_logs()
        sim.reset()
        sim.clock.advance(3600)
        await sim.restart()  # the cache survives (CACHE-12); no pooled connection does
        await sim.send()
        assert_delivered_to(sim.world, MX2, tls=True)
        assert mail_sessions(sim.world, MX1) == []
        fetch_failures = sim.codes("sts.fetch.failed")
        assert [e.fields["result_type"] for e in fetch_failures] == [result_type]
        assert len(sim.codes("sts.apply")) == 1


async def test_cached_policy_applies_when_the_txt_lookup_fails_cache_2():
    async with simulation(sts_world(), tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        await sim.world.set_dns("_mta-sts.example.com", "TXT", "servfail")
        await sim.world.rotate_cert(MX1, "self-signed")
        sim.world.servers.clear_logs()
        sim.clock.advance(600)
        await sim.send()
        assert_delivered_to(sim.world, MX2, tls=True)
        assert sim.world.policy_host.count(POLICY_HOST) == 0


async def test_unchanged_id_uses_the_cache_without_fetching_cache_5():
    async with simulation(sts_world(), tls=PREFERRED, mta_sts=True) as sim:
        await sim.send()
        sim.reset()
        await sim.send()
        assert sim.world.policy_host.count(POLICY_HOST) == 1
        assert "Valid cache entry found for the domain (example.com)." in sim.texts("debug")


# --- routes and the proxy -------------------------------------------------------------------


async def test_routed_domain_skips_mta_sts_seed():
    # Seed: "MTA STS is not applied to domains with SMTP routes"; not even a TXT lookup.
    world = sts_world(hosts=MX1_BAD)
    routes = {"example.com": [f"{MX1}:25"]}
    async with simulation(world, tls="preferred", mta_sts=True, routes=routes) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert sim.world.dns.queries("_mta-sts.example.com") == []
        assert sim.world.policy_host.count() == 0
        assert sim.world.dns.queries("example.com", "MX") == []


async def test_policy_fetch_through_the_connect_proxy_seed():
    world = sts_world(hosts=MX1_BAD, proxy={})
    async with simulation(world, tls=PREFERRED, mta_sts=True, use_proxy=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX2, tls=True)
        assert sim.world.proxy is not None
        (event,) = sim.world.proxy.log()
        assert event.target == "mta-sts.example.com:443"
        assert event.outcome == "tunnelled"
        assert "MTA-STS policy fetch request via the proxy" in sim.texts("debug")
        (request,) = sim.world.policy_host.requests(POLICY_HOST)
        assert request.sni == POLICY_HOST  # FETCH-16 through the tunnel too
        # The proxy resolves the name: the engine asks no A record for the policy host.
        assert sim.world.dns.queries(POLICY_HOST) == []


async def test_proxy_refusing_is_a_fetch_failure_not_a_direct_fetch():
    world = sts_world(hosts=MX1_BAD, proxy={"fault": "refuse"})
    async with simulation(world, tls="preferred", mta_sts=True, use_proxy=True) as sim:
        await sim.send()
        one_reason(sim, "sts.fetch.failed", "sts-policy-fetch-error")
        assert sim.world.policy_host.count() == 0
        assert_delivered_to(sim.world, MX1, tls=True)
