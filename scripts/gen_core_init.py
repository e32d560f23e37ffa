"""Regenerate engine/core/__init__.py from every core module's ``__all__``.

Run after adding a public name to a core module; tests/core/test_public_api.py
fails until the package re-exports it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import engine.core

# Names exported under another name, or not at all, from the package.
RENAMED = {("cache", "decide"): "decide_cache"}
SKIPPED = {("verdict", "PolicyType")}  # the same object as tlsrpt.PolicyType

HEADER = '''"""The pure core: everything that decides, and nothing that does I/O.

No module here imports asyncio, socket, ssl, httpx or dns, or reads the clock;
``tests/core/test_purity.py`` enforces it. Every module's ``__all__`` is
re-exported here; ``tests/core/test_public_api.py`` pins the list. The cache
decision is exported as ``decide_cache`` beside the Destination Controls
``decide``. Regenerate with ``python scripts/gen_core_init.py``.
"""

from __future__ import annotations

'''


def main() -> None:
    lines, names = [], []
    for info in sorted(pkgutil.iter_modules(engine.core.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue  # private modules (the optional C reader) export nothing
        module = importlib.import_module(f"engine.core.{info.name}")
        plain = sorted(
            n
            for n in module.__all__
            if (info.name, n) not in RENAMED and (info.name, n) not in SKIPPED
        )
        if plain:
            lines.append(f"from engine.core.{info.name} import {', '.join(plain)}  # noqa: F401")
        for (mod, name), alias in RENAMED.items():
            if mod == info.name:
                lines.append(f"from engine.core.{mod} import {name} as {alias}  # noqa: F401")
                names.append(alias)
        names += plain
    body = "\n".join(lines) + "\n\n__all__ = [\n"
    body += "".join(f'    "{n}",\n' for n in sorted(set(names))) + "]\n"
    Path(engine.core.__file__).write_text(HEADER + body)


if __name__ == "__main__":
    main()
