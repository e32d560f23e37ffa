"""Our engine's reading of a scenario's ``[sender]`` table.

A scenario's ``[sender]`` is the engine configuration in our engine's own layout
(``engine/config.py``); the scenario model does not read it. This module does, for the
adapters that run our engine (:mod:`~harness.adapters.inprocess`,
:mod:`~harness.adapters.gateway`, :mod:`~harness.adapters.process`):

* :func:`sender_toml` writes the table as engine configuration TOML, with the
  world's proxy for ``proxy = "world"``;
* :func:`check_sender` is the load-time check the scenario loader runs through its
  hook (:func:`harness.scenario.loader.register_sender_check`;
  :mod:`harness.adapters.registry` registers it): the engine's own parser, its
  refusal as a :class:`~harness.errors.SpecError` naming the file, the key path
  below ``sender`` and the value. The adapters parse the same TOML again at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w

from engine.config import parse_config
from engine.core.errors import ConfigError
from engine.core.tomlnode import TomlNode
from harness.errors import SpecError
from harness.scenario.loader import PROXY_FROM_WORLD

__all__ = ["check_sender", "sender_toml"]


def sender_toml(sender: Mapping[str, Any], proxy: tuple[str, int] | None = None) -> str:
    """The ``[sender]`` table as engine configuration TOML.

    Args:
        sender: the table.
        proxy: the world's proxy, substituted for ``proxy = "world"``.

    Raises:
        TypeError, ValueError: a value TOML cannot hold (tomli_w).
    """
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in sender.items()}
    fetch = data.get("policy_fetch")
    if isinstance(fetch, dict) and fetch.get("proxy") == PROXY_FROM_WORLD:
        fetch["proxy"] = f"{proxy[0]}:{proxy[1]}" if proxy else "127.0.0.1:3128"
    return tomli_w.dumps(data)


def check_sender(node: TomlNode) -> None:
    """``[sender]`` read by the engine's configuration parser.

    Raises:
        SpecError: the engine refuses it (file, ``sender.`` key path, value, reason).
        TypeError, ValueError: a value TOML cannot hold.
    """
    try:
        parse_config(sender_toml(node.value), file=node.file)
    except ConfigError as exc:
        where = f"{node.path}.{exc.key}" if exc.key else node.path
        raise SpecError(exc.reason, file=node.file, key=where, value=exc.value) from None
