"""World fuzzing: whole worlds drawn by hypothesis, invariants judged from the world.

The property runs under the hypothesis profile in force, at a fifth of its
``max_examples`` (each example is a whole world: ~0.1 s, seconds when it draws a
stall): ``dev`` 20 worlds, ``ci`` 40, ``fuzz`` 5,000; ``FUZZ_WORLDS=N`` overrides.
The engine is the ``--engine`` adapter (default ``inprocess``), or ``FUZZ_ENGINE``;
an adapter that does not exist (yet) skips the property with its name.

The suite must not flake and must not touch the checkout: outside the ``fuzz``
profile the worlds are derandomized (the same worlds on every run; ``FUZZ_SEED=N``
draws another fixed set) and hypothesis keeps no example database. A failure is
shrunk by hypothesis and the minimal world is written as a scenario file under the
test's ``tmp_path`` (``FUZZ_REGRESSIONS_DIR`` names another directory), and the
failure message gives its path. Exploring is ``sts-harness fuzz``'s job. The number
of worlds run is recorded as the test's ``worlds`` property and, with
``FUZZ_REPORT=FILE``, appended to that file.

Every file under ``scenarios/regressions/`` is also re-judged here by every invariant
(some invariants have no ``[expect]`` key), and the invariants themselves are pinned
by negative controls: hand-made observations that break each one.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, seed, settings
from hypothesis import strategies as st

from harness.adapters.base import AdapterError
from harness.adapters.registry import make_adapter
from harness.fuzz import (
    INVARIANTS,
    FuzzRun,
    Violation,
    check_run,
    destination_facts,
    fuzz_scenarios,
    load_document,
    pattern_permits,
    regression_document,
    run_document,
    run_scenario_records,
    write_regression,
)
from harness.scenario.loader import load_scenario
from harness.scenario.observation import DeliveryRecord, EventRecord
from harness.world.mta.records import (
    MtaSession,
    RcptResult,
    ReceivedMessage,
    SessionEnd,
    Transaction,
)

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = ROOT / "scenarios" / "regressions"
WORLDS = int(os.environ.get("FUZZ_WORLDS", 0)) or max(5, settings.default.max_examples // 5)
# Random worlds only when exploring on purpose; otherwise one fixed set (no flakes).
_EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
_SEED = os.environ.get("FUZZ_SEED")
_RUN = settings(
    max_examples=WORLDS,
    deadline=None,
    derandomize=not _EXPLORE and _SEED is None,
    database=None,  # nothing written under the checkout's .hypothesis/
    report_multiple_bugs=False,  # the last failing example is the shrunk one we write
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _classify(doc: dict[str, Any], run: FuzzRun) -> None:
    facts = destination_facts(run.scenario.world, run.scenario.sender, "example.com")
    statuses = sorted({d.status for d in run.deliveries})
    event(f"outcome: {'/'.join(statuses) or 'none'}")
    if facts is not None:
        event(f"tls: {facts.profile.tls}, dane: {facts.profile.dane}")
        event("policy: enforce in force" if facts.enforce else "policy: no enforce")
        event("a clean path exists" if facts.clean_host() else "no clean path")
        for h in facts.hosts.values():
            event(f"host DANE: {h.dane}")


def _engine(request: pytest.FixtureRequest) -> str:
    """The adapter the worlds run against: ``FUZZ_ENGINE``, else ``--engine``."""
    name = os.environ.get("FUZZ_ENGINE") or request.config.getoption("engine") or "inprocess"
    try:
        make_adapter(name)
    except AdapterError as exc:
        pytest.skip(str(exc))
    return name


# pytest-timeout's 300 s ceiling is for hangs; a fuzz-profile run is long by design.
@pytest.mark.timeout(max(300, 2 * WORLDS))
def test_world_invariants_hold_in_random_worlds(
    record_property: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    engine = _engine(request)
    ran: list[int] = [0]
    failing: list[tuple[dict[str, Any], list[Violation]]] = []

    @_RUN
    @given(fuzz_scenarios())
    def prop(doc: dict[str, Any]) -> None:
        run = asyncio.run(run_document(doc, engine))
        ran[0] += 1
        _classify(doc, run)
        found = check_run(run)
        if found:
            note("\n".join(e.line for e in run.events if e.line))
            failing[:] = [(doc, found)]
            raise AssertionError("\n".join(str(v) for v in found))

    if _SEED is not None:
        prop = seed(int(_SEED))(prop)
    try:
        prop()
    except AssertionError:
        doc, found = failing[-1]
        findings = Path(os.environ.get("FUZZ_REGRESSIONS_DIR") or tmp_path)
        path = write_regression(doc, found, findings)
        raise AssertionError(f"invariant broken; the shrunk world is {path}") from None
    finally:
        record_property("worlds", ran[0])
        if report := os.environ.get("FUZZ_REPORT"):
            with open(report, "a", encoding="utf-8") as f:
                f.write(f"worlds {ran[0]}\n")


@settings(
    max_examples=max(50, settings.default.max_examples),
    deadline=None,
    derandomize=not _EXPLORE,
    database=None,
)
@given(fuzz_scenarios())
def test_every_drawn_world_is_a_valid_scenario_file(doc: dict[str, Any]) -> None:
    scenario = load_document(doc)
    assert destination_facts(scenario.world, scenario.sender, "example.com") is not None


_FILES = sorted(REGRESSIONS.glob("*.toml")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("path", _FILES, ids=[p.stem for p in _FILES])
async def test_regression_files_keep_every_invariant(
    path: Path, request: pytest.FixtureRequest
) -> None:
    run = await run_scenario_records(load_scenario(path), _engine(request))
    assert check_run(run) == []


# --- negative controls: each invariant fires on a world that breaks it ---------------

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"
RCPT = "rcpt@example.com"


def _doc(entry: dict[str, Any], hosts: dict[str, Any] | None = None) -> dict[str, Any]:
    domain = {
        "mx": ["10 mx1.example.com", "20 mx2.example.com"],
        "mta_sts_txt": ["v=STSv1; id=N1"],
        "policy": ENFORCE,
    }
    return {
        "scenario": {"id": "control", "topic": "fuzz"},
        "world": {"domains": {"example.com": domain}, "hosts": hosts or {}},
        "sender": {"destination_controls": {"example.com": entry}},
        "steps": [{"send": {"from": "a@sender.example", "to": [RCPT]}}],
    }


def _session(
    mx: str, *, tls: bool = True, accepted: bool = True, faults: tuple[str, ...] = ()
) -> MtaSession:
    t = Transaction(
        "a@sender.example",
        "250 ok",
        (RcptResult(RCPT, "250 ok"),),
        "250 queued" if accepted else "451 later",
        b"x" if accepted else None,
        tls,
    )
    return MtaSession(
        1,
        mx,
        ("127.0.0.1", 1),
        "EHLO",
        "x",
        True,
        tls,
        tls,
        "TLSv1.3" if tls else None,
        None,
        mx if tls else None,
        mx,
        None,
        (t,),
        not tls,
        ("EHLO", "MAIL"),
        SessionEnd.QUIT,
        (),
        faults,
    )


def _run(
    doc: dict[str, Any], sessions: list[MtaSession], status: str, mx: str | None, lines: int = 0
) -> FuzzRun:
    messages = [
        ReceivedMessage(1, s.mx_host, "a@sender.example", (RCPT,), b"x", s.tls_version)
        for s in sessions
        if s.transactions and s.transactions[0].delivered
    ]
    events = tuple(
        EventRecord("delivery.delayed", {"rcpt": RCPT, "reason": "why"}, "info", 0, 0, "Delayed")
        for _ in range(lines)
    )
    return FuzzRun(
        load_document(doc),
        tuple(sessions),
        tuple(messages),
        events,
        (DeliveryRecord(1, RCPT, status, mx),),
    )


def _invariants(run: FuzzRun) -> set[str]:
    return {v.invariant for v in check_run(run)}


def test_control_mail_at_an_unpermitted_mx_under_enforce() -> None:
    doc = _doc({"tls": "preferred", "mta_sts": True})
    run = _run(doc, [_session("mx2.example.com")], "delivered", "mx2.example.com")
    assert _invariants(run) == {"sts-enforce-mx"}


def test_control_mail_in_clear_under_enforce_and_required() -> None:
    doc = _doc({"tls": "required", "mta_sts": True})
    run = _run(doc, [_session("mx1.example.com", tls=False)], "delivered", "mx1.example.com")
    assert _invariants(run) == {"sts-enforce-tls", "tls-setting"}


def test_control_unverified_certificate_under_enforce() -> None:
    doc = _doc({"tls": "preferred", "mta_sts": True}, {"mx1.example.com": {"cert": "expired"}})
    run = _run(doc, [_session("mx1.example.com")], "delivered", "mx1.example.com")
    assert _invariants(run) == {"sts-enforce-tls"}


def test_control_dane_usable_but_the_certificate_matches_nothing() -> None:
    doc = _doc(
        {"tls": "preferred", "dane": "opportunistic"},
        {"mx1.example.com": {"tlsa_raw": ["3 1 1 " + "00" * 32]}},
    )
    doc["world"]["domains"]["example.com"]["dnssec"] = "secure"
    run = _run(doc, [_session("mx1.example.com")], "delivered", "mx1.example.com")
    assert _invariants(run) == {"dane-usable"}


def test_control_sni_is_owed_to_usable_dane_only_when_the_sender_applies_dane() -> None:
    doc = _doc(
        {"tls": "preferred", "dane": "none", "mta_sts": False},
        {"mx1.example.com": {"tlsa": [[3, 1, 1]]}},
    )
    doc["world"]["domains"]["example.com"]["dnssec"] = "secure"
    no_sni = replace(_session("mx1.example.com"), sni=None)
    assert _invariants(_run(doc, [no_sni], "delivered", "mx1.example.com")) == set()
    # Control: with DANE on, the same session breaks dane-usable.
    doc["sender"]["destination_controls"]["example.com"]["dane"] = "opportunistic"
    assert _invariants(_run(doc, [no_sni], "delivered", "mx1.example.com")) == {"dane-usable"}


def test_control_lost_and_duplicated_messages() -> None:
    doc = _doc({"tls": "preferred"})
    assert "no-message-lost" in _invariants(_run(doc, [], "delivered", "mx1.example.com"))
    held = _run(doc, [_session("mx1.example.com")], "deferred", None, lines=1)
    assert "no-message-lost" in _invariants(held)
    bounced = _run(doc, [], "bounced", None)
    assert "no-message-lost" in _invariants(bounced)
    # An engine that does not say where it delivered (mx None) is judged by the mailboxes.
    assert _invariants(_run(doc, [_session("mx1.example.com")], "delivered", None)) == set()
    assert "no-message-lost" in _invariants(_run(doc, [], "delivered", None))


def test_control_failures_need_exactly_one_line() -> None:
    doc = _doc(
        {"tls": "preferred"},
        {
            "mx1.example.com": {"replies": {"data": "451 later"}},
            "mx2.example.com": {"replies": {"data": "451 later"}},
        },
    )
    for lines in (0, 2):
        run = _run(doc, [_session("mx1.example.com", accepted=False)], "deferred", None, lines)
        assert _invariants(run) == {"failure-explained"}
    ok = _run(doc, [_session("mx1.example.com", accepted=False)], "deferred", None, lines=1)
    assert _invariants(ok) == set()


def test_control_a_healthy_mx_must_be_reached_past_a_transport_fault() -> None:
    doc = _doc({"tls": "preferred", "mta_sts": True}, {"mx1.example.com": {"replies": {}}})
    domain = doc["world"]["domains"]["example.com"]
    domain["policy"] = ENFORCE.replace(
        "mx: mx1.example.com", "mx: mx1.example.com\nmx: mx2.example.com"
    )
    doc["world"]["hosts"]["mx1.example.com"]["replies"] = {"mail": "reset"}
    reset = _session("mx1.example.com", accepted=False, faults=("mail: reset",))
    run = _run(doc, [reset], "deferred", None, lines=1)
    assert _invariants(run) == {"healthy-mx-reached"}
    # Control: a permanent refusal of the recipient may end the attempt (it bounces).
    doc["world"]["hosts"]["mx1.example.com"]["replies"] = {"rcpt": "550 5.1.1 no such user"}
    refused = _session("mx1.example.com", accepted=False, faults=("rcpt: 550 5.1.1 no",))
    no_such_user = (RcptResult(RCPT, "550 5.1.1 no such user"),)
    txn = replace(refused.transactions[0], rcpts=no_such_user, data_reply=None)
    bounced = replace(
        _run(doc, [replace(refused, transactions=(txn,))], "bounced", None),
        events=(
            EventRecord("delivery.bounced", {"rcpt": RCPT, "reason": "no"}, "info", 0, 0, "B"),
        ),
    )
    assert _invariants(bounced) == set()


def _bounced(doc: dict[str, Any], sessions: list[MtaSession]) -> FuzzRun:
    line = EventRecord("delivery.bounced", {"rcpt": RCPT, "reason": "no"}, "info", 0, 0, "B")
    return replace(_run(doc, sessions, "bounced", None), events=(line,))


def test_control_a_5yz_to_mail_explains_a_bounce_of_every_recipient() -> None:
    # The world of fuzz-no-message-lost-82795713b7: mx1 says 421 at the greeting, mx2
    # refuses MAIL FROM with a 5yz, so no RCPT is ever sent; the bounce is explained.
    doc = _doc(
        {"tls": "no", "mta_sts": False},
        {"mx1.example.com": {"replies": {"banner": "421 4.3.2 too busy"}}},
    )
    doc["world"]["hosts"]["mx2.example.com"] = {"replies": {"mail": "550 5.7.1 no"}}
    busy = replace(_session("mx1.example.com", tls=False), transactions=(), faults=("banner: 421",))
    refused = _session("mx2.example.com", tls=False, faults=("mail: 550 5.7.1 no",))
    txn = replace(refused.transactions[0], mail_reply="550 5.7.1 no", rcpts=(), data_reply=None)
    refused = replace(refused, transactions=(txn,))
    assert _invariants(_bounced(doc, [busy, refused])) == set()
    # Controls: the same refusal at an MX of another domain explains nothing here, nor
    # does a 5yz greeting (the next MX can still be tried).
    elsewhere = replace(refused, mx_host="mx9.example.net")
    assert _invariants(_bounced(doc, [busy, elsewhere])) == {"no-message-lost"}
    doc["world"]["hosts"]["mx2.example.com"] = {"replies": {"banner": "554 5.3.2 no"}}
    greeting = replace(refused, transactions=(), faults=("banner: 554 5.3.2 no",))
    assert _invariants(_bounced(doc, [busy, greeting])) == {"no-message-lost"}


def test_control_a_clean_path_must_deliver() -> None:
    run = _run(_doc({"tls": "preferred", "mta_sts": True}), [], "deferred", None, lines=1)
    assert _invariants(run) == {"clean-path-delivers"}


@pytest.mark.parametrize(
    ("patterns", "host", "permitted"),
    [
        (("mx1.example.com",), "MX1.Example.COM.", True),  # MX-2
        (("*.example.com",), "mx1.example.com", True),  # MX-3
        (("*.example.com",), "a.mx1.example.com", False),  # one label only
        (("*.example.com",), "example.com", False),
        (("example.com",), "mx1.example.com", False),  # MX-4: no suffix match
    ],
)
def test_pattern_permits(patterns: tuple[str, ...], host: str, permitted: bool) -> None:
    assert pattern_permits(patterns, host) is permitted


@given(st.sampled_from(sorted(INVARIANTS)))
def test_regression_file_names_the_invariant_and_real_requirements(name: str) -> None:
    known = tomllib.loads((ROOT / "fixtures" / "requirements.toml").read_text())
    ids = set(known["requirements"]) | set(known["seed"])
    violation = Violation(
        name, "MAIL FROM in clear (session 1 at mx1.example.com)", "mx1.example.com", RCPT
    )
    doc = regression_document(_doc({"tls": "preferred"}), [violation])
    assert set(doc["scenario"]["covers"]) <= ids
    assert doc["scenario"]["id"].startswith(f"fuzz-{name}-")


def test_write_regression_is_a_loadable_scenario_with_its_comment(tmp_path: Path) -> None:
    doc = _doc({"tls": "required", "mta_sts": True}, {"mx1.example.com": {"cert": "expired"}})
    found = [
        Violation(
            "sts-enforce-tls",
            "MAIL FROM over certificate 'x', which does not verify for mx1.example.com (session 1)",
            "mx1.example.com",
        )
    ]
    path = write_regression(doc, found, tmp_path)
    assert write_regression(doc, found, tmp_path) == path  # the same world, the same file
    text = path.read_text()
    assert text.startswith("# Written by harness.fuzz") and "sts-enforce-tls" in text
    scenario = load_scenario(path)
    assert scenario.topic == "regressions"
    assert scenario.steps[0].expect.no_transaction == ("mx1.example.com",)
