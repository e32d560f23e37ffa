"""engine.eventloop: the engine's commands run on uvloop unless told otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import eventloop
from engine.cli import main


async def _loop_name() -> str:
    return eventloop.loop_name(asyncio.get_running_loop())


def test_commands_run_on_uvloop_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STS_ENGINE_LOOP", raising=False)
    expected = "asyncio"
    try:
        import uvloop  # noqa: F401

        expected = "uvloop"
    except ImportError:
        pass
    assert eventloop.run(_loop_name()) == expected


def test_environment_picks_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_ENGINE_LOOP", "asyncio")
    assert eventloop.run(_loop_name()) == "asyncio"
    assert eventloop.run(_loop_name(), loop="asyncio") == "asyncio"


def test_unknown_loop_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_ENGINE_LOOP", "trio")
    with pytest.raises(
        ValueError, match="STS_ENGINE_LOOP must be 'uvloop' or 'asyncio', not 'trio'"
    ):
        eventloop.loop_factory()


def test_cli_reports_a_bad_loop_choice_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STS_ENGINE_LOOP", "trio")
    config = tmp_path / "engine.toml"
    config.write_text("[dns]\nresolvers = ['127.0.0.1:53']\n[tls]\nca_file = 'system'\n")
    status = main(["check", "example.com", "--config", str(config)])
    assert status == 2
    err = capsys.readouterr().err
    assert "STS_ENGINE_LOOP must be 'uvloop' or 'asyncio', not 'trio'" in err
    assert "Traceback" not in err
