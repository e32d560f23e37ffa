"""Running one fuzzed scenario and keeping everything the world observed.

Theory of operation
-------------------
The runner (:mod:`harness.run.single`) keeps a step's *summary* of each SMTP session;
the invariants need the world's full records: each transaction's MAIL FROM, every
RCPT and its reply, the DATA reply, whether it went over TLS, the certificate
served, and the mailboxes. So :func:`run_document` drives the same pieces the
runner does (the scenario loader, the :class:`~harness.world.world.World` with the
process's one certificate factory, the ``inprocess`` adapter at its manual clock)
and returns a :class:`FuzzRun` with those records.

The document goes through TOML first (``tomli_w`` then the scenario loader), so the
run is exactly what the regression file written from it will replay, and a world
the file format cannot hold is refused before anything starts.
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from harness.adapters.registry import make_adapter
from harness.scenario.loader import loads_scenario
from harness.scenario.model import Scenario, StepKind
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.mta.records import MtaSession, ReceivedMessage
from harness.world.world import World, shared_cert_factory

__all__ = ["FuzzRun", "load_document", "run_document", "run_scenario_records"]


@dataclass(frozen=True, slots=True)
class FuzzRun:
    """What one run of a scenario observed.

    Attributes:
        scenario: the loaded scenario (its world spec and sender are the oracle's input).
        sessions: every SMTP session at every MX, as the receiving MTAs recorded it.
        messages: every message an MX accepted (the mailboxes).
        events: the engine's events, each with its mail_logs line.
        deliveries: the engine's per-recipient outcomes, over every send step.
        error: a traceback if the engine or the world raised.
    """

    scenario: Scenario
    sessions: tuple[MtaSession, ...] = ()
    messages: tuple[ReceivedMessage, ...] = ()
    events: tuple[EventRecord, ...] = ()
    deliveries: tuple[DeliveryRecord, ...] = ()
    error: str | None = None


def load_document(doc: Mapping[str, Any], name: str = "fuzz/fuzz-world.toml") -> Scenario:
    """Check a scenario dict by the file format's own rules (through TOML).

    Raises:
        SpecError: a key or value the scenario format refuses.
    """
    return loads_scenario(tomli_w.dumps(dict(doc)), Path(name))


async def run_scenario_records(scenario: Scenario, engine: str = "inprocess") -> FuzzRun:
    """Run the ``send`` steps of ``scenario`` and keep the world's full records.

    Args:
        scenario: a loaded scenario; steps other than ``send`` are not supported.
        engine: the adapter name.

    Raises:
        ValueError: the scenario has a step that is not ``send``.
    """
    if any(s.kind is not StepKind.SEND for s in scenario.steps):
        raise ValueError(f"scenario {scenario.id!r}: the fuzz driver runs send steps only")
    adapter = make_adapter(engine)
    deliveries: list[DeliveryRecord] = []
    error = None
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        async with World(scenario.world, now=adapter.now, certs=shared_cert_factory()) as w:
            try:
                await adapter.start(w, scenario.sender, Path(tmp))
                for step in scenario.steps:
                    send = step.args
                    data = send.data or _message(scenario.id, step.index, send.rcpts)
                    deliveries += await adapter.send(send.mail_from, send.rcpts, data)
                await w.settle()
            except Exception:
                error = traceback.format_exc()
            finally:
                await adapter.stop()
            return FuzzRun(
                scenario=scenario,
                sessions=tuple(w.sessions()),
                messages=tuple(w.messages()),
                events=tuple(adapter.events()),
                deliveries=tuple(deliveries),
                error=error,
            )


async def run_document(doc: Mapping[str, Any], engine: str = "inprocess") -> FuzzRun:
    """:func:`load_document` then :func:`run_scenario_records`."""
    return await run_scenario_records(load_document(doc), engine)


def _message(sid: str, index: int, rcpts: tuple[str, ...]) -> bytes:
    return (
        f"To: {', '.join(f'<{r}>' for r in rcpts)}\r\nSubject: {sid} step {index}\r\n"
        f"Message-ID: <{sid}.{index}@fuzz.invalid>\r\n\r\nA fuzzed world's message.\r\n"
    ).encode()
