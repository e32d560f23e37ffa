"""Running scenarios against a black-box engine inside a fresh network namespace.

Theory of operation
-------------------
Python 3.11 cannot enter a namespace (no ``os.setns``), so the parent creates one
(:class:`~harness.netns.Namespace`) and starts this module inside it::

    ip netns exec sts-1234-ab12cd .venv/bin/python -m harness.run.batch.child JOB.json

The child does the whole run where the MTA can see the world: it relabels and
batches the scenarios (:mod:`harness.run.batch.plan`), brings up each
batch's world on the standard ports (after flushing the namespace's connection
tracking, so no NAT mapping of the previous world survives), starts the engine
once per batch, runs the steps and writes the
:class:`~harness.run.result.ScenarioResult` s (plain data) to the job's ``out`` file as a
pickle. The parent waits for the child to exit -- the
child stops every process it started in its own ``finally`` blocks -- and only
then deletes the namespace. A job file, not argv, carries the request, so the
parent can pass any number of scenarios.

:func:`run_engine` is the parent's side; :func:`unavailable` says, without a
namespace, why a profile cannot run here (root, ``ip netns``, ``nft``, binaries).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from harness.adapters.blackbox.adapter import BlackBoxEngine
from harness.adapters.blackbox.fit import fit
from harness.adapters.blackbox.profile import load_profile, render
from harness.netns import Namespace, flush_conntrack, probe, sweep_stale
from harness.run.batch.plan import plan, relabel, world_view
from harness.run.batch.runner import run_batch
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.scenario.loader import load_scenario

__all__ = ["main", "run_child", "run_engine", "unavailable"]

#: A guard against a hung child, not a budget: a minute per scenario file, and more.
_CHILD_TIMEOUT_BASE, _CHILD_TIMEOUT_PER_FILE = 300.0, 60.0


def unavailable(engine: str) -> str:
    """Why ``engine`` cannot run here ("" when it can)."""
    p = probe()
    if not p.ok:
        return p.reason
    profile = load_profile(engine)
    if p.rootless and not profile.rootless:
        return f"{engine} cannot run rootless (not root here); it needs {profile.rootless_needs}"
    if p.rootless and profile.rootless_user:
        try:
            pwd.getpwnam(profile.rootless_user)
        except KeyError:
            return f"no user {profile.rootless_user!r} (scripts/install-blackbox.sh)"
    venv_bin = str(Path(sys.executable).parent)
    for binary in profile.binaries:
        path = render(binary, {"venv_bin": venv_bin})
        if shutil.which(path) is None:
            return f"{path} is not installed (scripts/install-blackbox.sh)"
    return ""


def _skipped(path: Path, engine: str, reason: str) -> ScenarioResult:
    s = load_scenario(path)
    return ScenarioResult(
        id=s.id,
        title=s.title,
        path=str(s.path),
        topic=s.topic,
        covers=s.covers,
        engine=engine,
        verdict=ScenarioVerdict.SKIPPED,
        reason=reason,
        description=s.description,
    )


def run_engine(
    engine: str, paths: Sequence[Path], *, overrides: dict[str, str] | None = None
) -> list[ScenarioResult]:
    """Run scenario files against ``engine`` in a namespace of their own.

    Returns:
        One result per file, in order; all SKIPPED (with the reason) when the
        engine cannot run here.

    Raises:
        RuntimeError: the child failed or hung (its stderr's tail, or the timeout, says).
    """
    reason = unavailable(engine)
    if reason:
        return [_skipped(p, engine, reason) for p in paths]
    sweep_stale()
    with tempfile.TemporaryDirectory(prefix="blackbox-") as tmp:
        job = Path(tmp) / "job.json"
        out = Path(tmp) / "results.pickle"
        job.write_text(
            json.dumps(
                {
                    "engine": engine,
                    "paths": [str(Path(p).resolve()) for p in paths],
                    "out": str(out),
                    "overrides": overrides or {},
                }
            ),
            encoding="utf-8",
        )
        limit = _CHILD_TIMEOUT_BASE + _CHILD_TIMEOUT_PER_FILE * len(paths)
        data = run_child(engine, "harness.run.batch.child", job, out, limit)
        results: list[ScenarioResult] = pickle.loads(data)
        return results


def run_child(engine: str, module: str, job: Path, out: Path, limit: float) -> bytes:
    """Run ``python -m module job`` in a namespace for ``engine``; what it wrote to ``out``.

    The child gets ``limit`` seconds; on a timeout, or when we are interrupted, it is
    asked to stop (it stops its MTA in its own ``finally`` blocks), then killed.

    Raises:
        RuntimeError: the child failed or hung (its stderr's tail, or the timeout, says).
    """
    with Namespace(user=load_profile(engine).rootless_user) as ns:
        argv = ns.argv([sys.executable, "-m", module, str(job)])
        child = subprocess.Popen(
            argv, env=ns.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        err = ""
        try:
            _, err = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            err = f"no result within {limit:g} s: stopped"
        finally:
            if child.poll() is None:  # a timeout, or we were interrupted
                child.terminate()
                try:
                    child.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.communicate()
    if child.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"{module} for {engine!r} failed (status {child.returncode}):\n{err[-4000:]}"
        )
    return out.read_bytes()


async def _run(engine: str, paths: list[Path], overrides: dict[str, str]) -> list[ScenarioResult]:
    profile = load_profile(engine)
    results: dict[int, ScenarioResult] = {}
    runnable, notes = [], {}
    for k, path in enumerate(paths, start=1):
        part = fit(
            relabel(path.read_text(encoding="utf-8"), k, path),
            profile.capabilities,
            profile.features,
            smtp_timeout=profile.smtp_timeout,
            fetch_timeout=profile.fetch_timeout,
        )
        if part.scenario is None:
            results[k] = _skipped(path, engine, part.why)
            continue
        s, dropped = world_view(part.scenario, profile.capabilities)
        said = [part.note] if part.note else []
        if dropped:
            said.append("not judged (engine-internal): " + ", ".join(dropped))
        if said:
            notes[s.id] = "; ".join(said)
        runnable.append((k, s))
    order = {s.id: k for k, s in runnable}
    batches = plan([s for _, s in runnable], sender_matters="config" in profile.features)
    for n, batch in enumerate(batches):
        # Each batch is a new world: no NAT mapping of the last one may outlive it.
        flush_conntrack()
        with tempfile.TemporaryDirectory(prefix=f"bb-{engine}-{n}-") as tmp:
            for r in await run_batch(
                batch,
                engine,
                lambda: BlackBoxEngine(profile, overrides=overrides),
                Path(tmp),
                notes,
            ):
                results[order[r.id]] = r
    return [results[k] for k in sorted(results)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job file ``argv[0]`` (inside a namespace); exit 0 when results were written."""
    args = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    results = asyncio.run(
        _guarded(_run(job["engine"], [Path(p) for p in job["paths"]], dict(job["overrides"])))
    )
    Path(job["out"]).write_bytes(pickle.dumps(results))
    return 0


async def _guarded(coro: Coroutine[Any, Any, list[ScenarioResult]]) -> list[ScenarioResult]:
    # SIGTERM/SIGINT cancel the run, so every `finally` stops the MTA it started.
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


if __name__ == "__main__":
    sys.exit(main())
