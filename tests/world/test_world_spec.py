"""The world spec loader: shapes accepted, and errors that name file, key path and value."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from certs import CertProfile
from harness.errors import SpecError
from harness.world import (
    MX,
    Disconnect,
    DnsBehaviour,
    DnssecStatus,
    Fault,
    FaultKind,
    MxStartTls,
    ScriptedReply,
    load_world_spec,
    read_world_spec,
)
from harness.world.spec.records import ALL_RCPTS

WORLDS = Path(__file__).resolve().parents[2] / "fixtures" / "worlds"


def test_example_worlds_load() -> None:
    sts = read_world_spec(WORLDS / "w-sts.toml")
    assert set(sts.hosts) == {"mx1.example.com", "mx2.example.com"}
    assert sts.domains["example.com"].mta_sts_txt == (("v=STSv1; id=A1",),)
    dane = read_world_spec(WORLDS / "w-dane.toml")
    assert dane.domains["example.com"].dnssec is DnssecStatus.SECURE
    assert dane.hosts["mx1.example.com"].cert is CertProfile.SELF_SIGNED
    assert dane.hosts["mx1.example.com"].tlsa == ((3, 1, 1),)


def test_mx_targets_get_default_hosts_and_null_mx_none() -> None:
    spec = load_world_spec({"domains": {"Example.COM.": {"mx": ["10 MX1.example.com", [0, "."]]}}})
    assert spec.domains["example.com"].mx == ((10, "mx1.example.com"), (0, ""))
    assert list(spec.hosts) == ["mx1.example.com"]
    assert spec.hosts["mx1.example.com"].starttls is MxStartTls.OFFERED


def test_policy_host_response_and_presence() -> None:
    spec = load_world_spec(
        {
            "domains": {
                "a.example": {"policy": "version: STSv1\n"},
                "b.example": {"policy_host": {"behaviour": "redirect", "location": "https://x/"}},
                "c.example": {"policy_host": {"content_type": False, "headers": {"ETag": "1"}}},
                "d.example": {},
            }
        }
    )
    d = spec.domains
    assert d["a.example"].has_policy_host and not d["d.example"].has_policy_host
    b_host, c_host = d["b.example"].policy_host, d["c.example"].policy_host
    assert b_host is not None and c_host is not None
    assert b_host.response.status == 301
    c = c_host.response
    assert c.content_type is None and c.headers == (("ETag", "1"),)


def test_replies_dns_rules_and_records() -> None:
    spec = load_world_spec(
        {
            "hosts": {
                "mx1.example.com": {
                    "replies": {"rcpt": "450 4.2.0 later", "data": "disconnect"},
                    "tlsa_raw": ["3 1 1 abcd", [2, 0, 1, "ef"]],
                    "tls_max": "1.1",
                    "cert": "none",
                    "starttls": "absent",
                }
            },
            "dns": {"example.com": {"MX": {"behaviour": "drop", "delay_ms": 10}, "*": "bogus"}},
            "records": [
                {"name": "relay.example.net", "type": "TXT", "value": ["a", "b"], "ttl": 5},
                {"name": "x.example.net", "type": "mx", "value": "10 relay.example.net"},
            ],
        },
        "w.toml",
        "world",
    )
    host = spec.hosts["mx1.example.com"]
    assert host.script.rcpt_action("any@example.com", ALL_RCPTS - 1) == ScriptedReply(
        450, "4.2.0 later"
    )
    assert host.script.data == Disconnect()
    assert host.tlsa_raw == ((3, 1, 1, b"\xab\xcd"), (2, 0, 1, b"\xef"))
    rules = {(r.rrtype, r.action, r.delay_ms) for r in spec.dns}
    assert rules == {("MX", DnsBehaviour.DROP, 10), (None, DnssecStatus.BOGUS, 0)}
    assert spec.records[0].ttl == 5 and spec.records[1].rdata == MX(10, "relay.example.net")


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"domain": {}}, "world.domain", "unknown key; allowed keys are domains, hosts"),
        (
            {"domains": {"example.com": {"dnssec": "signed"}}},
            'world.domains."example.com".dnssec',
            "expected one of secure, insecure, bogus (value 'signed')",
        ),
        ({"hosts": {"mx": {"cert": "fine"}}}, "world.hosts.mx.cert", "expired"),
        ({"hosts": {"mx": {"starttls": "yes"}}}, "world.hosts.mx.starttls", "broken-close"),
        (
            {"hosts": {"mx": {"tls_min": "1.3", "tls_max": "1.2"}}},
            "world.hosts.mx.tls_min",
            "expected a version no higher than tls_max (1.2)",
        ),
        (
            {"hosts": {"mx": {"replies": {"rcpt": "hello"}}}},
            "world.hosts.mx.replies.rcpt",
            "disconnect",
        ),
        (
            {"hosts": {"mx": {"tlsa": [[3, 1]]}}},
            "world.hosts.mx.tlsa[0]",
            "expected 3 fields (value [3, 1])",
        ),
        (
            {"domains": {"e.x": {"mx": [[70000, "m.e.x"]]}}},
            'world.domains."e.x".mx[0][0]',
            "expected an integer 0..65535 (value 70000)",
        ),
        (
            {"domains": {"e.x": {"policy_host": {"status": "200"}}}},
            'world.domains."e.x".policy_host.status',
            "expected an integer 100..599 (value '200')",
        ),
        (
            {"records": [{"name": "a.b", "type": "SRV", "value": "x"}]},
            "world.records[0].type",
            "expected a record type: one of A, AAAA, CNAME, MX, TLSA, TXT (value 'SRV')",
        ),
        ({"records": [{"name": "a.b", "type": "A"}]}, "world.records[0].value", "missing key"),
        ({"report_sink": {}}, "world.report_sink.name", "missing key"),
        ({"proxy": {"fault": "slow"}}, "world.proxy.fault", "hang"),
        (
            {"dns": {"a.b": {"TXT": {"behavior": "drop"}}}},
            'world.dns."a.b".TXT.behavior',
            "unknown key",
        ),
        ({"domains": {"café.example": {}}}, 'world.domains."café.example"', "A-label"),
        (
            {"hosts": {"mx": {"replies": {"starttls": "220 go ahead"}}}},
            "world.hosts.mx.replies",
            "must refuse",
        ),
        (
            {"hosts": {"mx": {"cert": "none", "starttls": "no-shared-cipher"}}},
            "world.hosts.mx.cert",
            "'no-shared-cipher' needs a certificate",
        ),
    ],
)
def test_errors_name_the_key_path_and_allowed_values(
    data: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_world_spec(data, "scenario.toml", "world")
    assert info.value.file == "scenario.toml" and info.value.key == key
    assert str(info.value).startswith(f"scenario.toml: {key}: ")
    assert words in str(info.value)


def test_transport_faults_per_stage_and_per_handshake() -> None:
    replies = {
        "banner": "reset",
        "ehlo": "STALL",
        "starttls": "454 4.7.0 later",
        "mail": "malformed",
        "rcpt": "multiline-broken",
        "data_start": "disconnect",
        "data": "451 4.3.0 full",
    }
    spec = load_world_spec(
        {
            "hosts": {
                "mx1.x.example": {"replies": replies},
                "mx2.x.example": {"starttls": "broken-alert-protocol-version"},
                "mx3.x.example": {"starttls": "no-shared-cipher", "cert": "long-chain"},
            }
        }
    )
    script = spec.hosts["mx1.x.example"].script
    assert (script.banner, script.ehlo) == (Fault(FaultKind.RESET), Fault(FaultKind.STALL))
    assert (
        script.starttls == ScriptedReply(454, "4.7.0 later") and script.data_start == Disconnect()
    )
    assert script.mail == Fault(FaultKind.MALFORMED)
    assert script.rcpt_action("a@x.example", 7) == Fault(FaultKind.MULTILINE_BROKEN)
    assert spec.hosts["mx2.x.example"].starttls is MxStartTls.BROKEN_ALERT_PROTOCOL_VERSION
    assert spec.hosts["mx3.x.example"].starttls is MxStartTls.NO_SHARED_CIPHER
    assert spec.hosts["mx3.x.example"].cert is CertProfile.LONG_CHAIN


def test_read_world_spec_reports_toml_and_io_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[domains\n")
    with pytest.raises(SpecError, match=r"bad\.toml: not valid TOML"):
        read_world_spec(bad)
    with pytest.raises(SpecError, match="cannot read"):
        read_world_spec(tmp_path / "missing.toml")
    assert tomllib  # the loader takes what tomllib gives
