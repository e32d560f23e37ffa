"""The one step loop: act, settle, observe, check -- for the single and the batch runner.

Theory of operation
-------------------
A scenario's steps run the same way whichever runner drives them
(:mod:`harness.run.single`: one scenario, one world; :mod:`harness.run.batch.runner`:
many scenarios sharing one world and one engine lifetime):

1. the engine's clock is read *before* the step (a step's ``clock`` is when it
   began, so an ``advance`` step shows the time it advanced from);
2. :func:`act` does the step: a send (with ``final`` passed to the engine: the
   scenario's last attempt, when ``Capability.FINAL`` is asked for), a clock advance,
   a restart, or a change to the world;
3. the world settles (SMTP session records are final when no session is live);
4. a :class:`Recorder` cuts the engine's new events and the world's new records into
   the step's :class:`~harness.scenario.observation.StepObservation`; the batch
   runner gives it a world view that leaves out the other scenarios' names;
5. the step's ``[steps.expect]`` is checked against that observation. A step that
   raises ends the loop; its traceback is the observation's ``error``.

:func:`refusal` is ``[expect] config_error``: with the world up, the engine must refuse
``[sender]`` at start with a message that matches.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.errors import MxPatternError
from engine.core.mx import normalize_host
from harness.adapters.base import AdapterError, EngineUnderTest
from harness.run.result import StepResult
from harness.scenario.assertions import Mismatch, check
from harness.scenario.loader import config_error_matches
from harness.scenario.model import Scenario, SendSpec, Step, StepKind
from harness.scenario.observation import DeliveryRecord, StepObservation, WorldSlice
from harness.world.world import World

__all__ = ["Recorder", "act", "message", "refusal", "run_step", "run_steps"]


def _header_address(address: str) -> str:
    # What an ASCII-only writer puts in To: the domain in A-labels (RFC 5890). A U-label
    # there makes the message an internationalised one (RFC 6532), which a relay must
    # not send to a server without SMTPUTF8 (RFC 6531 §3.2; engine/core/transfer.py).
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{normalize_host(domain)}"
    except MxPatternError:
        return address  # not a name IDNA can write: the scenario meant it as it is


def message(scenario: Scenario, step: Step, send: SendSpec) -> bytes:
    """The bytes a send step submits: its ``data``, or a small message of its own."""
    if send.data is not None:
        return send.data
    to = ", ".join(f"<{_header_address(r)}>" for r in send.rcpts)
    return (
        f"From: <{send.mail_from}>\r\nTo: {to}\r\n"
        f"Subject: {scenario.id} step {step.index}\r\n"
        f"Message-ID: <{scenario.id}.{step.index}@harness.invalid>\r\n\r\n"
        "Sent by the mta-sts-harness conformance catalog.\r\n"
    ).encode()


async def act(
    scenario: Scenario, step: Step, world: World, engine: EngineUnderTest
) -> tuple[DeliveryRecord, ...]:
    """Do one step; a send returns the engine's per-recipient report."""
    a = step.args
    if step.kind is StepKind.SEND:
        data = message(scenario, step, a)
        return tuple(await engine.send(a.mail_from, a.rcpts, data, final=a.final))
    if step.kind is StepKind.ADVANCE:
        await engine.advance(a)
    elif step.kind is StepKind.RESTART_ENGINE:
        await engine.restart()
    elif step.kind is StepKind.UPDATE_DOMAIN:
        await world.update_domain(a["domain"], **{k: v for k, v in a.items() if k != "domain"})
    elif step.kind is StepKind.UPDATE_POLICY:
        kw = {k: v for k, v in a.items() if k not in ("domain", "body")}
        await world.update_policy(a["domain"], a.get("body"), **kw)
    elif step.kind is StepKind.SET_DNS:
        await world.set_dns(a["name"], a["rrtype"], a["behaviour"], delay_ms=a["delay_ms"])
    else:
        await world.rotate_cert(
            a["host"], a["profile"], names=a["names"], update_tlsa=a["update_tlsa"]
        )
    return ()


class Recorder:
    """Cuts the world's records and the engine's events into per-step observations.

    Args:
        engine: the engine; its events from index ``seen`` on are new.
        world_view: the world's records since the last call (a
            :class:`~harness.scenario.observation.WorldWatcher` 's ``take``, or the
            batch runner's view of one scenario's names).
        seen: how many of the engine's events are already accounted for.
    """

    def __init__(
        self, engine: EngineUnderTest, world_view: Callable[[], WorldSlice], seen: int = 0
    ) -> None:
        self.engine, self.world_view, self.seen = engine, world_view, seen

    def take(
        self, index: int, label: str, clock: float, began: float, **kw: Any
    ) -> StepObservation:
        """The observation since the last call; ``clock`` is the engine's at its start."""
        events = tuple(self.engine.events()[self.seen :])
        self.seen += len(events)
        return StepObservation(
            index=index,
            label=label,
            events=events,
            lines=tuple(e.line for e in events if e.line),
            world=self.world_view(),
            clock=clock,
            seconds=time.monotonic() - began,
            **kw,
        )


async def run_step(
    scenario: Scenario, step: Step, world: World, engine: EngineUnderTest, rec: Recorder
) -> StepResult:
    """One step: the clock read first, act, settle, observe, check."""
    began, clock = time.monotonic(), engine.now()
    deliveries: tuple[DeliveryRecord, ...] = ()
    error = None
    try:
        deliveries = await act(scenario, step, world, engine)
        await world.settle()
    except Exception:
        error = traceback.format_exc()
    obs = rec.take(step.index, step.label, clock, began, deliveries=deliveries, error=error)
    mismatches = () if error else tuple(check(step.expect, [obs]))
    return StepResult(step.index, step.kind.value, step.label, step.expect, obs, mismatches)


async def run_steps(
    scenario: Scenario, world: World, engine: EngineUnderTest, rec: Recorder
) -> list[StepResult]:
    """Every step of ``scenario`` in order, up to and including one that raised."""
    steps: list[StepResult] = []
    for step in scenario.steps:
        steps.append(await run_step(scenario, step, world, engine, rec))
        if steps[-1].observation.error:
            break
    return steps


async def refusal(
    scenario: Scenario, world: World, engine: EngineUnderTest, workdir: Path
) -> tuple[Mismatch, ...]:
    """``[expect] config_error``: the engine must refuse ``[sender]`` at start.

    Returns:
        No mismatch when it refused with a matching message; else the one mismatch.
    """
    pattern = scenario.config_error
    assert pattern is not None
    try:
        await engine.start(world, scenario.sender, workdir)
    except AdapterError as exc:
        if config_error_matches(pattern, str(exc)):
            return ()
        return (Mismatch("config_error", pattern, f"refused otherwise: {exc}"),)
    finally:
        await engine.stop()
    return (Mismatch("config_error", pattern, "the engine accepted the configuration"),)
