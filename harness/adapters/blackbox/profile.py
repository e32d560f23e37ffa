"""Engine profiles: what ``fixtures/engines/NAME.toml`` says about a real MTA.

Theory of operation
-------------------
A profile is declarative: which programs to start (helpers first, then the MTA),
how each says it is ready (a regex on a log line, read as it arrives), how to stop
it, the files to write from templates, how a message is submitted, and a *log map*
from the MTA's log lines to events (a regex per line kind; its named groups become
the event's fields). What differs between MTAs beyond that lives in a small driver
(``[engine] driver``: ``postfix`` or ``chasquid``) in
:mod:`harness.adapters.blackbox.drivers`. (Our own gateway runs as a process
without a namespace: :mod:`harness.adapters.process`.)

Templates use ``{{name}}`` placeholders, never ``$name`` or ``{name}``: Postfix's own
syntax is ``$name`` and YAML/TOML use braces. :func:`render` fails on an unknown
placeholder rather than leaving it in a configuration file.

Profile keys (all checked; an unknown key is a :class:`ProfileError` naming it)::

    [engine]   title, driver, binaries, capabilities, features, verified, notes,
               smtp_timeout, fetch_timeout (seconds the MTA waits for one SMTP reply
               and for one policy fetch; 0: within the adapter's outcome window)
    [[helpers]] name, argv, ready, env       (started in order, before the MTA)
    [mta]      argv, ready, stop, env
    [submit]   method ("smtp"), port, queued (regex with a `qid` group), auth, queued_log
    [[log]]    match, code
    [files."NAME"] template                   (written into the instance directory)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.adapters.base import AdapterError
from harness.scenario.model import Capability

__all__ = [
    "FEATURES",
    "PROFILE_DIR",
    "EngineProfile",
    "LogRule",
    "ProcessSpec",
    "ProfileError",
    "SubmitSpec",
    "load_profile",
    "profile_names",
    "render",
]

#: Where the shipped profiles live.
PROFILE_DIR = Path(__file__).resolve().parents[3] / "fixtures" / "engines"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class ProfileError(AdapterError):
    """A profile file is wrong: unknown key, bad value, unknown placeholder."""


def render(template: str, context: Mapping[str, str]) -> str:
    """``template`` with every ``{{name}}`` replaced from ``context``.

    Raises:
        ProfileError: a placeholder has no value.
    """

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in context:
            raise ProfileError(
                f"unknown placeholder {{{{{m.group(1)}}}}}; known: {sorted(context)}"
            )
        return context[m.group(1)]

    return _PLACEHOLDER.sub(one, template)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One program of a profile.

    Attributes:
        name: a label for logs and errors.
        argv: the command line (templates).
        ready: a regex; the program is ready when a log line matches it.
        stop: a command that asks it to stop (else SIGTERM); the adapter then waits
            for the program itself to exit.
        env: extra environment (templates).
    """

    name: str
    argv: tuple[str, ...]
    ready: str
    stop: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """How a message gets to the MTA.

    Attributes:
        method: ``smtp`` (to 127.0.0.1:``port``).
        port: the port (template).
        queued: a regex on the final DATA reply with a ``qid`` group: the MTA's id
            for the message, which its log lines carry.
        auth: ``user:password`` for AUTH PLAIN after STARTTLS (template), or "".
        queued_log: for MTAs whose reply carries no id (chasquid): a regex on the
            MTA's log with a ``qid`` group, where ``{{client_port}}`` is our source port.
    """

    method: str
    port: str
    queued: str
    auth: str = ""
    queued_log: str = ""


@dataclass(frozen=True, slots=True)
class LogRule:
    """One line kind of the log map: a regex and the event code it makes."""

    match: re.Pattern[str]
    code: str


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """A parsed ``fixtures/engines/NAME.toml`` (see the module docstring)."""

    name: str
    title: str
    driver: str
    binaries: tuple[str, ...]
    capabilities: frozenset[Capability]
    features: frozenset[str]
    verified: str
    notes: str
    helpers: tuple[ProcessSpec, ...]
    mta: ProcessSpec
    submit: SubmitSpec
    log: tuple[LogRule, ...]
    files: Mapping[str, str]
    path: Path
    smtp_timeout: float = 0.0
    fetch_timeout: float = 0.0


_DRIVERS = ("postfix", "chasquid")
_ENGINE_KEYS = {"title", "driver", "binaries", "capabilities", "features", "verified", "notes"}
_ENGINE_KEYS |= {"smtp_timeout", "fetch_timeout"}
#: ``[engine] features``: what a profile's fixed configuration does (see fit.needs).
FEATURES = frozenset({"sts", "dane", "config"})


def _table(data: Mapping[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ProfileError(f"{where}: {key!r} must be a table, got {value!r}")
    unknown = set(value) - allowed
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)} in [{key}]")
    return dict(value)


def _process(raw: Mapping[str, Any], where: str) -> ProcessSpec:
    unknown = set(raw) - {"name", "argv", "ready", "stop", "env"}
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    if not raw.get("argv") or not raw.get("ready"):
        raise ProfileError(f"{where}: needs argv and ready")
    return ProcessSpec(
        name=str(raw.get("name", raw["argv"][0])),
        argv=tuple(str(a) for a in raw["argv"]),
        ready=str(raw["ready"]),
        stop=tuple(str(a) for a in raw.get("stop", ())),
        env={str(k): str(v) for k, v in raw.get("env", {}).items()},
    )


def load_profile(name_or_path: str | Path) -> EngineProfile:
    """Load a profile by name (``postfix-sts``) or path.

    Raises:
        ProfileError: no such profile, or a wrong key or value.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ProfileError(f"no engine profile {str(name_or_path)!r}; known: {profile_names()}")
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: {exc}") from exc
    unknown = set(data) - {"engine", "helpers", "mta", "submit", "log", "files"}
    if unknown:
        raise ProfileError(f"{where}: unknown tables {sorted(unknown)}")
    eng = _table(data, "engine", _ENGINE_KEYS, where)
    if eng.get("driver") not in _DRIVERS:
        raise ProfileError(f"{where}: engine.driver must be one of {_DRIVERS}")
    if not set(eng.get("features", ())) <= FEATURES:
        raise ProfileError(f"{where}: engine.features must be among {sorted(FEATURES)}")
    try:
        caps = frozenset(Capability(c) for c in eng.get("capabilities", ()))
    except ValueError as exc:
        raise ProfileError(f"{where}: engine.capabilities: {exc}") from exc
    waits: dict[str, float] = {}
    for key in ("smtp_timeout", "fetch_timeout"):
        value = eng.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ProfileError(f"{where}: engine.{key} must be seconds (>= 0), got {value!r}")
        waits[key] = float(value)
    sub = _table(data, "submit", {"method", "port", "queued", "auth", "queued_log"}, where)
    if sub.get("method") != "smtp" or "port" not in sub or "queued" not in sub:
        raise ProfileError(f"{where}: [submit] needs method = 'smtp', port and queued")
    rules = []
    for i, rule in enumerate(data.get("log", ())):
        if set(rule) != {"match", "code"}:
            raise ProfileError(f"{where}: log[{i}] needs exactly match and code")
        try:
            rules.append(LogRule(re.compile(rule["match"]), str(rule["code"])))
        except re.error as exc:
            raise ProfileError(f"{where}: log[{i}].match: {exc}") from exc
    files = {}
    for fname, spec in data.get("files", {}).items():
        if set(spec) != {"template"}:
            raise ProfileError(f"{where}: files.{fname!r} needs exactly template")
        files[str(fname)] = str(spec["template"]).lstrip("\n")
    return EngineProfile(
        name=path.stem,
        title=str(eng.get("title", path.stem)),
        driver=str(eng["driver"]),
        binaries=tuple(str(b) for b in eng.get("binaries", ())),
        capabilities=caps,
        features=frozenset(str(f) for f in eng.get("features", ())),
        verified=str(eng.get("verified", "pkix")),
        notes=str(eng.get("notes", "")).strip(),
        helpers=tuple(
            _process(h, f"{where}: helpers[{i}]") for i, h in enumerate(data.get("helpers", ()))
        ),
        mta=_process(data.get("mta", {}), f"{where}: [mta]"),
        submit=SubmitSpec(
            "smtp",
            str(sub["port"]),
            str(sub["queued"]),
            str(sub.get("auth", "")),
            str(sub.get("queued_log", "")),
        ),
        log=tuple(rules),
        files=files,
        path=path,
        smtp_timeout=waits["smtp_timeout"],
        fetch_timeout=waits["fetch_timeout"],
    )


def profile_names() -> list[str]:
    """The shipped profiles' names."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))
