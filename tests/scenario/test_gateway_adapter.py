"""The gateway adapter, the TLS-RPT/DSN expectation keys and the adapter-selection rule."""

from __future__ import annotations

import pytest

from harness.adapters import ADAPTERS, GatewayEngine, InProcessEngine, register_adapter
from harness.errors import SpecError
from harness.run.result import ScenarioVerdict
from harness.run.single import run_scenario, select_engine
from harness.scenario import Capability, loads_scenario
from harness.scenario.needs import required_capabilities

W_RPT = """
[scenario]
id = "rpt-test"
requires = ["tlsrpt"]
[world.domains."example.com"]
mx = ["10 mx1.example.com"]
mta_sts_txt = ["v=STSv1; id=A1"]
policy = "version: STSv1\\nmode: enforce\\nmx: mx1.example.com\\nmax_age: 86400\\n"
tlsrpt_txt = ["v=TLSRPTv1; rua=https://c.rpt.example/r,mailto:r@rpt.example"]
[world.domains."rpt.example"]
mx = ["10 mx.rpt.example"]
[world.domains."sender.example"]
mx = ["10 mx.sender.example"]
[world.report_sink]
name = "c.rpt.example"
[sender.destination_controls."example.com"]
tls = "preferred"
mta_sts = true
"""
SEND = '[[steps]]\nsend = { from = "alice@sender.example", to = ["a@example.com"] }\n'
ADVANCE = '[[steps]]\nadvance = "1d1h"\n[steps.expect]\n'


def _scenario(text: str):
    return loads_scenario(text, "/x/rpt/t.toml")


def test_report_keys_parse_and_need_the_tlsrpt_capability() -> None:
    s = _scenario(
        W_RPT.replace('requires = ["tlsrpt"]\n', "")
        + SEND
        + ADVANCE
        + 'reports = [{ via = "https", policy_type = "sts", success = 1, '
        'result_types = ["b", "a"], fields = { "date-range.start-datetime" = "~Z$" } }]\n'
        'dsn = { to = "Alice@sender.example" }\n'
    )
    expect = s.steps[1].expect
    [pattern] = expect.reports
    assert pattern.result_types == ("a", "b") and pattern.fields == {
        "date-range.start-datetime": "~Z$"
    }
    assert expect.dsn is not None and expect.dsn.to == "alice@sender.example"
    assert expect.dsn.action == "failed"
    assert Capability.TLSRPT in required_capabilities(s)


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ('reports = [{ via = "http" }]', "reports[0].via"),
        ('reports = [{ polcy_type = "sts" }]', "reports[0].polcy_type: unknown key; allowed keys"),
        ("reports = []", "at least one report entry"),
        ('dsn = { action = "failed" }', "dsn.to: missing key"),
        ('dsn = { to = "alice" }', "dsn.to: invalid value; expected an address"),
        (
            'reports = [{ to = "~(" }]',
            "reports[0].to: invalid value; expected a valid regular expression",
        ),
    ],
)
def test_bad_report_keys_are_load_errors_naming_the_key(expect: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _scenario(W_RPT + SEND + ADVANCE + expect + "\n")


def test_tlsrpt_scenarios_run_on_the_gateway_when_the_engine_is_inprocess() -> None:
    s = _scenario(W_RPT + SEND)
    assert select_engine(s, "inprocess") == "gateway"
    plain = _scenario(W_RPT.replace('requires = ["tlsrpt"]\n', "") + SEND)
    assert select_engine(plain, "inprocess") == "inprocess"
    assert Capability.TLSRPT not in InProcessEngine.capabilities
    assert GatewayEngine.capabilities == frozenset(Capability)


class _EngineOnly(InProcessEngine):
    pass


def test_other_engines_are_not_swapped_and_skip_with_the_reason() -> None:
    register_adapter("test-engine-only", _EngineOnly)
    try:
        s = _scenario(W_RPT + SEND)
        assert select_engine(s, "test-engine-only") == "test-engine-only"
        result = run_scenario(s, "test-engine-only")
    finally:
        del ADAPTERS["test-engine-only"]
    assert result.verdict is ScenarioVerdict.SKIPPED
    assert result.reason == "engine 'test-engine-only' lacks tlsrpt"


def test_gateway_sends_the_daily_report_by_post_and_mail() -> None:
    text = (
        W_RPT
        + SEND
        + '[steps.expect]\noutcome = "delivered"\nno_reports = true\n'
        + ADVANCE
        + 'reports = [{ via = "https", to = "https://c.rpt.example/r", policy_domain = '
        '"example.com", policy_type = "sts", success = 1, failure = 0, '
        'mx_host = ["mx1.example.com"] }, { via = "mailto", to = "r@rpt.example", '
        'success = 1, mail = { "TLS-Report-Domain" = "example.com" } }]\n'
    )
    result = run_scenario(_scenario(text))
    assert result.engine == "gateway"
    assert result.verdict is ScenarioVerdict.PASSED, [
        m.render() for s in result.steps for m in s.mismatches
    ]


def test_a_report_mismatch_names_the_nearest_entry() -> None:
    text = W_RPT + SEND + ADVANCE + 'reports = [{ via = "https", success = 7 }]\n'
    result = run_scenario(_scenario(text))
    assert result.verdict is ScenarioVerdict.FAILED
    [m] = result.steps[1].mismatches
    assert m.key == "reports[0]" and "success=1" in m.seen
    assert any("sts example.com 1/0" in c for c in m.closest)


def test_a_bounce_sends_a_dsn_to_the_sender_domain() -> None:
    text = (
        W_RPT
        + '[world.hosts."mx1.example.com"]\nreplies = { rcpt = "550 5.1.1 no such user" }\n'
        + SEND
        + '[steps.expect]\noutcome = "bounced"\n'
        + 'dsn = { to = "alice@sender.example", action = "failed", status = "~^5\\\\.1\\\\.1", '
        'rcpt = "a@example.com" }\n'
    )
    result = run_scenario(_scenario(text))
    assert result.verdict is ScenarioVerdict.PASSED, [
        m.render() for s in result.steps for m in s.mismatches
    ]
    wrong = text.replace('action = "failed"', 'action = "delayed"')
    failed = run_scenario(_scenario(wrong))
    assert failed.verdict is ScenarioVerdict.FAILED
    assert "failed 5.1.1 a@example.com" in failed.steps[0].mismatches[0].closest[0]


def _passed(result) -> None:
    assert result.verdict is ScenarioVerdict.PASSED, [
        m.render() for s in (*result.steps,) for m in s.mismatches
    ] + [m.render() for m in result.final]


TWO_DOMAINS = """
[scenario]
id = "two-domains"
[world.domains."a.example"]
mx = ["10 mx.a.example"]
[world.domains."b.example"]
mx = ["10 mx.b.example"]
[sender.destination_controls.default]
tls = "required-verify-hosted"
[[steps]]
send = { from = "alice@sender.example", to = ["x@a.example", "y@b.example"] }
[steps.expect]
outcome = "delivered"
"""


def test_a_message_to_two_domains_reports_each_recipients_own_attempt() -> None:
    # The scheduler delivers per domain, so one message comes back in two reports; the
    # adapter used to keep only the last one, and the other recipient read "via None".
    result = run_scenario(_scenario(TWO_DOMAINS), "gateway")
    _passed(result)
    by_rcpt = {d.rcpt: d for d in result.steps[0].observation.deliveries}
    assert {r: (d.status, d.mx, d.verified) for r, d in by_rcpt.items()} == {
        "x@a.example": ("delivered", "mx.a.example", "pkix"),
        "y@b.example": ("delivered", "mx.b.example", "pkix"),
    }
    assert all(d.tls and d.tls.startswith("TLSv1.") for d in by_rcpt.values())


DANE_ROUTE_REPORT = """
[scenario]
id = "dane-route-report"
requires = ["tlsrpt"]
[world.domains."example.com"]
dnssec = "secure"
mx = ["10 mx1.example.com"]
[world.domains."example.net"]
dnssec = "secure"
[world.hosts."relay.example.net"]
cert = "self-signed"
port = 2525
tlsa = [[3, 1, 1]]
[[world.records]]
name = "_smtp._tls.relay.example.net"
type = "TXT"
value = ["v=TLSRPTv1; rua=mailto:host@rpt.example"]
[world.domains."rpt.example"]
mx = ["10 mx.rpt.example"]
[sender.routes]
"example.com" = ["relay.example.net:2525"]
[sender.destination_controls."example.com"]
tls = "preferred"
dane = "mandatory"
[[steps]]
send = { from = "alice@sender.example", to = ["rcpt@example.com"] }
[steps.expect]
outcome = "delivered"
verified = "dane"
queries = { "_2525._tcp.relay.example.net TLSA" = 1, "_25._tcp.relay.example.net TLSA" = 0 }
[[steps]]
advance = "1d1h"
[steps.expect]
queries = { "_2525._tcp.relay.example.net TLSA" = 0, "_25._tcp.relay.example.net TLSA" = 0 }
[[steps.expect.reports]]
via = "mailto"
policy_domain = "relay.example.net"
policy_type = "tlsa"
success = 1
failure = 0
fields = { "policies.0.policy.policy-string.0" = '~^3 1 1 [0-9A-F]{64}$' }
"""


def test_a_dane_report_carries_the_rrset_the_session_used_without_a_new_lookup() -> None:
    # RFC 8460 §4.5 / AMB-20: the tlsa policy-string is the RRset the session was judged
    # against. The reporter used to look it up again at _25._tcp.<base> after each
    # session: one more query per session, at the wrong owner for a route's port
    # (DANE-17), which left the report's policy-string empty.
    _passed(run_scenario(_scenario(DANE_ROUTE_REPORT), "gateway"))
