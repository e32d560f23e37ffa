"""Fuzzing a real MTA: many generated worlds per namespace world and engine lifetime.

Theory of operation
-------------------
:func:`run_worlds` (the parent) writes each generated world as a scenario file,
creates a network namespace and starts this module inside it, as the matrix's
batch child does (:mod:`harness.run.batch.child`, whose parts it reuses)::

    ip netns exec sts-… python -m harness.fuzz.blackbox JOB.json

The child relabels world *k* under ``sK.`` (:func:`~harness.run.batch.plan.relabel`),
asks :func:`~harness.adapters.blackbox.fit.fit` whether the profile can run it,
groups the rest into :class:`~harness.run.batch.plan.Batch` es (one shared world,
the MTA started once per batch) and sends each world's message in turn. Unlike the
matrix it keeps the world's *full* records for each world (every transaction, reply
and mailbox, the sessions at that world's own ``sK.`` hosts only), so the child
judges each world with :func:`~harness.fuzz.invariants.check_run` exactly as for
our engine, and writes one :class:`~harness.fuzz.campaign.Judged` per world back
(a pickle). ``failure-explained`` is not judged: a real MTA's outcome *is* a log
line of its own wording (the adapter settles a recipient only from it). Where the
MTA's outcome line names no MX (chasquid), the adapter's MX is a guess, so only the
mailboxes are judged (delivered: in exactly one). Names in
the violations are moved back from ``sK.`` so they read as the generated world.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from harness.adapters.blackbox.adapter import BlackBoxEngine
from harness.adapters.blackbox.fit import fit
from harness.adapters.blackbox.profile import EngineProfile, load_profile
from harness.fuzz.campaign import Judged
from harness.fuzz.driver import FuzzRun
from harness.fuzz.invariants import Violation, check_run
from harness.netns import flush_conntrack, sweep_stale
from harness.run.batch.child import run_child, unavailable
from harness.run.batch.plan import plan, relabel
from harness.scenario.model import Scenario
from harness.world.world import World, shared_cert_factory

__all__ = ["NOT_JUDGED", "main", "run_worlds"]

#: Invariants a black-box engine is not judged on (see the module docstring).
NOT_JUDGED = frozenset({"failure-explained"})
_TIMEOUT_BASE, _TIMEOUT_PER_WORLD = 300.0, 30.0


def run_worlds(engine: str, docs: Sequence[dict[str, Any]]) -> list[Judged]:
    """Judge each world of ``docs`` against the black-box ``engine`` (one namespace).

    Raises:
        RuntimeError: the child failed or hung (its stderr's tail says).
    """
    reason = unavailable(engine)
    if reason:
        return [Judged(skipped=reason) for _ in docs]
    sweep_stale()
    with tempfile.TemporaryDirectory(prefix="fuzz-bb-") as tmp:
        paths = []
        for k, doc in enumerate(docs, start=1):
            d = dict(doc)
            d["scenario"] = {**dict(doc.get("scenario", {})), "id": f"fuzz-world-{k}"}
            path = Path(tmp) / f"w{k}.toml"
            path.write_text(tomli_w.dumps(d), encoding="utf-8")
            paths.append(str(path))
        out = Path(tmp) / "judged.pickle"
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"engine": engine, "paths": paths, "out": str(out)}))
        limit = _TIMEOUT_BASE + _TIMEOUT_PER_WORLD * len(docs)
        judged: list[Judged] = pickle.loads(
            run_child(engine, "harness.fuzz.blackbox", job, out, limit)
        )
        return judged


def _unlabel(v: Violation, k: int) -> Violation:
    """``v`` with the names of world ``k`` moved back from ``sK.``."""
    rx = re.compile(rf"(?<![A-Za-z0-9-])s{k}\.", re.IGNORECASE)
    return Violation(
        v.invariant,
        rx.sub("", v.detail),
        rx.sub("", v.host) if v.host else None,
        rx.sub("", v.rcpt) if v.rcpt else None,
    )


def _mine(host: str, k: int) -> bool:
    return f".s{k}." in f".{host.lower()}."


async def _one(s: Scenario, k: int, world: World, engine: BlackBoxEngine) -> FuzzRun:
    seen = len(engine.events())
    deliveries: list[Any] = []
    error = None
    try:
        for step in s.steps:
            a = step.args
            data = (
                f"From: <{a.mail_from}>\r\nTo: <{a.rcpts[0]}>\r\nSubject: {s.id}\r\n"
                f"Message-ID: <{s.id}@fuzz.invalid>\r\n\r\nA fuzzed world's message.\r\n"
            ).encode()
            deliveries += await engine.send(a.mail_from, a.rcpts, data)
        await world.settle()
    except Exception as exc:  # no outcome in the window, a refused submission ...
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return FuzzRun(
        scenario=s,
        # World k's hosts are its own (sK.): everything they saw is this world's.
        sessions=tuple(x for x in world.sessions() if _mine(x.mx_host, k)),
        messages=tuple(m for m in world.messages() if _mine(m.mx_host, k)),
        events=tuple(engine.events()[seen:]),
        deliveries=tuple(deliveries),
        error=error,
    )


async def _run(engine: str, paths: list[Path]) -> list[Judged]:
    profile = load_profile(engine)
    judged: dict[int, Judged] = {}
    runnable: list[tuple[int, Scenario]] = []
    for k, path in enumerate(paths, start=1):
        part = fit(
            relabel(path.read_text(encoding="utf-8"), k, path),
            profile.capabilities,
            profile.features,
            smtp_timeout=profile.smtp_timeout,
            fetch_timeout=profile.fetch_timeout,
        )
        if part.scenario is None or part.note:
            judged[k] = Judged(skipped=part.why or part.note)
        else:
            runnable.append((k, part.scenario))
    index = {s.id: k for k, s in runnable}
    for batch in plan([s for _, s in runnable], sender_matters="config" in profile.features):
        judged |= await _batch(profile, batch.world, batch.sender, batch.scenarios, index)
    return [judged[k] for k in sorted(judged)]


async def _batch(
    profile: EngineProfile,
    world_table: dict[str, Any],
    sender: dict[str, Any],
    scenarios: Sequence[Scenario],
    index: dict[str, int],
) -> dict[int, Judged]:
    flush_conntrack()  # a new world: no NAT mapping of the last one may outlive it
    out: dict[int, Judged] = {}
    engine = BlackBoxEngine(profile)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{profile.name}-") as tmp:
        try:
            async with World(
                world_table, now=engine.now, certs=shared_cert_factory(), source="<fuzz>"
            ) as w:
                try:
                    await engine.start(w, sender, Path(tmp))
                    names_mx = any(
                        r.code == "outcome" and "mx" in r.match.groupindex for r in profile.log
                    )
                    for s in scenarios:
                        k = index[s.id]
                        run = await _one(s, k, w, engine)
                        if not names_mx:  # the adapter's MX is a guess: judge the mailboxes
                            run = replace(
                                run, deliveries=tuple(replace(d, mx=None) for d in run.deliveries)
                            )
                        found = [_unlabel(v, k) for v in check_run(run)]
                        out[k] = Judged(tuple(v for v in found if v.invariant not in NOT_JUDGED))
                finally:
                    await engine.stop()
        except Exception as exc:
            why = f"the batch failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            for s in scenarios:
                out.setdefault(index[s.id], Judged(skipped=why))
    return out


async def _guarded(engine: str, paths: list[Path]) -> list[Judged]:
    # SIGTERM/SIGINT cancel the run, so every `finally` stops the MTA it started.
    task = asyncio.ensure_future(_run(engine, paths))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job file ``argv[0]`` (inside a namespace); 0 when the judgements were written."""
    args = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    judged = asyncio.run(_guarded(job["engine"], [Path(p) for p in job["paths"]]))
    Path(job["out"]).write_bytes(pickle.dumps(judged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
