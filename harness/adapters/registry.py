"""Which adapter ``--engine NAME`` means: every shipped adapter, listed once, by name.

Theory of operation
-------------------
:data:`ADAPTERS` maps an engine name to a factory of a fresh adapter (the runner
makes one per scenario). The shipped adapters are listed in :data:`SHIPPED` as
``"module:factory"`` strings and imported the first time one is made, so naming an
engine costs nothing and no adapter module imports this one to register itself (the
adapters import only :mod:`harness.adapters.base`). Every engine profile of
``fixtures/engines/`` is a black-box adapter of its own name
(:class:`~harness.adapters.blackbox.adapter.BlackBoxEngine`). Tests add adapters of
their own with :func:`register_adapter`.

It also registers our engine's check of a scenario's ``[sender]`` with the loader
(:func:`harness.adapters.sender.check_sender`): the scenario model stays
engine-neutral, and any program that can run a scenario has the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from harness.adapters.base import AdapterError, AdapterFactory, EngineUnderTest
from harness.adapters.blackbox.profile import profile_names
from harness.adapters.sender import check_sender
from harness.scenario.loader import register_sender_check

__all__ = ["ADAPTERS", "SHIPPED", "make_adapter", "register_adapter"]

#: The shipped adapters: engine name -> ``"module:factory"``.
SHIPPED = {
    "inprocess": "harness.adapters.inprocess:InProcessEngine",
    "gateway": "harness.adapters.gateway:GatewayEngine",
    "sts-engine": "harness.adapters.process:ProcessEngine",
    "sts-engine-exec": "harness.adapters.process:exec_engine",
}
_BLACKBOX = "harness.adapters.blackbox.adapter:BlackBoxEngine"


@dataclass(frozen=True, slots=True)
class _Lazy:
    """A factory that imports its adapter's module when first called."""

    target: str
    args: tuple[str, ...] = ()

    def __call__(self) -> EngineUnderTest:
        module, _, name = self.target.partition(":")
        factory: AdapterFactory = getattr(import_module(module), name)
        return factory(*self.args)


#: Engine name -> factory of a fresh adapter.
ADAPTERS: dict[str, AdapterFactory] = {name: _Lazy(target) for name, target in SHIPPED.items()}
ADAPTERS.update({name: _Lazy(_BLACKBOX, (name,)) for name in profile_names()})


# Every shipped adapter but the black boxes runs our engine on [sender]: our engine's
# parser checks it as scenarios load (a black box's fit reads the same layout).
register_sender_check(check_sender)


def register_adapter(name: str, factory: AdapterFactory) -> None:
    """Make ``--engine name`` use ``factory``."""
    ADAPTERS[name] = factory


def make_adapter(name: str) -> EngineUnderTest:
    """A fresh adapter for engine ``name``.

    Raises:
        AdapterError: no adapter has that name (the known names are listed).
    """
    factory = ADAPTERS.get(name)
    if factory is None:
        raise AdapterError(f"no engine adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    return factory()
