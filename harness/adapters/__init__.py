"""Engines under test: the :class:`EngineUnderTest` port and its adapters."""

from __future__ import annotations

from harness.adapters.base import (
    ADAPTERS,
    AdapterError,
    DeliveryRecord,
    EngineUnderTest,
    EventRecord,
    make_adapter,
    register_adapter,
)
from harness.adapters.gateway import GatewayEngine
from harness.adapters.inprocess import InProcessEngine
from harness.adapters.process import ProcessEngine

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "DeliveryRecord",
    "EngineUnderTest",
    "EventRecord",
    "GatewayEngine",
    "InProcessEngine",
    "ProcessEngine",
    "make_adapter",
    "register_adapter",
]
