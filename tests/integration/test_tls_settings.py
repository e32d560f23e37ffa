"""The six outbound TLS settings (docs/gateway-behaviour.md §1.1) against a real MX on loopback.

Each world has one MX, ``mx1.example.com``, with no MTA-STS or DANE, so only the
TLS setting decides (decision table row 7). What the MX saw on the wire is the
evidence: whether STARTTLS was sent, whether MAIL FROM went in clear, which TLS
version carried it.
"""

from __future__ import annotations

from typing import Any

from tests.integration.sim import (
    RCPT,
    Simulation,
    assert_delivered_to,
    assert_no_mail_anywhere,
    one_reason,
    simulation,
    sts_world,
)

MX1 = "mx1.example.com"
REQUIRED_FAILED = "TLS was required but could not be successfully negotiated"


def one_mx(**host: Any) -> dict[str, Any]:
    """example.com with one MX and no MTA-STS record."""
    return sts_world(policy=None, txt=None, mx=[(10, MX1)], hosts={MX1: host})


def tls_lines(sim: Simulation) -> list[str]:
    return [t for t in sim.texts() if " TLS " in t]


def recipient(sim: Simulation) -> Any:
    (r,) = sim.reports[-1].recipients
    return r


def assert_deferred(sim: Simulation, result_type: str | None) -> None:
    r = recipient(sim)
    assert r.status == "deferred", r
    assert r.result_type == result_type, r
    (delayed,) = sim.codes("delivery.delayed")
    assert delayed.fields["result_type"] == result_type
    assert not sim.codes("delivery.bounced", "tls.success", "delivery.start")
    assert_no_mail_anywhere(sim.world)


# --- No ------------------------------------------------------------------------------------


async def test_tls_no_never_sends_starttls_even_when_offered():
    async with simulation(one_mx(), tls="no") as sim:
        await sim.send()
        (session,) = sim.world.sessions(MX1)
        assert session.starttls_offered and not session.starttls_attempted
        assert "STARTTLS" not in session.commands
        assert_delivered_to(sim.world, MX1, tls=False)
        # CISCO 118500: no TLS line means the message did not go over TLS.
        assert tls_lines(sim) == []
        assert recipient(sim).verified == "clear"


# --- Preferred -----------------------------------------------------------------------------


async def test_tls_preferred_delivers_over_tls_without_checking_the_certificate():
    async with simulation(one_mx(cert="self-signed"), tls="preferred") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        (line,) = tls_lines(sim)
        assert line.startswith("DCID 1 TLS success protocol TLSv1.3 cipher ")
        assert recipient(sim).verified == "none"


async def test_tls_preferred_falls_back_to_clear_when_starttls_is_absent():
    async with simulation(one_mx(starttls="absent"), tls="preferred") as sim:
        await sim.send()
        (session,) = sim.world.sessions(MX1)
        assert not session.starttls_offered and not session.starttls_attempted
        assert_delivered_to(sim.world, MX1, tls=False)
        assert tls_lines(sim) == []
        assert recipient(sim).status == "delivered"


async def test_tls_preferred_falls_back_to_clear_when_starttls_is_refused_with_454():
    async with simulation(one_mx(starttls="refused"), tls="preferred") as sim:
        await sim.send()
        (session,) = sim.world.sessions(MX1)
        assert session.starttls_attempted and not session.tls_completed
        assert session.in_clear
        assert_delivered_to(sim.world, MX1, tls=False)
        # Before the 220 the fallback is silent: no TLS success line (CISCO 118500).
        assert not sim.codes("tls.success")


async def test_tls_preferred_defers_when_the_handshake_breaks_after_220():
    async with simulation(one_mx(starttls="broken-close"), tls="preferred") as sim:
        await sim.send()
        # docs/gateway-behaviour.md §1.1 [CISCO 118955]: after the 220 there is no fallback to
        # clear, not even on a new connection (preferred_post220_failure = defer).
        (session,) = sim.world.sessions(MX1)
        assert session.starttls_attempted and not session.in_clear
        assert_deferred(sim, "validation-failure")
        one_reason(sim, "tls.failed", "validation-failure")


async def test_tls_preferred_defers_when_the_server_answers_garbage_after_220():
    async with simulation(one_mx(starttls="broken-garbage"), tls="preferred") as sim:
        await sim.send()
        assert_deferred(sim, "validation-failure")
        one_reason(sim, "tls.failed", "validation-failure")


# --- Required ------------------------------------------------------------------------------


async def test_tls_required_delivers_over_tls_with_any_certificate():
    async with simulation(one_mx(cert="untrusted"), tls="required") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "none"
        assert not sim.codes("tls.verify.deferring", "tls.required.failed")


async def test_tls_required_defers_without_starttls():
    async with simulation(one_mx(starttls="absent"), tls="required") as sim:
        await sim.send()
        assert_deferred(sim, "starttls-not-supported")
        event = one_reason(sim, "tls.required.failed", "starttls-not-supported")
        assert f"DCID {event.fields['dcid']} {REQUIRED_FAILED}" in sim.texts()
        assert not sim.codes("tls.verify.deferring")


async def test_tls_required_defers_when_starttls_is_refused():
    async with simulation(one_mx(starttls="refused"), tls="required") as sim:
        await sim.send()
        assert_deferred(sim, "starttls-not-supported")
        one_reason(sim, "tls.required.failed", "starttls-not-supported")


# --- Preferred-Verify ----------------------------------------------------------------------


async def test_tls_preferred_verify_delivers_encrypted_unverified_over_a_bad_certificate():
    async with simulation(one_mx(cert="self-signed"), tls="preferred-verify") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        r = recipient(sim)
        assert (r.status, r.tls, r.verified) == ("delivered", "TLSv1.3", "none")
        # docs/gateway-behaviour.md §5.2 [INF]: the normal TLS success line; the failure is a
        # debug event.
        assert len(sim.codes("tls.success")) == 1
        (unverified,) = sim.codes("tls.unverified")
        assert unverified.fields["result_type"] == "certificate-not-trusted"


async def test_tls_preferred_verify_verifies_a_certificate_naming_the_domain():
    world = one_mx(names=[MX1, "example.com"])
    async with simulation(world, tls="preferred-verify") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "pkix"


async def test_tls_preferred_verify_falls_back_to_clear_without_starttls():
    async with simulation(one_mx(starttls="absent"), tls="preferred-verify") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=False)
        assert tls_lines(sim) == []


# --- Required-Verify -----------------------------------------------------------------------


async def test_tls_required_verify_defers_a_hosted_mx_with_the_seed_lines():
    # Seed troubleshooting 1: the certificate names only the MX host, so the Verify
    # algorithm (SAN against the e-mail domain) fails.
    async with simulation(one_mx(), tls="required-verify") as sim:
        await sim.send()
        assert_deferred(sim, "certificate-host-mismatch")
        event = one_reason(sim, "tls.verify.deferring", "certificate-host-mismatch")
        dcid = event.fields["dcid"]
        texts = sim.texts()
        start = texts.index(
            f"DCID {dcid} TLS deferring: verify error: peer cert does not match domain example.com"
        )
        assert texts[start + 1] == f"DCID {dcid} {REQUIRED_FAILED}"
        assert len(sim.codes("tls.required.failed")) == 1
        (session,) = sim.world.sessions(MX1)
        assert session.tls_completed and not session.transactions


async def test_tls_required_verify_delivers_when_the_certificate_names_the_domain():
    async with simulation(one_mx(names=[MX1, "example.com"]), tls="required-verify") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "pkix"


async def test_tls_required_verify_defers_an_expired_certificate():
    world = one_mx(cert="expired", names=[MX1, "example.com"])
    async with simulation(world, tls="required-verify") as sim:
        await sim.send()
        assert_deferred(sim, "certificate-expired")
        one_reason(sim, "tls.verify.deferring", "certificate-expired")


async def test_tls_required_verify_defers_without_starttls():
    async with simulation(one_mx(starttls="absent"), tls="required-verify") as sim:
        await sim.send()
        assert_deferred(sim, "starttls-not-supported")
        one_reason(sim, "tls.required.failed", "starttls-not-supported")
        assert not sim.codes("tls.verify.deferring")


# --- Required-Verify Hosted Domains ----------------------------------------------------


async def test_tls_required_verify_hosted_delivers_to_a_hosted_mx():
    # The same world as the Required-Verify deferral: Hosted Verify accepts the MX name.
    async with simulation(one_mx(), tls="required-verify-hosted") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "pkix"
        assert not sim.codes("tls.verify.deferring", "tls.required.failed")


async def test_tls_required_verify_hosted_defers_a_certificate_for_another_name():
    async with simulation(one_mx(cert="wrong-name"), tls="required-verify-hosted") as sim:
        await sim.send()
        assert_deferred(sim, "certificate-host-mismatch")
        one_reason(sim, "tls.verify.deferring", "certificate-host-mismatch")


async def test_tls_required_verify_hosted_defers_an_untrusted_chain():
    async with simulation(one_mx(cert="untrusted"), tls="required-verify-hosted") as sim:
        await sim.send()
        assert_deferred(sim, "certificate-not-trusted")
        one_reason(sim, "tls.verify.deferring", "certificate-not-trusted")


async def test_tls_deferral_is_never_a_bounce_and_keeps_the_recipient():
    async with simulation(one_mx(starttls="absent"), tls="required") as sim:
        report = await sim.send(RCPT, "other@example.com")
        assert [r.status for r in report.recipients] == ["deferred", "deferred"]
        assert report.status == "deferred"
        assert not sim.codes("message.finished")
