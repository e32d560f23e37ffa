"""Cheap strategy building blocks shared by the input strategies.

``st.from_regex`` and a fresh ``st.sampled_from`` per draw cost most of a draw's time
(each new strategy is validated again); these build words from character sets and
keep one sampler per literal list.
"""

from __future__ import annotations

import string
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import Any

from hypothesis import strategies as st

__all__ = ["ALNUM", "pick_from", "word"]

ALNUM = string.ascii_letters + string.digits


@lru_cache(maxsize=256)
def _sampler(items: tuple[Hashable, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(items)


def pick_from(items: Sequence[Hashable]) -> st.SearchStrategy[Any]:
    """``st.sampled_from(items)``, one strategy per distinct list."""
    return _sampler(tuple(items))


def word(first: str, rest: str, max_rest: int, last: str | None = None) -> st.SearchStrategy[str]:
    """A character of ``first``, then up to ``max_rest`` of ``rest``, ending in ``last``."""
    body = st.tuples(st.sampled_from(first), st.text(st.sampled_from(rest), max_size=max_rest))
    if last is None:
        return body.map("".join)
    return st.tuples(body.map("".join), st.sampled_from(last)).map(
        lambda t: t[0] + t[1] if t[0][-1] not in last else t[0]
    )
