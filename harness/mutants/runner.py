"""Run the catalog against each mutant, alone, in a scratch copy of the tree.

Theory of operation
-------------------
1. :func:`make_scratch` copies the repository's files (the working tree's tracked and
   untracked-but-not-ignored files, or ``git archive`` of a revision) into a temporary
   directory. The work tree is never written: other people run tests in it.
2. :func:`run_catalog` runs ``sts-harness run -j N --json`` in the copy, as a child
   process with the copy first on ``PYTHONPATH`` (ahead of any editable install),
   ``STS_ENGINE_NO_FAST_PATHS=1`` (:mod:`engine.core.fastpaths`: the C policy reader,
   the fast parser, the DNS reply memo and the TXT memo are off, so the reference code
   under mutation is what runs), and ``PYTHONDONTWRITEBYTECODE=1`` (no bytecode of a
   mutated module can outlive it).
3. The unmutated copy runs first (the baseline). Then each mutant is applied alone,
   the catalog runs, and the files are put back. Scenarios that fail or err under the
   mutant but passed in the baseline *caught* it; a mutant is killed when at least
   :data:`KILL_THRESHOLD` scenarios caught it. A mutant that no longer applies is an
   error naming the mutant and file; it does not stop the others.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.mutants.model import Mutant, MutantError, apply_mutant

__all__ = [
    "KILL_THRESHOLD",
    "CatalogRun",
    "MutantResult",
    "make_scratch",
    "run_catalog",
    "run_mutant",
]

KILL_THRESHOLD = 2  # scenarios that must fail for a mutant to count as killed
_CAUGHT = ("failed", "error")


@dataclass(frozen=True, slots=True)
class CatalogRun:
    """One run of the catalog: each scenario's verdict, or why the run itself failed."""

    verdicts: dict[str, str]
    seconds: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class MutantResult:
    """What the catalog did to one mutant.

    Attributes:
        mutant: the mutant.
        status: ``killed``, ``survived`` or ``error`` (did not apply, or the run broke).
        caught_by: the scenarios that failed under it and passed in the baseline.
        detail: the error, for ``error``.
        seconds: the catalog's wall time under this mutant.
    """

    mutant: Mutant
    status: str
    caught_by: tuple[str, ...] = ()
    detail: str = ""
    seconds: float = 0.0


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def make_scratch(repo: Path, rev: str | None = None) -> Path:
    """A temporary copy of the repository's files (the caller removes it).

    Args:
        repo: the repository root.
        rev: a git revision to copy instead of the working tree.

    Returns:
        The copy's root.

    Raises:
        MutantError: ``repo`` is not a git work tree, or ``rev`` is unknown.
    """
    scratch = Path(tempfile.mkdtemp(prefix="sts-mutants-"))
    try:
        if rev is not None:
            with tarfile.open(fileobj=io.BytesIO(_git(repo, "archive", rev))) as tar:
                tar.extractall(scratch, filter="data")
            return scratch
        listed = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        for name in sorted(set(listed.decode().split("\0")) - {""}):
            source = repo / name
            if source.is_file():  # a tracked file deleted in the work tree is skipped
                target = scratch / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        detail = (
            exc.stderr.decode().strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        )
        raise MutantError(f"{repo}: cannot copy the tree: {detail}") from None
    return scratch


_RUN = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"


def run_catalog(
    tree: Path, *, paths: Sequence[str] = ("scenarios",), jobs: int = 2, timeout: float = 900.0
) -> CatalogRun:
    """``sts-harness run -j JOBS --json`` in ``tree``, fast paths off.

    Args:
        tree: a scratch copy (its code is what runs).
        paths: scenario paths, relative to ``tree``.
        jobs: worker processes.
        timeout: seconds before the run is stopped and reported as an error.

    Returns:
        The verdict of every scenario, or an error when no report was written.
    """
    report = tree / ".mutants-report.json"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "STS_ENGINE_NO_FAST_PATHS": "1",
    }
    cmd = [sys.executable, "-c", _RUN, "run", "-q", "-j", str(jobs), "--json", str(report)]
    started = time.monotonic()
    # A session of its own, so that a timeout or an interrupt ends the run's worker
    # processes too, not only the parent.
    child = subprocess.Popen(
        [*cmd, *paths],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        return CatalogRun({}, time.monotonic() - started, f"catalog run over {timeout:.0f} s")
    except BaseException:
        _kill_group(child)
        raise
    seconds = time.monotonic() - started
    if child.returncode not in (0, 1) or not report.is_file():
        tail = (err or out).strip().splitlines()[-1:] or ["no output"]
        return CatalogRun({}, seconds, f"catalog run exited {child.returncode}: {tail[0]}")
    data = json.loads(report.read_text(encoding="utf-8"))
    return CatalogRun({s["id"]: s["verdict"] for s in data["scenarios"]}, seconds)


def _kill_group(child: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.communicate()


def run_mutant(
    mutant: Mutant,
    tree: Path,
    baseline: CatalogRun,
    *,
    paths: Sequence[str] = ("scenarios",),
    jobs: int = 2,
    timeout: float = 900.0,
) -> MutantResult:
    """Apply ``mutant`` alone to ``tree``, run the catalog, and put the files back."""
    try:
        originals = apply_mutant(mutant, tree)
    except MutantError as exc:
        return MutantResult(mutant, "error", detail=str(exc))
    try:
        run = run_catalog(tree, paths=paths, jobs=jobs, timeout=timeout)
    finally:
        for name, text in originals.items():
            (tree / name).write_text(text, encoding="utf-8")
    if run.error:
        return MutantResult(mutant, "error", detail=run.error, seconds=run.seconds)
    caught = tuple(
        sorted(
            sid
            for sid, verdict in run.verdicts.items()
            if verdict in _CAUGHT and baseline.verdicts.get(sid) == "passed"
        )
    )
    status = "killed" if len(caught) >= KILL_THRESHOLD else "survived"
    return MutantResult(mutant, status, caught, seconds=run.seconds)
