"""STS_ENGINE_NO_FAST_PATHS=1 leaves only the reference readers (engine/core/fastpaths.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import engine.core.policy as policy_module
from engine.core.fastpaths import FAST_PATHS_ENV
from engine.core.policy import parse_policy

BODY = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"


def _probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != FAST_PATHS_ENV}
    if env_value is not None:
        env[FAST_PATHS_ENV] = env_value
    code = (
        "import engine.core.fastpaths as f, engine.core.policy as p, engine.io.dns as d, "
        "engine.delivery.mtasts as m; "
        "print(f.FAST_PATHS, p.FAST_PATHS, d.FAST_PATHS, m.FAST_PATHS, p._c_parse is None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_switch_turns_every_fast_path_off_and_the_c_reader_with_them() -> None:
    assert _probe("1") == "False False False False True"


@pytest.mark.parametrize("value", [None, "", "0", "yes"])
def test_any_other_value_leaves_fast_paths_on(value: str | None) -> None:
    assert _probe(value).startswith("True True True True")


def test_reference_reader_alone_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fast(_text: str) -> None:
        raise AssertionError("fast reader called with the fast paths off")

    monkeypatch.setattr(policy_module, "FAST_PATHS", False)
    monkeypatch.setattr(policy_module, "_c_parse", None)
    monkeypatch.setattr(policy_module, "_parse_fast", no_fast)
    monkeypatch.setattr(policy_module, "_parse_lines", _counting(policy_module._parse_lines))
    assert parse_policy(BODY).mx[0].domain == "mx1.example.com"
    assert policy_module._parse_lines.calls == 1  # type: ignore[attr-defined]


def _counting(func):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        wrapper.calls += 1  # type: ignore[attr-defined]
        return func(*args, **kwargs)

    wrapper.calls = 0  # type: ignore[attr-defined]
    return wrapper
