"""The pure core: everything that decides, and nothing that does I/O.

No module here imports asyncio, socket, ssl, httpx, dns or reads the clock;
``tests/core/test_purity.py`` enforces it.
"""

from __future__ import annotations
