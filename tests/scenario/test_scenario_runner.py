"""The runner over the example scenarios, and its failure, skip and error paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.adapters import ADAPTERS, InProcessEngine, register_adapter
from harness.run.result import ScenarioVerdict
from harness.run.single import run_scenario
from harness.scenario import Capability, load_all, loads_scenario
from harness.scenario.explain import explain
from harness.scenario.needs import required_capabilities

EXAMPLES = Path(__file__).resolve().parents[2] / "scenarios" / "examples"

W_STS = """
[scenario]
title = "runner test"
[world.domains."example.com"]
mx = ["10 mx1.example.com", "20 mx2.example.com"]
mta_sts_txt = ["v=STSv1; id=A1"]
policy = '''
version: STSv1
mode: enforce
mx: mx1.example.com
mx: mx2.example.com
max_age: 86400
'''
[world.hosts."mx1.example.com"]
cert = "self-signed"
[sender.destination_controls."example.com"]
tls = "required-verify-hosted"
mta_sts = true
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
"""


@pytest.mark.parametrize("scenario", load_all([EXAMPLES]), ids=lambda s: s.id)
def test_example_scenario_passes(scenario) -> None:
    result = run_scenario(scenario)
    assert result.verdict is ScenarioVerdict.PASSED, explain(result)
    assert result.steps and all(s.observation.error is None for s in result.steps)


def test_failure_names_the_item_the_closest_events_and_the_timeline() -> None:
    text = (
        W_STS
        + """
[steps.expect]
via = "mx1.example.com"
events = [
  { code = "tls.verify.deferring", mx = "mx1.example.com", result_type = "certificate-expired" },
]
"""
    )
    result = run_scenario(loads_scenario(text, "/x/t/fail.toml"))
    assert result.verdict is ScenarioVerdict.FAILED
    [via, events] = result.steps[0].mismatches
    assert via.seen == "delivered at mx2.example.com"
    assert events.closest[0].endswith(
        "tls.verify.deferring: result_type='certificate-not-trusted' "
        "(expected 'certificate-expired')"
    )
    text = explain(result)
    for piece in (
        "scenario fail FAILED",
        "step 0 (send",
        "--- timeline ---",
        "dns    _mta-sts.example.com: TXT -> NOERROR",
        "policy mta-sts.example.com: GET /.well-known/mta-sts.txt",
        "smtp   mx2.example.com: TLSv1.3, 1 delivered",
        "Info: Successfully fetched MTA-STS TXT record for domain(example.com)",
    ):
        assert piece in text


def test_final_expect_covers_the_whole_run() -> None:
    text = (
        W_STS
        + '[[steps]]\nadvance = "1h"\n[expect]\nfetches = 1\nqueries = { "example.com MX" = 1 }\n'
    )
    assert run_scenario(loads_scenario(text, "/x/t/final.toml")).verdict is ScenarioVerdict.PASSED
    bad = text.replace("fetches = 1", "fetches = 2")
    result = run_scenario(loads_scenario(bad, "/x/t/final.toml"))
    assert result.verdict is ScenarioVerdict.FAILED and [m.key for m in result.final] == ["fetches"]


class _NoClock(InProcessEngine):
    capabilities = frozenset(Capability) - {Capability.CLOCK, Capability.RESTART}


def test_missing_capabilities_skip_with_the_reason() -> None:
    register_adapter("test-no-clock", _NoClock)
    try:
        s = loads_scenario(W_STS + '[[steps]]\nadvance = "1d"\n', "/x/t/skip.toml")
        assert required_capabilities(s) >= {Capability.CLOCK}
        result = run_scenario(s, "test-no-clock")
    finally:
        del ADAPTERS["test-no-clock"]
    assert result.verdict is ScenarioVerdict.SKIPPED
    assert result.reason == "engine 'test-no-clock' lacks clock"


class _LoopSpy(InProcessEngine):
    """The in-process engine, noting the loop its start ran on."""

    loops: list[str] = []  # noqa: RUF012  (a test's shared record)

    async def start(self, world, sender, workdir) -> None:
        import asyncio

        from engine import eventloop

        self.loops.append(eventloop.loop_name(asyncio.get_running_loop()))
        await super().start(world, sender, workdir)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_runner_and_the_in_process_engine_run_on_the_chosen_loop(loop: str) -> None:
    from engine import eventloop

    if not eventloop.loop_available(loop):
        pytest.skip(f"{loop} is not installed")
    _LoopSpy.loops.clear()
    register_adapter("test-loop-spy", _LoopSpy)
    try:
        result = run_scenario(loads_scenario(W_STS, "/x/t/loop.toml"), "test-loop-spy", loop=loop)
    finally:
        del ADAPTERS["test-loop-spy"]
    assert result.verdict is ScenarioVerdict.PASSED, result.reason
    assert result.loop == loop and _LoopSpy.loops == [loop]


def test_a_loop_this_machine_lacks_is_an_error() -> None:
    from harness.adapters.base import AdapterError

    with pytest.raises(AdapterError, match="event loop 'trio' is not available here"):
        run_scenario(loads_scenario(W_STS, "/x/t/e.toml"), loop="trio")


def test_a_step_that_raises_is_an_error_with_the_traceback() -> None:
    text = W_STS + '[[steps]]\nupdate_policy = { domain = "nowhere.example", status = 500 }\n'
    result = run_scenario(loads_scenario(text, "/x/t/err.toml"))
    assert result.verdict is ScenarioVerdict.ERROR
    assert 'update_policy: domains."nowhere.example": no such domain' in result.reason
    assert len(result.steps) == 2 and result.steps[1].observation.error


def test_unknown_engine_is_an_error() -> None:
    with pytest.raises(Exception, match=r"no engine adapter .nope.; known: .*inprocess"):
        run_scenario(loads_scenario(W_STS, "/x/t/e.toml"), "nope")


REFUSED = W_STS.replace('tls = "required-verify-hosted"', 'tls = "no"')


@pytest.mark.parametrize(
    ("text", "pattern", "verdict", "seen"),
    [
        (REFUSED, "~mta_sts.*MTA-STS needs TLS", ScenarioVerdict.PASSED, None),
        (REFUSED, "MTA-STS needs TLS", ScenarioVerdict.PASSED, None),
        (REFUSED, "~unknown key", ScenarioVerdict.FAILED, "refused otherwise: cannot configure"),
        (W_STS, "~MTA-STS", ScenarioVerdict.FAILED, "the engine accepted the configuration"),
    ],
)
def test_config_error_judges_the_engine_refusal(
    text: str, pattern: str, verdict: ScenarioVerdict, seen: str | None
) -> None:
    scenario = loads_scenario(text + f'[expect]\nconfig_error = "{pattern}"\n', "/x/t/c.toml")
    result = run_scenario(scenario)
    assert result.verdict is verdict, explain(result)
    assert result.steps == ()  # no step runs
    if seen is None:
        assert result.final == ()
    else:
        [mismatch] = result.final
        assert mismatch.key == "config_error" and mismatch.seen.startswith(seen)
