"""The DANE option (None / Opportunistic / Mandatory) against W-DANE on loopback.

W-DANE (docs/requirements.md §0.2): a DNSSEC-secure zone (the fake resolver sets AD=1 on
its data), one MX ``mx1.example.com`` with a self-signed certificate, and
``_25._tcp.mx1.example.com TLSA 3 1 1 <sha256 of its SPKI>``. Variants change the
TLSA RRset, the zone's status or make the TLSA lookup fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.sim import (
    P_ENF,
    Simulation,
    assert_delivered_to,
    assert_no_mail_anywhere,
    one_reason,
    simulation,
    sts_world,
)

MX1 = "mx1.example.com"
TLSA_OWNER = f"_25._tcp.{MX1}"
WRONG_DIGEST = "3 1 1 " + "00" * 32


def w_dane(
    *, dnssec: str = "secure", dns: dict[str, Any] | None = None, sts: bool = False, **host: Any
) -> dict[str, Any]:
    """W-DANE; ``host`` overrides mx1 (default: self-signed, TLSA 3 1 1 of its key)."""
    mx1: dict[str, Any] = {"cert": "self-signed", "tlsa": [[3, 1, 1]], **host}
    if "tlsa_raw" in host:
        mx1.pop("tlsa")
    world = sts_world(
        policy=P_ENF if sts else None,
        txt="v=STSv1; id=A1" if sts else None,
        mx=[(10, MX1)],
        hosts={MX1: mx1},
        dnssec=dnssec,
    )
    if dns:
        world["dns"] = dns
    return world


def recipient(sim: Simulation) -> Any:
    (r,) = sim.reports[-1].recipients
    return r


def assert_deferred(sim: Simulation, result_type: str | None) -> None:
    r = recipient(sim)
    assert (r.status, r.result_type) == ("deferred", result_type), r
    assert not sim.codes("delivery.bounced", "delivery.start")
    assert_no_mail_anywhere(sim.world)
    assert not [s for s in sim.world.sessions() if s.in_clear]


DANE_ON = pytest.mark.parametrize("dane", ["opportunistic", "mandatory"])


# --- usable, passing -------------------------------------------------------------------


@DANE_ON
async def test_dane_ee_self_signed_delivers_authenticated_dane_6(dane):
    async with simulation(w_dane(), tls="preferred", dane=dane) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        r = recipient(sim)
        assert (r.status, r.verified) == ("delivered", "dane")
        assert len(sim.codes("dane.success")) == 1
        (session,) = sim.world.sessions(MX1)
        assert session.sni == MX1  # RFC 7672 §8.1 / DANE-33: SNI is the TLSA base domain


@DANE_ON
async def test_dane_pass_ignores_mta_sts_pkix_failure_seed_row_2(dane):
    # Seed: "if DANE succeeds, MTA-STS is ignored and the mail is delivered": the
    # self-signed certificate fails RFC 8461 §4.2 PKIX, which is only reported (AMB-24).
    world = w_dane(sts=True)
    async with simulation(world, tls="required-verify", dane=dane, mta_sts=True) as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "dane"
        assert not sim.codes("tls.verify.deferring", "tls.required.failed")


async def test_dane_none_ignores_tlsa_records():
    world = w_dane(tlsa_raw=[WRONG_DIGEST])
    async with simulation(world, tls="preferred", dane="none") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "none"
        assert not sim.world.dns.queries(TLSA_OWNER, "TLSA")


async def test_dane_with_tls_no_is_not_evaluated():
    async with simulation(w_dane(tlsa_raw=[WRONG_DIGEST]), tls="no", dane="mandatory") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=False)
        assert not sim.world.dns.queries(TLSA_OWNER, "TLSA")


# --- usable, failing -------------------------------------------------------------------


@DANE_ON
async def test_dane_tlsa_mismatch_defers_and_never_falls_back_dane_6_dane_35(dane):
    world = w_dane(tlsa_raw=[WRONG_DIGEST])
    async with simulation(world, tls="preferred", dane=dane) as sim:
        await sim.send()
        assert_deferred(sim, "tlsa-invalid")
        one_reason(sim, "tls.verify.deferring", "tlsa-invalid")
        assert len(sim.codes("dane.failed")) == 1
        (session,) = sim.world.sessions(MX1)  # one session: no reconnect in clear
        assert session.tls_completed


async def test_dane_mismatch_is_not_rescued_by_a_passing_mta_sts_policy_coex_1():
    # mx1 presents a trusted certificate that passes MTA-STS enforce, but the TLSA
    # record does not match it: RFC 8461 §2 forbids MTA-STS overriding DANE.
    world = w_dane(cert="valid", tlsa_raw=[WRONG_DIGEST], sts=True)
    world["domains"]["example.com"]["mx"] = [[10, MX1]]
    async with simulation(
        world, tls="required-verify-hosted", dane="opportunistic", mta_sts=True
    ) as sim:
        await sim.send()
        assert_deferred(sim, "tlsa-invalid")


# --- not applicable ----------------------------------------------------------------------


async def test_dane_opportunistic_insecure_zone_delivers_under_the_tls_setting_dane_8():
    world = w_dane(dnssec="insecure", tlsa_raw=[WRONG_DIGEST])
    async with simulation(world, tls="preferred", dane="opportunistic") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "none"
        # DANE-14: insecure addresses, so no TLSA query at all.
        assert not sim.world.dns.queries(TLSA_OWNER, "TLSA")


async def test_dane_mandatory_insecure_zone_defers_dane_required_dane_9_dane_34():
    world = w_dane(dnssec="insecure")
    async with simulation(world, tls="preferred", dane="mandatory") as sim:
        await sim.send()
        assert_deferred(sim, "dane-required")
        one_reason(sim, "delivery.host.skipped", "dane-required")
        assert sim.world.sessions() == []  # not even a connection


async def test_dane_mandatory_secure_denial_defers_dane_required_dane_34():
    world = w_dane()
    world["hosts"][MX1].pop("tlsa")
    async with simulation(world, tls="preferred", dane="mandatory") as sim:
        await sim.send()
        assert_deferred(sim, "dane-required")
        one_reason(sim, "delivery.host.skipped", "dane-required")


# --- TLSA lookup errors ----------------------------------------------------------------


@DANE_ON
@pytest.mark.parametrize("fault", ["servfail", "drop"])
async def test_dane_tlsa_lookup_error_defers_never_downgrades_dane_5_amb_25(dane, fault):
    # AMB-25 (KumoMTA #543): SERVFAIL or a timeout on TLSA is not "no TLSA".
    world = w_dane(dns={TLSA_OWNER: {"TLSA": fault}})
    async with simulation(world, tls="preferred", dane=dane) as sim:
        await sim.send()
        assert_deferred(sim, "dnssec-invalid")
        one_reason(sim, "delivery.host.skipped", "dnssec-invalid")
        assert sim.world.sessions() == []


async def test_dane_tlsa_lookup_error_is_not_rescued_by_mta_sts_coex_3():
    world = w_dane(cert="valid", sts=True, dns={TLSA_OWNER: {"TLSA": "servfail"}})
    async with simulation(
        world, tls="required-verify-hosted", dane="opportunistic", mta_sts=True
    ) as sim:
        await sim.send()
        assert_deferred(sim, "dnssec-invalid")


# --- unusable-only TLSA ------------------------------------------------------------------


async def test_dane_unusable_only_tlsa_makes_tls_mandatory_dane_7_dane_19():
    # Matching type 3 does not exist: the RRset is secure but has no usable record.
    world = w_dane(starttls="absent", cert="none", tlsa_raw=["3 1 3 abcd"])
    async with simulation(world, tls="preferred", dane="opportunistic") as sim:
        await sim.send()
        assert_deferred(sim, "starttls-not-supported")
        one_reason(sim, "tls.required.failed", "starttls-not-supported")


async def test_dane_unusable_only_tlsa_delivers_over_unauthenticated_tls_dane_7():
    world = w_dane(tlsa_raw=["3 1 3 abcd"])
    async with simulation(world, tls="preferred", dane="opportunistic") as sim:
        await sim.send()
        assert_delivered_to(sim.world, MX1, tls=True)
        assert recipient(sim).verified == "none"


async def test_dane_mandatory_unusable_only_tlsa_defers():
    # RFC 7672 §6 / DANE-34: mandatory DANE needs a usable TLSA record.
    world = w_dane(tlsa_raw=["3 1 3 abcd"])
    async with simulation(world, tls="preferred", dane="mandatory") as sim:
        await sim.send()
        r = recipient(sim)
        assert r.status == "deferred" and r.result_type is not None
        assert_no_mail_anywhere(sim.world)
