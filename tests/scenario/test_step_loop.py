"""One step loop: the single runner and the batch runner run a scenario's steps alike.

The batch runner once had a step loop of its own that drifted from the single
runner's: its send dropped ``final`` and it read the engine's clock after the step
instead of before. Both runners now call :func:`harness.run.steps.run_steps`; this
test runs the same scenario through both and compares what the engine was asked
and what each step recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness.adapters import ADAPTERS, InProcessEngine, register_adapter
from harness.run.batch.plan import Batch
from harness.run.batch.runner import run_batch
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import run_scenario_async
from harness.scenario import loads_scenario
from harness.scenario.observation import DeliveryRecord

SEND_TAKES = 7.0  # seconds the spy's clock moves during a send

SCENARIO = """
[scenario]
title = "step loop"
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
[world.hosts."mx1.example.com"]
[sender.destination_controls."example.com"]
tls = "preferred"
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"], final = true }
[[steps]]
advance = "1h"
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
"""


class _Spy(InProcessEngine):
    """Our engine, noting what each send was asked and taking time to send."""

    asked: list[tuple[bool, bytes]]

    def __init__(self) -> None:
        super().__init__()
        self.asked = []

    async def send(
        self, mail_from: str, rcpts: Sequence[str], data: bytes, *, final: bool = False
    ) -> Sequence[DeliveryRecord]:
        self.asked.append((final, data))
        report = await super().send(mail_from, rcpts, data, final=final)
        self.clock.advance(SEND_TAKES)
        return report


@pytest.fixture
def spies() -> Iterator[list[_Spy]]:
    made: list[_Spy] = []

    def make() -> _Spy:
        made.append(_Spy())
        return made[-1]

    register_adapter("test-step-spy", make)
    yield made
    del ADAPTERS["test-step-spy"]


def _clocks(result: ScenarioResult) -> list[float]:
    return [s.observation.clock for s in result.steps]


async def test_both_runners_pass_final_and_read_the_clock_before_the_step(
    spies: list[_Spy], tmp_path: Path
) -> None:
    scenario = loads_scenario(SCENARIO, "/x/t/step-loop.toml")
    for name in ("single", "batch"):
        (tmp_path / name).mkdir()
    single = await run_scenario_async(scenario, "test-step-spy", workdir=tmp_path / "single")
    batch = Batch([scenario], world=dict(scenario.world_table), sender=dict(scenario.sender))
    make = ADAPTERS["test-step-spy"]
    [batched] = await run_batch(batch, "test-step-spy", make, tmp_path / "batch")

    for result, spy in ((single, spies[0]), (batched, spies[1])):
        assert result.verdict is ScenarioVerdict.PASSED, result.reason
        # ``final`` reaches the engine on the send that asks for it, and only there.
        assert [final for final, _ in spy.asked] == [True, False]
        # Each step's clock is the engine's at the step's start: the first send sees
        # the start, the advance starts after the send's time, the last send after it.
        start = spy.clock.now() - 2 * SEND_TAKES - 3600
        assert _clocks(result) == [start, start + SEND_TAKES, start + SEND_TAKES + 3600]
    # Same messages submitted by both.
    assert [d for _, d in spies[0].asked] == [d for _, d in spies[1].asked]
    assert [s.kind for s in single.steps] == [s.kind for s in batched.steps]
