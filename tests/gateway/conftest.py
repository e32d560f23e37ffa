"""Fixtures for gateway tests: a simulated world and a gateway wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from engine.config import load_config
from engine.core.events import ListSink
from engine.gateway.gateway import Gateway, GatewaySettings
from engine.io.smtp import SmtpTimeouts
from engine.tlsrpt.reporter import ReportSettings
from tests.gateway.sim import Sim, SimWorld

MESSAGE = b"From: alice@sender.example\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    async with SimWorld(tmp_path) as s:
        yield s


def write_config(sim: Sim, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(sim.config_text(tmp_path / "queue.sqlite") + extra)
    return path


def make_gateway(sim: Sim, config_path: Path, **settings: object) -> tuple[Gateway, ListSink]:
    sink = ListSink()
    report = ReportSettings(delay_seconds=3600.0, jitter_seconds=0.0)
    gw = Gateway(
        load_config(config_path),
        clock=sim.clock,
        sink=sink,
        dialer=sim.dialer(),
        smtp_timeouts=SmtpTimeouts.uniform(5.0),
        settings=GatewaySettings(report=report, **settings),  # type: ignore[arg-type]
    )
    return gw, sink


async def inject(gw: Gateway, mail_from: str, rcpts: list[str], data: bytes = MESSAGE) -> str:
    """Send one message into the gateway's listener; returns the final reply text."""
    assert gw.listener is not None
    host, port = gw.listener.address
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=5.0) as client:
        errors, reply = await client.sendmail(mail_from, rcpts, data)
        assert not errors
        return reply


def texts(sink: ListSink) -> list[str]:
    from engine.logs import render_text

    return [render_text(e) for e in sink.events]
