"""TOML for people: tables as ``tomli_w`` writes them, short arrays on one line.

``tomli_w`` (the well-kept writer the harness already uses) puts every array element on
a line of its own, so ``tlsa = [[3, 1, 1]]`` becomes nine lines of one number each.
:func:`toml_text` keeps its output and joins each array back onto one line when that
line is at most :data:`MAX_LINE` characters; longer arrays stay as they were written.
Only arrays are touched, and tomli_w writes each element on a line of its own ending in
a comma (strings are single-line: ``multiline_strings`` is off), so the join needs no
TOML parsing of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w

__all__ = ["MAX_LINE", "toml_text"]

MAX_LINE = 100


def toml_text(table: Mapping[str, Any]) -> str:
    """``table`` as TOML text, arrays that fit on one line written on one line."""
    # split on "\n" only: str.splitlines also breaks at U+0085, U+2028 and the like,
    # which tomli_w leaves unescaped inside strings and keys
    lines = tomli_w.dumps(dict(table)).split("\n")[:-1]
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.endswith("["):
            out.append(line)
            i += 1
            continue
        end = _closing(lines, i)
        joined = line[:-1] + _inline(lines[i : end + 1])
        if len(joined) <= MAX_LINE:
            out.append(joined)
        else:
            out.extend(lines[i : end + 1])
        i = end + 1
    return "\n".join(out) + ("\n" if out else "")


def _closing(lines: list[str], start: int) -> int:
    """The index of the line that closes the array opened at the end of ``lines[start]``."""
    depth = 0
    for j in range(start, len(lines)):
        token = lines[j].strip()
        if token.endswith("["):
            depth += 1
        elif token in ("]", "],"):
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced array in tomli_w output")  # pragma: no cover


def _inline(block: list[str]) -> str:
    """``[`` ... ``]`` lines (the first ends with ``[``) as one inline array, with a
    trailing comma when the block's last line has one (an element of an outer array)."""
    stack: list[list[str]] = [[]]
    for raw in block[1:]:
        token = raw.strip()
        if token.endswith("["):
            stack.append([])
        elif token in ("]", "],"):
            if len(stack) == 1:
                break
            items = stack.pop()
            stack[-1].append("[" + ", ".join(items) + "]")
        else:
            stack[-1].append(token[:-1] if token.endswith(",") else token)
    text = "[" + ", ".join(stack[0]) + "]"
    return text + ("," if block[-1].strip() == "]," else "")
