"""MX-8: the sender is itself an MX of the destination (RFC 5321 §5.1; RFC 8461 §8.4).

With ``[identity] names`` naming one of the MX hosts, the engine drops that MX and
every MX at its preference or worse *before* MTA-STS filters the list: a single pass
in preference order, so a policy that excludes the more preferred MXs never lets mail
through to a less preferred one. Each case has its control without the identity.
"""

from __future__ import annotations

from dataclasses import replace

from engine.config import IdentityConfig
from tests.integration.sim import (
    Simulation,
    assert_delivered_to,
    assert_no_mail_anywhere,
    simulation,
    sts_world,
)

MX1, SELF, MX3 = "mx1.example.com", "self.example.com", "mx3.example.com"
POLICY = (
    "version: STSv1\nmode: enforce\nmx: mx3.example.com\nmx: self.example.com\nmax_age: 86400\n"
)
BACKUP = ((10, MX1), (20, SELF), (30, MX3))


def as_sender(sim: Simulation, *names: str) -> None:
    """Tell the engine its own names (``[identity] names``)."""
    config = replace(sim.engine.config, identity=IdentityConfig(names))
    sim.engine.config = sim.engine.services.config = config


async def test_backup_mx_sender_defers_rather_than_use_a_less_preferred_policy_mx() -> None:
    # mx1 (10) is not in the policy; self (20) is us; mx3 (30) is in the policy. RFC 5321
    # §5.1 drops 20 and 30, MTA-STS then drops mx1: nothing is left, so the mail waits.
    async with simulation(sts_world(policy=POLICY, mx=BACKUP), mta_sts=True) as sim:
        as_sender(sim, SELF)
        report = await sim.send()
        (r,) = report.recipients
        assert r.status == "deferred"
        assert_no_mail_anywhere(sim.world)
        assert not sim.world.sessions(SELF) and not sim.world.sessions(MX3)
        assert not sim.codes("delivery.start", "delivery.bounced")


async def test_control_without_identity_the_engine_delivers_to_self() -> None:
    # Not knowing it is self.example.com, the engine rightly takes it for another MX.
    async with simulation(sts_world(policy=POLICY, mx=BACKUP), mta_sts=True) as sim:
        (r,) = (await sim.send()).recipients
        assert r.status == "delivered" and r.mx == SELF
        assert_delivered_to(sim.world, SELF, tls=True)


async def test_sender_as_most_preferred_mx_defers_with_the_reason() -> None:
    mx = ((10, SELF), (20, MX3))
    async with simulation(sts_world(policy=None, txt=None, mx=mx)) as sim:
        as_sender(sim, SELF)
        (r,) = (await sim.send()).recipients
        assert r.status == "deferred"
        assert r.reason.startswith(f"this sender is MX {SELF} (preference 10)")
        assert "RFC 5321 §5.1" in r.reason
        assert sim.world.sessions() == []


async def test_equal_preference_is_dropped_and_more_preferred_mx_is_used() -> None:
    # "all records at that preference level and higher-numbered ones MUST be discarded"
    world = sts_world(policy=None, txt=None, mx=((10, MX1), (20, SELF), (20, MX3)))
    async with simulation(world) as sim:
        as_sender(sim, SELF)
        (r,) = (await sim.send()).recipients
        assert r.status == "delivered" and r.mx == MX1
        world2 = sts_world(policy=None, txt=None, mx=((20, SELF), (20, MX3)))
    async with simulation(world2) as sim:
        as_sender(sim, SELF)
        (r,) = (await sim.send()).recipients
        assert r.status == "deferred" and sim.world.sessions() == []


async def test_names_that_are_no_mx_change_nothing() -> None:
    async with simulation(sts_world(policy=None, txt=None, mx=BACKUP)) as sim:
        as_sender(sim, "elsewhere.example.net")
        (r,) = (await sim.send()).recipients
        assert r.status == "delivered" and r.mx == MX1
