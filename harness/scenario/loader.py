"""Reading scenario files: TOML in, a checked :class:`~harness.scenario.model.Scenario` out.

Theory of operation
-------------------
A scenario file has five top-level tables, all checked key by key with
:class:`~engine.core.tomlnode.TomlNode` (as the engine reads its configuration), so
every mistake is a :class:`~harness.errors.SpecError` naming ``file: key.path``, the
value and what is allowed:

* ``[scenario]``: id, title, covers, topic, requires, description;
* ``[world]``: the world spec, loaded by :func:`~harness.world.spec.load_world_spec`
  with ``prefix="world"``;
* ``[sender]``: the engine configuration in the engine's own layout. The scenario
  model does not read it: the checks the engines register
  (:func:`register_sender_check`; our engine's parser,
  :func:`harness.adapters.sender.check_sender`, registered by
  :mod:`harness.adapters.registry`) run on it here, so a typo in
  ``[sender.destination_controls."example.com"]`` fails at load time too;
* ``[[steps]]`` (:mod:`harness.scenario.steps`) and ``[expect]``
  (:mod:`harness.scenario.expect`).

A scenario about a configuration the engine must refuse says so with
``[expect] config_error = "~regex"`` (or a plain substring): then a ``[sender]`` the
engine's parser rejects is not a load error, and the runner checks, at engine start,
that the engine refuses it with a matching message (:func:`config_error_matches`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.core.tomlnode import TomlNode, key_path
from harness.errors import SpecError, spec_errors
from harness.scenario.expect import parse_expect
from harness.scenario.model import Capability, Expect, Scenario
from harness.scenario.steps import parse_step
from harness.world.spec import load_world_spec
from harness.world.spec.values import member_of, strings_of

__all__ = [
    "CONFIG_ERROR_KEY",
    "PROXY_FROM_WORLD",
    "SENDER_CHECKS",
    "SenderCheck",
    "config_error_matches",
    "discover",
    "load_all",
    "load_scenario",
    "loads_scenario",
    "register_sender_check",
]

#: ``[sender.policy_fetch] proxy = "world"``: use the world's CONNECT proxy.
PROXY_FROM_WORLD = "world"
#: ``[expect] config_error``: the engine must refuse the ``[sender]`` configuration.
CONFIG_ERROR_KEY = "config_error"
_TOP = ("scenario", "world", "sender", "steps", "expect")
_META = ("id", "title", "covers", "topic", "requires", "description")
_COVER = re.compile(r"(?:[A-Z]+-\d+|seed:[a-z0-9][a-z0-9:._-]*)")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOPIC = re.compile(r"[a-z][a-z0-9_]*")
#: Parts of the engine configuration the adapter fills in from the running world.
_ADAPTER_FILLED = {("dns", "resolvers"), ("tls", "ca_file")}


#: A check of ``[sender]`` an engine registers: raises SpecError (file, key, value).
SenderCheck = Callable[[TomlNode], None]
#: The registered checks, run on every ``[sender]`` in order.
SENDER_CHECKS: list[SenderCheck] = []


def register_sender_check(check: SenderCheck) -> None:
    """Run ``check`` on every scenario's ``[sender]`` as it loads (once, however often
    it is registered)."""
    if check not in SENDER_CHECKS:
        SENDER_CHECKS.append(check)


def config_error_matches(pattern: str, message: str) -> bool:
    """Whether an engine's refusal ``message`` matches ``[expect] config_error``.

    ``pattern`` is a regular expression searched in the message when it starts with
    ``~`` (as event field matchers are), else text that must occur in it.
    """
    if pattern.startswith("~"):
        return re.search(pattern[1:], message) is not None
    return pattern in message


def _config_error(top: dict[str, TomlNode]) -> tuple[str | None, TomlNode | None]:
    """``[expect] config_error``, and the ``[expect]`` table without it."""
    if "expect" not in top:
        return None, None
    node = top["expect"]
    entries = node.table()
    if CONFIG_ERROR_KEY not in entries:
        return None, node
    found = entries[CONFIG_ERROR_KEY]
    pattern = found.text()
    if pattern.startswith("~"):
        try:
            re.compile(pattern[1:])
        except re.error as exc:
            raise found.bad(f"a valid regular expression ({exc})") from None
    rest = {k: v for k, v in node.value.items() if k != CONFIG_ERROR_KEY}
    return pattern, (TomlNode(rest, node.file, node.path) if rest else None)


def _check_sender(node: TomlNode, *, refusal_expected: bool = False) -> Mapping[str, Any]:
    table = node.table()
    for section, key in _ADAPTER_FILLED:
        value = table[section].value if section in table else None
        if isinstance(value, Mapping) and key in value:
            where = key_path(key_path(node.path, section), key)
            raise SpecError("set by the adapter", file=node.file, key=where, value=value[key])
    for check in SENDER_CHECKS:
        try:
            check(node)
        except SpecError:
            if refusal_expected:  # [expect] config_error: the runner judges the refusal
                return node.value  # type: ignore[no-any-return]
            raise
        except (TypeError, ValueError) as exc:  # tomli_w: a value TOML cannot hold
            raise node.bad(f"engine configuration TOML can hold ({exc})") from None
    return node.value  # type: ignore[no-any-return]


def _meta(node: TomlNode, path: Path) -> dict[str, Any]:
    e = node.table(_META)
    sid = e["id"].text() if "id" in e else path.stem
    if not _ID.fullmatch(sid):
        if "id" in e:
            raise e["id"].bad("a scenario id: letters, digits, '.', '_' and '-'")
        raise SpecError(  # the file's name stands for the id: no TomlNode to blame
            "the file name is the id when [scenario] id is absent: letters, digits, '.', "
            "'_' and '-'",
            file=str(path), key="scenario.id", value=sid,
        )  # fmt: skip
    folder = path.parent.name or path.resolve().parent.name  # "x.toml": the working dir
    topic = e["topic"].text() if "topic" in e else folder.replace("-", "_")
    if not _TOPIC.fullmatch(topic):
        if "topic" in e:
            raise e["topic"].bad("a lower-case identifier (it is a pytest marker)")
        raise SpecError(
            "the directory's name is the topic when [scenario] topic is absent: a "
            "lower-case identifier (it is a pytest marker)",
            file=str(path), key="scenario.topic", value=topic,
        )  # fmt: skip
    covers = strings_of(e["covers"]) if "covers" in e else ()
    for i, tag in enumerate(covers):
        if not _COVER.fullmatch(tag):
            raise (
                e["covers"].child(i, tag).bad("a requirement ID (DISC-1) or a seed tag (seed:name)")
            )
    requires = frozenset(
        member_of(e["requires"].child(i, v), Capability)
        for i, v in enumerate(strings_of(e["requires"]) if "requires" in e else ())
    )
    return {
        "id": sid,
        "title": e["title"].text() if "title" in e else sid,
        "topic": topic,
        "covers": covers,
        "requires": requires,
        "description": e["description"].text().strip() if "description" in e else "",
    }


def loads_scenario(text: str, path: str | Path) -> Scenario:
    """Check a scenario given as TOML text.

    Args:
        text: the file's contents.
        path: the file's path (errors name it; id and topic default from it).

    Raises:
        SpecError: the text is not TOML, or any key or value is wrong.
    """
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", file=source) from None
    with spec_errors():
        return _scenario(TomlNode(data, source), path)


def _scenario(root: TomlNode, path: Path) -> Scenario:
    source = root.file
    top = root.table(_TOP, required=("scenario", "world", "steps"))
    meta = _meta(top["scenario"], path)
    top["world"].table()  # a table, or a SpecError naming `world`
    world_table = top["world"].value
    world = load_world_spec(world_table, source, prefix="world")
    config_error, expect_node = _config_error(top)
    if config_error is not None and "sender" not in top:
        raise (
            top["expect"]
            .child(CONFIG_ERROR_KEY, config_error)
            .error("config_error needs a [sender] table for the engine to refuse")
        )
    refusal = config_error is not None
    sender = _check_sender(top["sender"], refusal_expected=refusal) if "sender" in top else {}
    step_nodes = top["steps"].items()
    if not step_nodes:
        raise top["steps"].bad("at least one step")
    steps = tuple(parse_step(n, i, world) for i, n in enumerate(step_nodes))
    expect = parse_expect(expect_node) if expect_node is not None else Expect()
    if refusal and (not expect.empty or any(not s.expect.empty for s in steps)):
        raise (
            top["expect"]
            .child(CONFIG_ERROR_KEY, config_error)
            .error("with config_error no step runs, so no other expectation can be judged")
        )
    return Scenario(
        path=path,
        world=world,
        world_table=world_table,
        sender=sender,
        steps=steps,
        expect=expect,
        config_error=config_error,
        **meta,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and check one scenario file.

    Raises:
        SpecError: unreadable, not TOML, or a wrong key or value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=str(path)) from None
    return loads_scenario(text, path)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Scenario files under ``paths`` (files as given; directories: ``**/*.toml``), sorted.

    Raises:
        SpecError: a path does not exist.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*.toml") if f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise SpecError("no such file or directory", file=str(p))
    return list(dict.fromkeys(found))


def load_all(paths: Iterable[str | Path]) -> list[Scenario]:
    """Every scenario under ``paths``, checked, with unique ids.

    Raises:
        SpecError: a file is wrong, or two files share an id.
    """
    scenarios: list[Scenario] = []
    seen: dict[str, Path] = {}
    for path in discover(paths):
        s = load_scenario(path)
        if s.id in seen:
            raise SpecError(
                f"also the id of {seen[s.id]}", file=str(path), key="scenario.id", value=s.id
            )
        seen[s.id] = path
        scenarios.append(s)
    return scenarios
