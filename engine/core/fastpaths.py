"""One switch for the engine's fast paths: ``STS_ENGINE_NO_FAST_PATHS=1`` turns them off.

Theory of operation
-------------------
A few hot paths read the same input a second, faster way, or remember what a
slower reader concluded:

* the policy body: the optional C reader (``engine/core/_policyscan.c``) and the
  Python fast reader ``_parse_fast`` in :mod:`engine.core.policy`;
* DNS replies: the lean TXT reader of ``engine/io/dnswire.py`` and the per-resolver
  reply memo in ``engine/io/dns.py``;
* TXT outcomes: the memo of valid record sets in ``engine/delivery/mtasts.py``.

Each accepts only what the reference reader accepts and hands everything else to
it, so the outcome is the same either way. With the switch on, only the reference
readers run. That is what mutation testing needs (``python -m harness.mutants``):
a mutant of the reference reader must not be hidden behind a fast path that never
reaches it. The variable is read once, at import; any value but ``1`` leaves the
fast paths on.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["FAST_PATHS", "FAST_PATHS_ENV"]

FAST_PATHS_ENV: Final = "STS_ENGINE_NO_FAST_PATHS"
# True unless the environment asks for the reference readers only.
FAST_PATHS: Final[bool] = os.environ.get(FAST_PATHS_ENV, "") != "1"
