"""Pin the public API of harness.world (STYLE habit 17)."""

from __future__ import annotations

import importlib
import pkgutil

import harness.world

EXPECTED = {
    "AAAA", "CNAME", "DEFAULT_ALLOCATOR", "DEFAULT_CERT_NAME", "DNS_HOST", "GZIP_TYPE",
    "HELO_ONLY", "JSON_TYPE", "MX", "POLICY_PATH", "RDATA_TYPES", "TLSA", "TXT", "A", "Action",
    "AddressBlock", "Answer", "ClientHello", "Disconnect", "DnsBehaviour", "DnsRule",
    "DnssecStatus", "DomainSpec", "WorldExchange", "ExchangeKind", "FakeDns", "HostInfo",
    "HostRole",
    "HostSpec", "LoggedQuery", "Lookup", "LoopbackAllocator", "ReceivedMessage", "MtaSession",
    "Now", "PolicyBehaviour", "PolicyHost", "PolicyHostSpec", "PolicyRequest", "PolicyResponse",
    "Proxy", "ProxyEvent", "ProxyFault", "ProxyOutcome", "ProxyResolver", "ProxySpec", "RData",
    "RcptResult", "ReceivedReport", "ReceivingMta", "Record", "RecordSpec", "ScriptedReply",
    "ReportSink",
    "ReportSinkSpec", "Rule", "Script", "ServerCert", "Servers", "SessionEnd", "StampedLog",
    "MxStartTls", "TimedDns", "TimedMta", "TimedPolicyHost", "TimedProxy", "TimedReportSink",
    "TlsSetup", "Transaction", "Transport", "World", "WorldSnapshot", "WorldSpec", "Zone",
    "ZoneError", "answer", "build_zones", "canonical_name", "changed_dns", "changed_domain",
    "changed_policy", "check_loopback", "describe_cert", "is_loopback_v4", "member_of",
    "load_world_spec", "merge", "monotonic_clock", "parse_action", "process_slot",
    "read_world_spec", "shared_cert_factory", "strings_of", "tlsa_name", "zone_apex",
    "ALL_RCPTS", "MtaProtocol", "SessionAnswer", "SessionConfig", "SessionLog", "SessionOwner",
    "break_handshake", "is_tls_record", "parse_record", "parse_replies", "parse_tlsa",
    "address_of", "dns_rules_from", "domain_from", "host_from", "name_of", "proxy_from",
    "report_sink_from", "DerivedTlsa", "DNS_STUB", "TABLE", "StandardPorts", "ruleset",
    "ALERTS", "MALFORMED_LINE", "POSITIVE_CODES", "STAGES", "Fault", "FaultKind",
    "describe_action", "is_fault", "server_hello_flight",
}  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert set(harness.world.__all__) == EXPECTED
    assert len(harness.world.__all__) == len(EXPECTED)


def test_every_name_resolves() -> None:
    for name in harness.world.__all__:
        assert getattr(harness.world, name) is not None, name


# No two modules of the world share a public name (issue 14): each is exported as it is.


def test_every_public_name_of_every_module_is_re_exported() -> None:
    missing = []
    for info in pkgutil.walk_packages(harness.world.__path__, "harness.world."):
        short = info.name.removeprefix("harness.world.")
        if info.ispkg or short.rpartition(".")[2].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        for name in module.__all__:
            if getattr(harness.world, name, None) is not getattr(module, name):
                missing.append(f"{short}.{name}")
    assert missing == []
