"""The scenario loader: every mistake names the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.tomlnode import TomlNode
from harness.errors import SpecError
from harness.scenario import Capability, ExpectedOutcome, StepKind, load_all, loads_scenario
from harness.scenario.steps import parse_duration

EXAMPLES = Path(__file__).resolve().parents[2] / "scenarios" / "examples"

MINIMAL = """
[scenario]
title = "minimal"
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
"""


def _load(text: str, name: str = "topic_dir/s.toml"):
    return loads_scenario(text, Path("/x") / name)


def test_minimal_scenario_takes_its_defaults_from_the_path() -> None:
    s = _load(MINIMAL, "discovery/disc-1.toml")
    assert (s.id, s.topic, s.title) == ("disc-1", "discovery", "minimal")
    assert s.covers == () and s.requires == frozenset() and s.sender == {}
    assert s.steps[0].kind is StepKind.SEND and s.steps[0].args.rcpts == ("rcpt@example.com",)
    assert "mx1.example.com" in s.world.hosts


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[scenario2]\n", "scenario2"),
        ('[expect]\noutcom = "delivered"\n', "expect.outcom"),
        (
            '[world.domains."example.com".policy_host]\nstatuss = 200\n',
            'world.domains."example.com".policy_host.statuss',
        ),
        (
            '[sender.destination_controls.default]\ntsl = "no"\n',
            "sender.destination_controls.default.tsl",
        ),
        ("[[steps]]\nadvance = 1\n[steps.expect]\nfetch = 1\n", "steps[1].expect.fetch"),
        (
            '[[steps]]\nupdate_domain = { domain = "example.com", polcy = "x" }\n',
            "steps[1].update_domain.polcy",
        ),
        (
            '[[steps]]\nset_dns = { name = "x.example", behaviour = "drop", ttl = 1 }\n',
            "steps[1].set_dns.ttl",
        ),
        (
            "[[steps]]\nadvance = 1\n[steps.expect]\nevents = [{ code = 'x', a = { b = 1 } }]\n",
            "steps[1].expect.events[0].a",
        ),
    ],
)
def test_unknown_key_names_file_and_key_path(extra: str, key: str) -> None:
    with pytest.raises(SpecError) as info:
        _load(MINIMAL + extra)
    assert info.value.file == "/x/topic_dir/s.toml"
    assert info.value.key == key
    assert str(info.value).startswith(f"/x/topic_dir/s.toml: {key}: ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1w", 604800.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(TomlNode(text, "f", "steps[0].advance")) == seconds


@pytest.mark.parametrize("bad", ["90x", "", "d1", "-5s", -1, True, "1.5.2h", [1]])
def test_bad_durations_are_errors_naming_the_step(bad: object) -> None:
    with pytest.raises(SpecError) as info:
        _load(MINIMAL + f"[[steps]]\nadvance = {_toml(bad)}\n")
    assert info.value.key == "steps[1].advance"
    assert "duration" in str(info.value) or "negative" in str(info.value)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def test_unknown_step_kind_lists_the_kinds() -> None:
    with pytest.raises(SpecError) as info:
        _load(MINIMAL + "[[steps]]\nsleep = 5\n")
    assert info.value.key == "steps[1].sleep"
    assert "advance" in info.value.allowed and "restart_engine" in info.value.allowed


def test_a_step_needs_exactly_one_action() -> None:
    with pytest.raises(
        SpecError,
        match=r"steps\[1\]: a step has exactly one action of .* \(found advance, restart_engine\)",
    ):
        _load(MINIMAL + "[[steps]]\nadvance = 1\nrestart_engine = true\n")
    with pytest.raises(SpecError, match=r"\(found none\)"):
        _load(MINIMAL + "[[steps]]\n[steps.expect]\nfetches = 1\n")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            '[expect]\noutcome = "sent"\n',
            "expect.outcome: invalid value; expected one of delivered, deferred, bounced",
        ),
        (
            '[expect]\ntls = "TLSv1.4"\n',
            "expect.tls: invalid value; expected one of TLSv1, TLSv1.1",
        ),
        (
            "[expect]\nlogs = ['(unclosed']\n",
            "expect.logs[0]: invalid value; expected a valid regular expression",
        ),
        (
            '[expect]\nfaults = { "mx1.example.com" = ["x", "~(b"] }\n',
            'expect.faults."mx1.example.com"[1]: invalid value; expected a valid regular',
        ),
        (
            "[expect]\nevents = [{ field = 1 }]\n",
            "expect.events[0]: invalid value; expected an event pattern with a 'code'",
        ),
        (
            '[expect]\nqueries = { "a b c" = 1 }\n',
            "expect.queries.\"a b c\": a key here is 'name TYPE' or 'name'",
        ),
        ("[scenario2]\n", "scenario2: unknown key; allowed keys are scenario, world"),
        (
            '[[steps]]\nsend = { from = "a@x", to = ["nobody"] }\n',
            "send.to[0]: invalid value; expected an address",
        ),
        (
            '[[steps]]\nrotate_cert = { host = "mx1.example.com", profile = "shiny" }\n',
            "rotate_cert.profile: invalid value; expected one of valid, expired",
        ),
        (
            "[sender.dns]\nresolvers = ['127.0.0.1:53']\n",
            "sender.dns.resolvers: set by the adapter",
        ),
        (
            '[sender.destination_controls.default]\ntls = "sometimes"\n',
            "sender.destination_controls.default.tls",
        ),
    ],
)
def test_bad_values_are_named(extra: str, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace("[", r"\[")):
        _load(MINIMAL + extra)


def test_scenario_meta_is_checked() -> None:
    with pytest.raises(
        SpecError,
        match=r"scenario.covers\[0\]: invalid value; expected a requirement ID .* 'disc1'",
    ):
        _load(MINIMAL.replace('title = "minimal"', 'covers = ["disc1"]'))
    with pytest.raises(SpecError, match=r"scenario.requires\[0\]"):
        _load(MINIMAL.replace('title = "minimal"', 'requires = ["time-travel"]'))
    with pytest.raises(
        SpecError, match=r"scenario.topic: invalid value; expected a lower-case identifier"
    ):
        _load(MINIMAL.replace('title = "minimal"', 'topic = "Bad Topic"'))


def test_not_toml_and_missing_tables() -> None:
    with pytest.raises(SpecError, match="not valid TOML"):
        _load("[scenario\n")
    with pytest.raises(SpecError, match="steps: missing key"):
        _load("[scenario]\n[world]\n")


def test_expectations_are_parsed() -> None:
    s = _load(
        MINIMAL
        + """
[steps.expect]
outcome = { "RCPT@example.com" = "deferred" }
fetches = { "mta-sts.example.com" = 2 }
queries = { "_mta-sts.example.com. txt" = 1, "example.com" = 2 }
no_transaction = "mx1.example.com."
events = [{ code = "sts.fetch.failed", detail = "~timeout", "failures.0.x" = 1 }]
"""
    )
    x = s.steps[0].expect
    assert x.outcome == {"rcpt@example.com": ExpectedOutcome.DEFERRED}
    assert x.fetches == {"mta-sts.example.com": 2}
    assert x.queries == {"_mta-sts.example.com TXT": 1, "example.com": 2}
    assert x.no_transaction == ("mx1.example.com",)
    assert x.events[0].fields == {"detail": "~timeout", "failures.0.x": 1}


def test_every_example_loads_and_together_they_use_every_step_kind_and_key() -> None:
    scenarios = load_all([EXAMPLES])
    assert len(scenarios) >= 5
    kinds = {step.kind for s in scenarios for step in s.steps}
    assert kinds == set(StepKind)
    used = set()
    for s in scenarios:
        for x in (*(st.expect for st in s.steps), s.expect):
            used |= {k for k in x.__dataclass_fields__ if getattr(x, k) not in (None, (), {})}
    assert used == set(x.__dataclass_fields__)
    assert Capability.RESTART in {c for s in scenarios for c in s.requires}


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "same.toml").write_text(MINIMAL)
    with pytest.raises(
        SpecError, match=r"scenario\.id: also the id of .*a/same.toml \(value 'same'\)"
    ):
        load_all([tmp_path])


STS_WITHOUT_TLS = """
[sender.destination_controls."example.com"]
tls = "no"
mta_sts = true
"""


def test_config_error_lets_a_refused_sender_load() -> None:
    with pytest.raises(SpecError, match="MTA-STS needs TLS"):
        _load(MINIMAL + STS_WITHOUT_TLS)
    s = _load(MINIMAL + STS_WITHOUT_TLS + '[expect]\nconfig_error = "~MTA-STS needs TLS"\n')
    assert s.config_error == "~MTA-STS needs TLS"
    assert s.expect.empty and s.sender["destination_controls"]["example.com"]["tls"] == "no"
    assert _load(MINIMAL).config_error is None


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            '[expect]\nconfig_error = "~(["\n',
            "expect.config_error: invalid value; expected a valid regular",
        ),
        ("[expect]\nconfig_error = 3\n", "expect.config_error: .*expected a string"),
        (
            '[expect]\nconfig_error = "x"\noutcome = "deferred"\n',
            "expect.config_error: .*no other expectation",
        ),
    ],
)
def test_config_error_is_checked(extra: str, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        _load(MINIMAL + STS_WITHOUT_TLS + extra)


def test_config_error_needs_a_sender() -> None:
    with pytest.raises(SpecError, match="needs a \\[sender\\] table"):
        _load(MINIMAL + '[expect]\nconfig_error = "x"\n')
