"""Engine profiles: what ``fixtures/engines/NAME.toml`` says about a real MTA.

Theory of operation
-------------------
A profile is declarative: which programs to start (helpers first, then the MTA),
how each says it is ready (a regex on a log line, read as it arrives), how to stop
it, the files to write from templates, how a message is submitted, and a *log map*
from the MTA's log lines to events (a regex per line kind; its named groups become
the event's fields). What differs between MTAs beyond that lives in a small driver
(``[engine] driver``: ``postfix``, ``chasquid``, ``exim`` or ``generic``) in
:mod:`harness.adapters.blackbox.drivers`. (Our own gateway runs as a process
without a namespace: :mod:`harness.adapters.process`.)

Templates use ``{{name}}`` placeholders, never ``$name`` or ``{name}``: Postfix's own
syntax is ``$name`` and YAML/TOML use braces. :func:`render` fails on an unknown
placeholder rather than leaving it in a configuration file.

Profile keys (all checked; an unknown key is a :class:`ProfileError` naming it)::

    [engine]   title, driver, binaries, capabilities, features, verified, notes,
               smtp_timeout, fetch_timeout (seconds the MTA waits for one SMTP reply
               and for one policy fetch; 0: within the adapter's outcome window),
               rootless (runs in an unprivileged user namespace, harness.userns),
               rootless_needs (when not: why, and what to install or grant),
               rootless_user (rootless: the user the MTA runs as inside; default yours)
    [[helpers]] name, argv, ready, env, logs (started in order, before the MTA)
    [mta]      argv, ready, stop, env, logs (logs: files it logs to, followed as output)
    [submit]   method ("smtp"), port, queued (regex with a `qid` group), auth, queued_log
    [[log]]    match, code
    [files."NAME"] template                   (written into the instance directory)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import ConfigError
from engine.core.tomlnode import TomlNode
from harness.adapters.base import AdapterError
from harness.scenario.model import Capability

__all__ = [
    "BASE_PLACEHOLDERS",
    "ENGINES_ENV",
    "FEATURES",
    "PLACEHOLDER",
    "PROFILE_DIR",
    "EngineProfile",
    "LogRule",
    "ProcessSpec",
    "ProfileError",
    "SubmitSpec",
    "load_profile",
    "profile_dirs",
    "profile_names",
    "render",
]

#: The placeholders every template may use (the adapter's values; drivers add theirs:
#: :attr:`harness.adapters.blackbox.drivers.Driver.placeholders`).
BASE_PLACEHOLDERS = (
    "dir",
    "ca_file",
    "no_certs",
    "venv_bin",
    "submit_port",
    "helper_port",
    "hostname",
    "connection_cache",
)
#: Directories of your own profiles (``os.pathsep``-separated), searched by name
#: before the shipped ones: ``STS_HARNESS_ENGINES=ci/engines sts-harness run --engine my-mta``.
ENGINES_ENV = "STS_HARNESS_ENGINES"
#: Where the shipped profiles live.
PROFILE_DIR = Path(__file__).resolve().parents[3] / "fixtures" / "engines"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


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

    return PLACEHOLDER.sub(one, template)


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
        logs: log files the program writes (templates), read like its output.
    """

    name: str
    argv: tuple[str, ...]
    ready: str
    stop: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    logs: tuple[str, ...] = ()


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
    rootless: bool = False
    rootless_needs: str = ""
    rootless_user: str | None = None


_DRIVERS = ("postfix", "chasquid", "exim", "generic")
_ENGINE_KEYS: tuple[str, ...] = ("title", "driver", "binaries", "capabilities", "features")
_ENGINE_KEYS += ("verified", "notes", "smtp_timeout", "fetch_timeout")
_ENGINE_KEYS += ("rootless", "rootless_needs", "rootless_user")
_TABLES = ("engine", "helpers", "mta", "submit", "log", "files")
_PROCESS_KEYS = ("name", "argv", "ready", "stop", "env", "logs")
_VERIFIED = ("pkix", "dane", "none")
#: ``[engine] features``: what a profile's fixed configuration does (see fit.needs).
FEATURES = frozenset({"sts", "dane", "config"})


def _strings(node: TomlNode, *, non_empty: bool = False) -> tuple[str, ...]:
    return tuple(n.text(non_empty=True) for n in node.items(non_empty=non_empty))


def _regex(node: TomlNode) -> re.Pattern[str]:
    text = node.text(non_empty=True)
    try:
        return re.compile(text)
    except re.error as exc:
        raise node.bad(f"a regular expression ({exc})") from None


def _process(node: TomlNode) -> ProcessSpec:
    t = node.table(_PROCESS_KEYS, required=("argv", "ready"))
    argv = _strings(t["argv"], non_empty=True)
    _regex(t["ready"])
    env = t.get("env", node.child("env", {})).table()
    return ProcessSpec(
        name=t["name"].text(non_empty=True) if "name" in t else argv[0],
        argv=argv,
        ready=t["ready"].text(),
        stop=_strings(t["stop"]) if "stop" in t else (),
        env={k: v.text() for k, v in env.items()},
        logs=_strings(t["logs"]) if "logs" in t else (),
    )


def load_profile(name_or_path: str | Path) -> EngineProfile:
    """Load a profile by name (``postfix-sts``) or path.

    Raises:
        ProfileError: no such profile, or a wrong key or value (one line: the file,
            the key path, the value and what is allowed).
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        found = [d / f"{name_or_path}.toml" for d in profile_dirs()]
        path = next((f for f in found if f.is_file()), found[-1])
    if not path.is_file():
        if Path(name_or_path).suffix == ".toml":
            raise ProfileError(f"{path}: no such profile file")
        raise ProfileError(f"no engine profile {str(name_or_path)!r}; known: {profile_names()}")
    try:
        return _read(TomlNode.parse(path.read_text(encoding="utf-8"), str(path)), path)
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _read(root: TomlNode, path: Path) -> EngineProfile:
    top = root.table(_TABLES, required=("engine", "mta", "submit"))
    eng = top["engine"].table(_ENGINE_KEYS, required=("driver",))
    driver = eng["driver"].choice(_DRIVERS)
    default = top["engine"].child
    features = _strings(eng.get("features", default("features", [])))
    for i, f in enumerate(features):
        eng["features"].child(i, f).choice(sorted(FEATURES))
    caps = frozenset(
        n.member(Capability) for n in eng.get("capabilities", default("capabilities", [])).items()
    )
    waits = {
        key: eng[key].number(at_least=0, expected="seconds (a number >= 0)") if key in eng else 0.0
        for key in ("smtp_timeout", "fetch_timeout")
    }
    rootless = eng["rootless"].boolean() if "rootless" in eng else False
    needs = eng["rootless_needs"].text(non_empty=True) if "rootless_needs" in eng else ""
    if not rootless and not needs:
        raise eng.get("rootless", default("rootless", False)).error(
            "a profile that cannot run rootless says why in rootless_needs "
            "(what to install or grant), or sets rootless = true"
        )
    sub_node = top["submit"]
    sub = sub_node.table(
        ("method", "port", "queued", "auth", "queued_log"), required=("method", "port", "queued")
    )
    sub["method"].choice(["smtp"])
    if _regex(sub["queued"]).groupindex.get("qid") is None and "queued_log" not in sub:
        raise sub["queued"].bad("a regular expression with a (?P<qid>...) group")
    rules = []
    for node in top.get("log", root.child("log", [])).items():
        rule = node.table(("match", "code"), required=("match", "code"))
        rules.append(LogRule(_regex(rule["match"]), rule["code"].text(non_empty=True)))
    files = {}
    for fname, spec in top.get("files", root.child("files", {})).table().items():
        files[fname] = spec.table(("template",), required=("template",))["template"].text()
    return EngineProfile(
        name=path.stem,
        title=eng["title"].text(non_empty=True) if "title" in eng else path.stem,
        driver=driver,
        binaries=_strings(eng.get("binaries", default("binaries", []))),
        capabilities=caps,
        features=frozenset(features),
        verified=eng["verified"].choice(_VERIFIED) if "verified" in eng else "pkix",
        notes=eng["notes"].text().strip() if "notes" in eng else "",
        helpers=tuple(_process(h) for h in top.get("helpers", root.child("helpers", [])).items()),
        mta=_process(top["mta"]),
        submit=SubmitSpec(
            "smtp",
            sub["port"].text(non_empty=True),
            sub["queued"].text(),
            sub["auth"].text() if "auth" in sub else "",
            sub["queued_log"].text() if "queued_log" in sub else "",
        ),
        log=tuple(rules),
        files={k: v.lstrip("\n") for k, v in files.items()},
        path=path,
        smtp_timeout=waits["smtp_timeout"],
        fetch_timeout=waits["fetch_timeout"],
        rootless=rootless,
        rootless_needs=needs,
        rootless_user=eng["rootless_user"].text(non_empty=True) if "rootless_user" in eng else None,
    )


def profile_dirs() -> list[Path]:
    """Where profiles are looked up by name: :data:`ENGINES_ENV`'s directories, in order,
    then the shipped ones (:data:`PROFILE_DIR`)."""
    extra = os.environ.get(ENGINES_ENV, "").split(os.pathsep)
    return [*(Path(d) for d in extra if d), PROFILE_DIR]


def profile_names() -> list[str]:
    """The names of every profile found (``--engine NAME``, the matrix's columns)."""
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.toml")})
