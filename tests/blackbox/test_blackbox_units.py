"""Black-box pieces that need no root: profiles, templates, DNAT rules, relabels, batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.adapters.blackbox.adapter import settle_except
from harness.adapters.blackbox.drivers import driver_for
from harness.adapters.blackbox.fit import fit, needs
from harness.adapters.blackbox.profile import (
    ProfileError,
    load_profile,
    profile_names,
    render,
)
from harness.netns import RESOLV_CONF, sweep_stale
from harness.run.batch.plan import plan, relabel, world_view
from harness.run.batch.runner import _own, _owners
from harness.scenario.loader import loads_scenario
from harness.scenario.model import Capability
from harness.scenario.observation import (
    DnsRecord,
    DsnRecord,
    FetchRecord,
    SessionRecord,
    TimelineEntry,
    WorldSlice,
)
from harness.world.ports import TABLE, ruleset

SCENARIOS = Path(__file__).parent / "scenarios"


def test_every_shipped_profile_loads():
    names = profile_names()
    assert {"postfix-sts", "postfix-dane", "chasquid"} <= set(names)
    # Our gateway is the rootless `sts-engine` adapter (harness.adapters.process).
    assert "sts-engine" not in names
    for name in names:
        profile = load_profile(name)
        assert profile.mta.argv and profile.mta.ready
        assert Capability.CLOCK not in profile.capabilities  # no black box has our clock


def test_render_fills_placeholders_and_refuses_unknown_ones():
    assert render("port {{p}} $myhostname {x}", {"p": "25"}) == "port 25 $myhostname {x}"
    with pytest.raises(ProfileError, match="unknown placeholder"):
        render("{{nope}}", {"p": "25"})


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ProfileError, match="postfix-sts"):
        load_profile("no-such-mta")


def test_ruleset_maps_service_ports_and_the_dns_stub():
    script = ruleset({("127.10.1.1", 25): ("127.10.1.1", 40001)}, ("127.10.1.53", 40053))
    assert f"delete table ip {TABLE}" in script
    assert "ip daddr 127.10.1.1 tcp dport 25 dnat to 127.10.1.1:40001" in script
    assert "ip daddr 127.0.0.53 udp dport 53 dnat to 127.10.1.53:40053" in script
    assert "ip daddr 127.10.1.53 tcp dport 53 dnat to 127.10.1.53:40053" in script


def test_resolv_conf_trusts_ad_and_names_the_stub():
    assert "nameserver 127.0.0.53" in RESOLV_CONF
    assert "trust-ad" in RESOLV_CONF


def test_relabel_moves_every_name_including_escaped_ones():
    path = SCENARIOS / "bb-sts-mx-case.toml"
    s = relabel(path.read_text(encoding="utf-8"), 7, path)
    assert set(s.world.domains) == {"s7.example.com"}
    assert "MX1.s7.Example.COM" in (s.world.domains["s7.example.com"].policy or "")
    assert s.steps[0].args.rcpts == ("rcpt@s7.example.com",)
    assert s.steps[0].expect.via == "mx1.s7.example.com"


def test_relabel_moves_a_recipient_written_in_u_labels_with_its_a_label_world():
    path = Path("scenarios/discovery/disc-2-idn-recipient.toml")
    if not path.exists():
        pytest.skip("the catalog is not in this checkout")
    s = relabel(path.read_text(encoding="utf-8"), 5, path)
    assert set(s.world.domains) == {"s5.xn--bcher-kva.example"}
    assert s.steps[0].args.rcpts == ("rcpt@s5.bücher.example",)
    assert dict(s.steps[0].expect.fetches) == {"mta-sts.s5.xn--bcher-kva.example": 1}


def test_relabel_rewrites_regexes_in_expectations():
    path = Path("scenarios/examples/sts-enforce-mx1-bad.toml")
    if not path.exists():
        pytest.skip("the examples are not in this checkout")
    s = relabel(path.read_text(encoding="utf-8"), 3, path)
    san = next(e for e in s.steps[0].expect.events if e.code == "tls.success").fields["san"]
    assert san == "~mx2\\.s3\\.example\\.com"


def test_world_view_drops_engine_internal_expectations_and_says_so():
    path = Path("scenarios/examples/sts-enforce-mx1-bad.toml")
    if not path.exists():
        pytest.skip("the examples are not in this checkout")
    s = relabel(path.read_text(encoding="utf-8"), 1, path)
    kept, dropped = world_view(s, frozenset({Capability.REPORT}))
    assert "steps[0].events" in dropped
    assert kept.steps[0].expect.events == ()
    assert kept.steps[0].expect.via == "mx2.s1.example.com"


def test_needs_names_the_missing_feature():
    path = SCENARIOS / "bb-dane-ee.toml"
    s = relabel(path.read_text(encoding="utf-8"), 1, path)
    assert "dane" in needs(s, frozenset({Capability.REPORT}), frozenset({"sts"}))
    assert needs(s, frozenset({Capability.REPORT}), frozenset({"dane"})) == ""


def test_plan_batches_compatible_scenarios_into_one_world():
    files = sorted(SCENARIOS.glob("bb-sts-*.toml"))
    scenarios = [relabel(p.read_text(encoding="utf-8"), k, p) for k, p in enumerate(files, 1)]
    batches = plan(scenarios, sender_matters=False)
    assert len(batches) == 1
    assert len(batches[0].world["domains"]) == len(files)


def test_plan_keeps_conflicting_senders_apart():
    files = sorted(SCENARIOS.glob("bb-*.toml"))[:2]
    scenarios = [relabel(p.read_text(encoding="utf-8"), 1, p) for p in files]  # same labels
    assert len(plan(scenarios, sender_matters=True)) == 2


def test_postfix_log_lines_become_outcomes():
    driver = driver_for(load_profile("postfix-sts"))
    line = (
        "Nov 28 12:21:11 sender postfix/smtp[9856]: ED42920CB1D: to=<Rcpt@big.example>, "
        "relay=mx1.big.example[127.10.0.5]:25, delay=0.09, delays=0.01/0.02/0.06/0, "
        "dsn=2.0.0, status=sent (250 2.0.0 OK: queued)"
    )
    [event] = driver.parse("stdout", line)
    assert event.code == "outcome"
    assert event.fields["status"] == "delivered"
    assert event.fields["rcpt"] == "rcpt@big.example"
    assert event.fields["mx"] == "mx1.big.example"
    assert driver.settle("ED42920CB1D", ["rcpt@big.example"], [event]) == {
        "rcpt@big.example": event.fields
    }


def test_sweep_stale_leaves_live_and_foreign_namespaces_alone():
    import os

    assert sweep_stale([f"sts-{os.getpid()}-abcdef", "someone-elses"]) == []


# -- what of a scenario a fixed profile runs (harness.adapters.blackbox.fit) -----------

TRANSPORT = Path("scenarios/transport/rcpt-4xx.toml")
STS, DANE = frozenset({"sts"}), frozenset({"dane"})
REPORT = frozenset({Capability.REPORT})


def _transport(k: int = 4):
    if not TRANSPORT.exists():
        pytest.skip("the catalog is not in this checkout")
    return relabel(TRANSPORT.read_text(encoding="utf-8"), k, TRANSPORT)


def test_fit_runs_the_sends_an_sts_profile_serves_and_names_the_dane_one_left_out():
    s = _transport()
    part = fit(s, REPORT, STS)
    assert part.scenario is not None, part.why
    assert [st.index for st in part.scenario.steps] == [0, 1, 2, 4]
    assert part.note.startswith("partial: ran step 0, 1, 2, 4 of 5")
    assert "step 3: needs config, dane (the profile has sts)" in part.note
    assert needs(s, REPORT, STS) == ""


def test_fit_runs_only_the_dane_send_on_a_dane_profile():
    part = fit(_transport(), REPORT, DANE)
    assert part.scenario is not None, part.why
    [step] = part.scenario.steps
    assert step.args.rcpts == ("rcpt@s4.dane.example",)
    assert "step 0, 1, 2, 4: needs sts (the profile has dane)" in part.note


_MIXED = """
[scenario]
id = "mixed"
topic = "apply"
[world.domains."a.example"]
mx = ["10 mx.a.example"]
[world.domains."b.example"]
mx = ["10 mx.b.example"]
[sender.destination_controls.default]
tls = "required"
[sender.destination_controls."a.example"]
tls = "preferred"
[[steps]]
send = { from = "x@sender.example", to = ["r@a.example"] }
[[steps]]
send = { from = "x@sender.example", to = ["r@b.example"] }
"""


def test_fit_resolves_each_destination_like_the_engine_own_entry_over_default():
    s = loads_scenario(_MIXED, "mixed.toml")
    part = fit(s, REPORT, STS)
    assert part.scenario is not None
    assert [st.args.rcpts for st in part.scenario.steps] == [("r@a.example",)]
    assert "step 1: needs config (the profile has sts)" in part.note


def test_fit_skips_the_whole_file_when_its_steps_depend_on_each_other():
    text = _MIXED + '[[steps]]\nupdate_domain = { domain = "a.example", mta_sts_txt = [] }\n'
    part = fit(loads_scenario(text, "mixed.toml"), REPORT, STS)
    assert part.scenario is None
    assert part.why == "needs config (the profile has sts)"


def test_fit_skips_the_whole_file_when_no_send_can_run():
    text = _MIXED.replace('tls = "preferred"', 'tls = "required"')
    part = fit(loads_scenario(text, "mixed.toml"), REPORT, STS)
    assert (part.scenario, part.why) == (None, "needs config (the profile has sts)")


# -- a batch's shared world, judged per scenario (harness.run.batch.runner) -------


def _session(mx: str) -> SessionRecord:
    return SessionRecord(0.0, 1.0, mx, True, True, "TLSv1.3", None, mx, None, 1, 1, False, (), "")


def test_a_late_delivery_of_another_scenario_is_not_judged_in_this_one():
    files = sorted(SCENARIOS.glob("bb-sts-*.toml"))[:2]
    a, b = (relabel(p.read_text(encoding="utf-8"), k, p) for p, k in ((files[0], 1), (files[1], 2)))
    owners = _owners([a, b])
    assert owners["s1.example.com"] == a.id and owners["s2.example.com"] == b.id
    seen = WorldSlice(
        dns=(DnsRecord(0.0, "mx2.s1.example.com.", "A", None, False, (), None),),
        fetches=(FetchRecord(0.0, "mta-sts.s2.example.com", None, "GET", "/", "200"),),
        sessions=(_session("mx2.s1.example.com"), _session("mx1.s2.example.com")),
        timeline=(TimelineEntry(0.0, None, "proxy", "mta-sts.s1.example.com:443", ""),),
        dsns=(DsnRecord(0.0, "mx.s1.example.com", "", ("x@s1.example.com",), ()),),
    )
    mine = _own(seen, b.id, owners)
    assert [s.mx for s in mine.sessions] == ["mx1.s2.example.com"]
    assert mine.dns == () and mine.timeline == () and mine.dsns == ()
    assert [f.host for f in mine.fetches] == ["mta-sts.s2.example.com"]
    # What belongs to no scenario (the MTA's own look-ups) stays; a lone scenario sees all.
    own_lookup = WorldSlice(
        dns=(DnsRecord(0.0, "sender.harness.test", "A", None, False, (), None),)
    )
    assert _own(own_lookup, b.id, owners) == own_lookup
    assert _own(seen, a.id, _owners([a])) == seen


class _Mta:
    def __init__(self, live: int) -> None:
        self.live_sessions = live
        self.settled = False

    async def settle(self, timeout: float = 5.0) -> None:
        if self.live_sessions:
            raise TimeoutError  # as ReceivingMta.settle with a session that never ends
        self.settled = True


async def test_a_message_waits_for_its_own_mx_hosts_not_for_one_left_stalled_before():
    stalled, idle = _Mta(live=1), _Mta(live=0)
    mtas = {"mx1.s1.example": stalled, "mx2.s2.example": idle}
    busy = {h for h, m in mtas.items() if m.live_sessions}
    await settle_except(mtas, busy)  # before the fix: world.settle(), a TimeoutError
    assert idle.settled and not stalled.settled
    with pytest.raises(TimeoutError):
        await settle_except(mtas, set())


def test_fit_skips_a_stalling_world_for_an_engine_whose_timeouts_outlast_the_window():
    path = Path("scenarios/transport/ehlo-stall.toml")
    if not path.exists():
        pytest.skip("the catalog is not in this checkout")
    s = relabel(path.read_text(encoding="utf-8"), 2, path)
    slow = fit(s, REPORT, STS, smtp_timeout=600)
    assert slow.scenario is None
    assert slow.why.startswith("world: an MX stalls, and the engine waits 600 s for a reply")
    assert fit(s, REPORT, STS, smtp_timeout=3).scenario is not None
    healthy = _transport()
    assert fit(healthy, REPORT, STS, smtp_timeout=600).scenario is not None


def test_fit_skips_a_hanging_policy_fetch_for_an_engine_that_waits_a_minute():
    path = Path("scenarios/fetch/fetch-13-timeout.toml")
    if not path.exists():
        pytest.skip("the catalog is not in this checkout")
    s = relabel(path.read_text(encoding="utf-8"), 2, path)
    assert "a policy fetch hangs" in fit(s, REPORT, STS, fetch_timeout=60).why
    assert fit(s, REPORT, STS, fetch_timeout=4).why == ""


def test_fit_leaves_a_policy_fetch_proxy_to_engines_configured_like_ours():
    path = Path("scenarios/fetch/fetch-via-proxy-hangs.toml")
    if not path.exists():
        pytest.skip("the catalog is not in this checkout")
    s = relabel(path.read_text(encoding="utf-8"), 2, path)
    assert fit(s, REPORT, STS).why == "needs config (the profile has sts)"
    assert fit(s, REPORT, STS | {"config"}).why == ""


def test_profile_timeouts_are_checked(tmp_path):
    good = load_profile("chasquid").path.read_text(encoding="utf-8")
    assert load_profile("chasquid").smtp_timeout == 600
    bad = tmp_path / "bad.toml"
    bad.write_text(good.replace("smtp_timeout = 600", 'smtp_timeout = "long"'), encoding="utf-8")
    with pytest.raises(
        ProfileError, match=r"engine\.smtp_timeout: invalid value; expected seconds"
    ):
        load_profile(bad)
