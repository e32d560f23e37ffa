"""Which event loop the engine's commands run on.

The engine is asyncio code and runs on any asyncio loop. Its commands
(``sts-engine send``, ``check``, ``serve``, ``policy``) run on uvloop when it is
installed (it is a dependency on CPython outside Windows): the same code, with the
loop's own bookkeeping (timers, callbacks, datagram and stream transports) in C.
On the warm MTA-STS path, one TXT query per delivery, that saves about a quarter of the
time (``bench/bench_resolve.py --loop both``). ``STS_ENGINE_LOOP=asyncio`` picks the
standard library's loop instead, e.g. to debug with ``PYTHONASYNCIODEBUG``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "LoopChoiceError", "loop_available", "loop_factory", "loop_name", "run"]

T = TypeVar("T")

_ENV = "STS_ENGINE_LOOP"
#: The loops a command (or the conformance harness) can run on.
LOOPS = ("uvloop", "asyncio")


class LoopChoiceError(ValueError):
    """``STS_ENGINE_LOOP`` (or the ``name`` given) names no loop we know."""


def loop_factory(name: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for loop ``name`` (``"uvloop"`` / ``"asyncio"``; default: the environment's).

    Returns:
        uvloop's ``new_event_loop``, or None for the standard library's loop (also when
        uvloop is asked for but not installed).

    Raises:
        LoopChoiceError: ``name`` (or ``STS_ENGINE_LOOP``) is neither ``uvloop`` nor ``asyncio``.
    """
    chosen = name or os.environ.get(_ENV) or "uvloop"
    if chosen not in ("uvloop", "asyncio"):
        raise LoopChoiceError(f"{_ENV} must be 'uvloop' or 'asyncio', not {chosen!r}")
    if chosen == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_available(name: str) -> bool:
    """Whether loop ``name`` can really be had here (uvloop: installed), unlike
    :func:`loop_factory`, which falls back to the standard loop without uvloop."""
    if name == "asyncio":
        return True
    if name != "uvloop":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: what ``loop`` is."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """Run ``main`` to completion on a new loop (see :func:`loop_factory`), like asyncio.run."""
    try:
        factory = loop_factory(loop)
    except LoopChoiceError:
        main.close()  # never started; closing it spares a "never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
