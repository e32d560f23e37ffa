"""``sts-harness fuzz``: finds a planted violation, writes a file ``run`` fails on,
validates its options in one line, and (root + Postfix) fuzzes a real MTA in batches."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.adapters.inprocess import InProcessEngine
from harness.adapters.registry import ADAPTERS, register_adapter
from harness.cli import main
from harness.fuzz.campaign import digest, draw_worlds
from harness.world.world import World

MUTANT = "fuzz-test-ignores-mta-sts"


class _IgnoresMtaSts(InProcessEngine):
    """A broken sender: MTA-STS switched off whatever the Destination Controls say."""

    async def start(self, world: World, sender: Mapping[str, Any], workdir: Path) -> None:
        off = copy.deepcopy(dict(sender))
        for entry in off.get("destination_controls", {}).values():
            entry["mta_sts"] = False
        await super().start(world, off, workdir)


@pytest.fixture
def mutant() -> Iterator[str]:
    register_adapter(MUTANT, _IgnoresMtaSts)
    yield MUTANT
    ADAPTERS.pop(MUTANT, None)


def test_draw_worlds_is_deterministic_by_seed() -> None:
    a, b, c = draw_worlds(8, 3), draw_worlds(8, 3), draw_worlds(8, 4)
    assert [digest(d) for d in a] == [digest(d) for d in b]
    assert [digest(d) for d in a] != [digest(d) for d in c]


def test_draw_worlds_with_fixed_controls_and_no_waits() -> None:
    controls = {"tls": "preferred", "mta_sts": True, "dane": "none"}
    for doc in draw_worlds(40, 1, controls, waits=False):
        assert doc["sender"]["destination_controls"]["example.com"] == controls
        for host in doc["world"]["hosts"].values():
            assert host.get("starttls") != "broken-stall"
            assert "stall" not in host.get("replies", {}).values()


def test_fuzz_finds_a_planted_violation_and_run_fails_on_the_file(
    mutant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = tmp_path / "findings"
    argv = ["fuzz", "--engine", mutant, "--worlds", "80", "--seed", "4", "-q"]
    status = main([*argv, "--findings", str(findings), "--shrink-time", "15"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "distinct findings" in out and "worlds/s" in out
    files = sorted(findings.glob("fuzz-sts-enforce-*.toml"))
    assert files, out
    # Every violating world is listed, not only the first of each invariant.
    log = (findings / "violations.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in log]
    assert len(logged) >= len(files)
    assert {e["invariant"] for e in logged} >= {"sts-enforce-tls"}
    assert all(e["label"] == "" and e["details"] for e in logged)
    assert f"{len(logged)} violations no known divergence explains" in " ".join(out.split())
    # The file is an ordinary scenario: the broken sender fails it in one run ...
    assert main(["run", "--engine", mutant, "-q", str(files[0])]) == 1
    # ... and our engine, which keeps the invariant, passes it.
    capsys.readouterr()
    assert main(["run", "--engine", "inprocess", "-q", str(files[0])]) == 0, capsys.readouterr()


def test_fuzz_on_our_engine_finds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--worlds", "10", "--seed", "5", "-q"]) == 0
    out = capsys.readouterr().out
    assert "10 worlds run (0 skipped, 10 drawn)" in out and "0 distinct findings" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worlds", "0"], "--worlds must be more than 0, got '0'"),
        (["--worlds", "many"], "--worlds must be a number, got 'many'"),
        (["--seed", "-1"], "--seed must be 0 or more, got '-1'"),
        (["--time-budget", "0"], "--time-budget must be more than 0, got '0'"),
        (["--engine", "no-such-mta"], "no-such-mta"),
    ],
)
def test_options_are_validated_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fuzz", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_findings_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "f"
    file.write_text("")
    assert main(["fuzz", "--worlds", "1", "--findings", str(file)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"sts-harness fuzz: --findings {file}: not a directory"
    )


def test_a_real_mta_runs_many_worlds_in_one_batch() -> None:
    from harness.fuzz.blackbox import run_worlds
    from harness.run.batch.child import unavailable

    reason = unavailable("postfix-sts")
    if reason:
        pytest.skip(f"postfix-sts cannot run here: {reason}")
    controls = {"tls": "preferred", "mta_sts": True, "dane": "none"}
    docs = draw_worlds(6, 11, controls, waits=False)
    judged = run_worlds("postfix-sts", docs)
    assert len(judged) == len(docs)
    ran = [j for j in judged if not j.skipped]
    assert ran, [j.skipped for j in judged]


ENFORCE_MX1 = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"


def _lenient_world(txt: str) -> dict[str, Any]:
    return {
        "scenario": {"id": "w", "topic": "fuzz"},
        "world": {
            "domains": {
                "example.com": {
                    "mx": ["0 mx1.example.com", "0 mx2.example.com"],
                    "mta_sts_txt": [txt],
                    "policy": ENFORCE_MX1,
                }
            },
            "hosts": {"mx1.example.com": {"replies": {"data": "reset"}}, "mx2.example.com": {}},
        },
        "sender": {"destination_controls": {"example.com": {"tls": "preferred", "mta_sts": True}}},
        "steps": [{"send": {"from": "a@sender.example", "to": ["rcpt@example.com"]}}],
    }


def test_known_divergences_are_labelled_only_where_they_apply() -> None:
    from harness.fuzz.invariants import Violation
    from harness.fuzz.known import label

    # chasquid fuzzed world: an empty TXT id (no policy by the RFC), yet mx2 refused.
    v = Violation("healthy-mx-reached", "rcpt@example.com deferred ...", "mx2.example.com")
    assert "DISC-6" in label("chasquid", v, _lenient_world("v=STSv1; id="))
    # Control: with a valid record the policy is in force, so nothing is explained ...
    assert label("chasquid", v, _lenient_world("v=STSv1; id=F1")) == ""
    # ... and the label is chasquid's, not every engine's.
    assert label("inprocess", v, _lenient_world("v=STSv1; id=")) == ""


def test_postfix_s_session_limit_explains_a_healthy_mx_it_never_reached() -> None:
    from harness.fuzz.invariants import Violation
    from harness.fuzz.known import label

    # postfix-dane fuzzed world: mx1 and mx2 failed at MAIL, mx3 was healthy but third;
    # Postfix stops after smtp_mx_session_limit (2) sessions.
    world = _lenient_world("v=STSv1; id=F1")

    def healthy_missed(met: str) -> Violation:
        detail = (
            "rcpt@example.com deferred in an attempt where mx3.example.com was healthy and "
            f"permitted ('conversation with mx2.example.com timed out'; faults met: {met})"
        )
        return Violation("healthy-mx-reached", detail, "mx3.example.com")

    two = healthy_missed("mx1.example.com mail: malformed; mx2.example.com mail: malformed")
    assert "smtp_mx_session_limit" in label("postfix-dane", two, world)
    assert "smtp_mx_session_limit" in label("postfix-sts", two, world)
    # Controls: one failed session leaves Postfix a second, so nothing is explained;
    # and the limit is Postfix's, not our engine's.
    one = healthy_missed("mx1.example.com mail: malformed")
    assert label("postfix-dane", one, world) == ""
    assert label("inprocess", two, world) == ""


def test_exim_s_bounce_at_the_last_mx_s_refused_greeting_is_labelled() -> None:
    from harness.fuzz.invariants import Violation
    from harness.fuzz.known import label

    world = _lenient_world("v=STSv1; id=F1")

    def bounced(reason: str) -> Violation:
        detail = f"rcpt@example.com bounced, but no MX sent a 5yz for it (reason: {reason!r})"
        return Violation("no-message-lost", detail, rcpt="rcpt@example.com")

    exim = "R=dnslookup T=remote_smtp H=mx1.example.com [127.10.0.1]:25: SMTP error from "
    greeting = bounced(exim + "remote mail server after initial connection: 554 5.3.2 no")
    helo = bounced(exim + "remote mail server after HELO sender: 554 5.7.1 Access denied")
    assert "AMB-36" in label("exim-dane", greeting, world)
    assert "AMB-36" in label("exim-dane", helo, world)
    # Controls: a bounce after RCPT is not this divergence, and the label is Exim's.
    rcpt = bounced(exim + "remote mail server after RCPT TO:<rcpt@example.com>: 450 busy")
    assert label("exim-dane", rcpt, world) == ""
    assert label("inprocess", greeting, world) == ""
