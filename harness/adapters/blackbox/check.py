"""``sts-harness profile check``: is a profile usable, without starting anything?

Theory of operation
-------------------
:func:`check_profile` goes further than :func:`~harness.adapters.blackbox.profile.load_profile`
(which already refuses unknown keys, wrong types, bad regular expressions and a
non-rootless profile that does not say why), with the checks an author needs before
the first run, each a one-line problem naming the file and the key:

* every ``{{placeholder}}`` of every template (argv, stop, env, logs, submit, files)
  is one the adapter or the profile's driver fills in
  (:data:`~harness.adapters.blackbox.profile.BASE_PLACEHOLDERS`,
  :attr:`~harness.adapters.blackbox.drivers.Driver.placeholders`; ``client_port`` in
  ``queued_log``);
* the log map can settle a recipient: some rule has code ``outcome``, and every
  ``outcome`` rule has ``qid``, ``rcpt`` and ``status`` groups (what
  :meth:`~harness.adapters.blackbox.drivers.Driver.settle` reads);
* ``queued_log`` has a ``qid`` group;
* each binary is on ``PATH`` (unless ``binaries=False``: checking a profile for
  another machine).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.adapters.blackbox.drivers import DRIVERS
from harness.adapters.blackbox.profile import (
    BASE_PLACEHOLDERS,
    PLACEHOLDER,
    EngineProfile,
    ProfileError,
    load_profile,
    render,
)

__all__ = ["ProfileCheckReport", "check_profile"]

_OUTCOME_GROUPS = ("qid", "rcpt", "status")


@dataclass(frozen=True, slots=True)
class ProfileCheckReport:
    """What :func:`check_profile` found.

    Attributes:
        path: the file checked.
        problems: one line each (``FILE: key: what is wrong``); empty when usable.
        profile: the loaded profile, when it loaded.
    """

    path: Path
    problems: tuple[str, ...]
    profile: EngineProfile | None = None

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


def _templates(p: EngineProfile) -> Iterator[tuple[str, str]]:
    """Every template of ``p`` with its key path."""
    for i, b in enumerate(p.binaries):
        yield f"engine.binaries[{i}]", b
    procs = [(f"helpers[{i}]", h) for i, h in enumerate(p.helpers)] + [("mta", p.mta)]
    for where, spec in procs:
        for i, a in enumerate(spec.argv):
            yield f"{where}.argv[{i}]", a
        for i, a in enumerate(spec.stop):
            yield f"{where}.stop[{i}]", a
        for k, v in spec.env.items():
            yield f"{where}.env.{k}", v
        for i, f in enumerate(spec.logs):
            yield f"{where}.logs[{i}]", f
    yield "submit.port", p.submit.port
    yield "submit.auth", p.submit.auth
    yield "submit.queued_log", p.submit.queued_log
    for name, template in p.files.items():
        yield f'files."{name}".template', template


def check_profile(path: str | Path, *, binaries: bool = True) -> ProfileCheckReport:
    """Check the profile file ``path`` (see the module docstring).

    Args:
        path: a profile file (``.toml``) or a shipped profile's name.
        binaries: also check that each binary is installed here.
    """
    path = Path(path)
    try:
        p = load_profile(path)
    except ProfileError as exc:
        return ProfileCheckReport(path, (str(exc),))
    where = str(p.path)
    known = {*BASE_PLACEHOLDERS, *DRIVERS[p.driver].placeholders}
    problems: list[str] = []
    for key, template in _templates(p):
        extra = {"client_port"} if key == "submit.queued_log" else set()
        for name in dict.fromkeys(PLACEHOLDER.findall(template)):
            if name not in known | extra:
                problems.append(
                    f"{where}: {key}: unknown placeholder {{{{{name}}}}}; "
                    f"known (driver {p.driver}): {', '.join(sorted(known | extra))}"
                )
    outcomes = [(i, r) for i, r in enumerate(p.log) if r.code == "outcome"]
    if not outcomes:
        problems.append(
            f'{where}: log: no rule with code = "outcome"; the harness settles a '
            "recipient only from one (groups qid, rcpt, status)"
        )
    for i, rule in outcomes:
        missing = [g for g in _OUTCOME_GROUPS if g not in rule.match.groupindex]
        if missing:
            problems.append(
                f"{where}: log[{i}].match: an outcome rule needs the named groups "
                f"{', '.join(_OUTCOME_GROUPS)}; missing {', '.join(missing)}"
            )
    if p.submit.queued_log:
        try:
            groups = re.compile(PLACEHOLDER.sub("0", p.submit.queued_log)).groupindex
        except re.error as exc:
            problems.append(f"{where}: submit.queued_log: not a regular expression ({exc})")
        else:
            if "qid" not in groups:
                problems.append(f"{where}: submit.queued_log: needs a (?P<qid>...) group")
    if binaries:
        venv_bin = str(Path(sys.executable).parent)
        for i, b in enumerate(p.binaries):
            if set(PLACEHOLDER.findall(b)) - {"venv_bin"}:
                continue  # a value known only at run time (or unknown: reported above)
            binary = render(b, {"venv_bin": venv_bin})
            if shutil.which(binary) is None:
                problems.append(
                    f"{where}: engine.binaries[{i}]: {binary!r} is not installed here "
                    "(not on PATH; scripts/install-blackbox.sh, or --no-binaries to skip)"
                )
    return ProfileCheckReport(path, tuple(problems), p)
