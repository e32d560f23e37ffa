"""Engines under test: the :class:`EngineUnderTest` port, its adapters, and the registry
that finds them by name (:mod:`harness.adapters.registry`)."""

from __future__ import annotations

from harness.adapters.base import AdapterError, DeliveryRecord, EngineUnderTest, EventRecord
from harness.adapters.gateway import GatewayEngine
from harness.adapters.inprocess import InProcessEngine
from harness.adapters.process import ProcessEngine
from harness.adapters.registry import ADAPTERS, make_adapter, register_adapter

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
