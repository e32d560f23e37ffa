"""The core's public API is what each module's ``__all__`` says, re-exported (STYLE habit 17)."""

from __future__ import annotations

import importlib
import pkgutil

import engine.core

RENAMED = {("cache", "decide"): "decide_cache"}


def public_modules() -> list[str]:
    # A leading underscore marks a private module (the optional C reader, _policyscan).
    return [i.name for i in pkgutil.iter_modules(engine.core.__path__) if i.name[0] != "_"]


def test_every_module_export_is_reexported() -> None:
    for mod_name in public_modules():
        module = importlib.import_module(f"engine.core.{mod_name}")
        for name in module.__all__:
            exported = RENAMED.get((mod_name, name), name)
            assert exported in engine.core.__all__, f"engine.core.{mod_name}.{name} not re-exported"
            assert hasattr(engine.core, exported)


def test_package_exports_nothing_undeclared() -> None:
    declared = set()
    for mod_name in public_modules():
        module = importlib.import_module(f"engine.core.{mod_name}")
        declared |= {RENAMED.get((mod_name, n), n) for n in module.__all__}
    assert set(engine.core.__all__) == declared


def test_key_names_are_public() -> None:
    for name in (
        "parse_policy",
        "select_sts_record",
        "mx_matches",
        "PolicyDiscovery",
        "dane_verify",
        "decide",
        "decide_cache",
        "judge",
        "verify_chain",
        "ResultType",
    ):
        assert name in engine.core.__all__
