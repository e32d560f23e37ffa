"""``[sender]`` is checked by the engine that reads it, through the loader's hook.

The scenario model is engine-neutral: with no check registered, a ``[sender]`` our
engine would refuse still loads. The adapter registry registers our engine's parser
(:func:`harness.adapters.sender.check_sender`), which names the file, the key path
below ``sender`` and the value; ``[expect] config_error`` keeps a refused ``[sender]``
loadable, for the runner to judge the refusal at engine start.
"""

from __future__ import annotations

import pytest

import harness.adapters.registry  # noqa: F401  (registers our engine's check)
from harness.adapters.sender import check_sender
from harness.errors import SpecError
from harness.scenario import loader, loads_scenario

BAD = """
[scenario]
title = "sender check"
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
[sender.destination_controls."example.com"]
tls = "sometimes"
[[steps]]
send = { from = "a@sender.example", to = ["rcpt@example.com"] }
"""


def test_the_registry_registers_our_engines_check_once() -> None:
    assert loader.SENDER_CHECKS.count(check_sender) == 1
    loader.register_sender_check(check_sender)
    assert loader.SENDER_CHECKS.count(check_sender) == 1


def test_our_engines_check_names_file_key_and_value() -> None:
    with pytest.raises(SpecError) as caught:
        loads_scenario(BAD, "/x/t/bad-sender.toml")
    text = str(caught.value)
    assert text.startswith("/x/t/bad-sender.toml: sender.destination_controls")
    assert ".tls: invalid value" in text and "'sometimes'" in text


def test_without_a_registered_check_the_model_reads_no_engine_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loader, "SENDER_CHECKS", [])
    s = loads_scenario(BAD, "/x/t/bad-sender.toml")
    assert s.sender["destination_controls"]["example.com"]["tls"] == "sometimes"


def test_config_error_still_lets_a_refused_sender_load() -> None:
    s = loads_scenario(BAD + '[expect]\nconfig_error = "tls"\n', "/x/t/refused.toml")
    assert s.config_error == "tls"
