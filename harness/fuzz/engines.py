"""Runners for :func:`~harness.fuzz.campaign.run_campaign`, per kind of engine.

Theory of operation
-------------------
An engine whose world the harness can run in this process (``inprocess``,
``inprocess-uvloop``, ``gateway``, our ``sts-engine`` process) runs each world alone
through :func:`~harness.fuzz.driver.run_document` on the loop its way names, and is
judged by every invariant. A real MTA (a black-box profile) needs its world inside a
network namespace: :mod:`harness.fuzz.blackbox` runs a whole chunk there as one
batch. :func:`runners` picks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine import eventloop
from harness.adapters.base import AdapterError
from harness.adapters.blackbox.adapter import SETTLE_TIMEOUT
from harness.adapters.blackbox.profile import load_profile, profile_names
from harness.adapters.registry import make_adapter
from harness.fuzz.campaign import Judged
from harness.fuzz.driver import run_document
from harness.fuzz.invariants import check_run
from harness.run.single import way

__all__ = ["Engine", "runners"]

#: (runner of a chunk, runner of one world, fixed controls or None, waits allowed)
Engine = tuple[
    Callable[[Sequence[dict[str, Any]]], list[Judged]],
    Callable[[dict[str, Any]], Judged],
    dict[str, Any] | None,
    bool,
]


def _profile_controls(features: frozenset[str]) -> dict[str, Any]:
    """The Destination Controls a fixed profile applies to every destination."""
    return {
        "tls": "preferred",
        "mta_sts": "sts" in features,
        "dane": "opportunistic" if "dane" in features else "none",
    }


def runners(name: str) -> Engine:
    """The runners for ``--engine NAME``.

    Raises:
        AdapterError: no such engine, or its event loop is not available here.
    """
    if name in profile_names():
        from harness.fuzz.blackbox import run_worlds  # the namespace machinery, lazily

        profile = load_profile(name)
        waits = profile.smtp_timeout < SETTLE_TIMEOUT and profile.fetch_timeout < SETTLE_TIMEOUT

        def batch(docs: Sequence[dict[str, Any]]) -> list[Judged]:
            return run_worlds(name, docs)

        def one(doc: dict[str, Any]) -> Judged:
            return run_worlds(name, [doc])[0]

        return batch, one, _profile_controls(profile.features), waits
    adapter, loop = way(name)
    make_adapter(adapter)  # an unknown name fails here, before any world is drawn
    if not eventloop.loop_available(loop):
        raise AdapterError(f"event loop {loop!r} is not available here")

    def single(doc: dict[str, Any]) -> Judged:
        run = eventloop.run(run_document(doc, adapter), loop=loop)
        return Judged(tuple(check_run(run)))

    def each(docs: Sequence[dict[str, Any]]) -> list[Judged]:
        return [single(d) for d in docs]

    return each, single, None, True
