"""The pieces of a simulated world: DNS, policy hosts, receiving MTAs, proxy, report sink.

Everything public is re-exported here; :class:`World` assembles them from a world spec::

    from harness.world import World, read_world_spec

    async with World(read_world_spec("fixtures/worlds/w-sts.toml")) as w:
        w.resolver, w.endpoint_map, w.ca_file
"""

from __future__ import annotations

from harness.world.addresses import (
    DEFAULT_ALLOCATOR,
    DNS_HOST,
    AddressBlock,
    LoopbackAllocator,
    is_loopback_v4,
    process_slot,
)
from harness.world.dns.answer import Answer, DnsBehaviour, LoggedQuery, Rule, Transport, answer
from harness.world.dns.records import (
    AAAA,
    CNAME,
    MX,
    RDATA_TYPES,
    TLSA,
    TXT,
    A,
    RData,
    Record,
    ZoneError,
    canonical_name,
    check_loopback,
)
from harness.world.dns.server import FakeDns
from harness.world.dns.zones import DnssecStatus, Lookup, Zone
from harness.world.mta.handshake import ALERTS, server_hello_flight
from harness.world.mta.log import SessionAnswer, SessionConfig, SessionLog, describe_action
from harness.world.mta.records import (
    MtaSession,
    RcptResult,
    ReceivedMessage,
    SessionEnd,
    Transaction,
)
from harness.world.mta.script import (
    HELO_ONLY,
    POSITIVE_CODES,
    STAGES,
    Action,
    Disconnect,
    Fault,
    FaultKind,
    MxStartTls,
    Script,
    ScriptedReply,
    is_fault,
    parse_action,
)
from harness.world.mta.server import ReceivingMta
from harness.world.mta.session import MALFORMED_LINE, MtaProtocol, SessionOwner
from harness.world.mta.tls import (
    ServerCert,
    TlsSetup,
    break_handshake,
    describe_cert,
    is_tls_record,
)
from harness.world.ports import DNS_STUB, TABLE, StandardPorts, ruleset
from harness.world.servers import HostInfo, HostRole, Servers
from harness.world.spec import (
    DerivedTlsa,
    DnsRule,
    DomainSpec,
    HostSpec,
    PolicyHostSpec,
    ProxySpec,
    RecordSpec,
    ReportSinkSpec,
    WorldSpec,
    load_world_spec,
    read_world_spec,
)
from harness.world.spec.changes import changed_dns, changed_domain, changed_policy
from harness.world.spec.records import ALL_RCPTS, parse_record, parse_replies, parse_tlsa
from harness.world.spec.tables import (
    dns_rules_from,
    domain_from,
    host_from,
    proxy_from,
    report_sink_from,
)
from harness.world.spec.values import address_of, member_of, name_of, strings_of
from harness.world.spec.zones import build_zones, tlsa_name, zone_apex
from harness.world.timeline import (
    ExchangeKind,
    StampedLog,
    TimedDns,
    TimedMta,
    TimedPolicyHost,
    TimedProxy,
    TimedReportSink,
    WorldExchange,
    WorldSnapshot,
    merge,
    monotonic_clock,
)
from harness.world.web.behaviour import PolicyBehaviour, PolicyResponse, ProxyFault
from harness.world.web.policy_host import (
    DEFAULT_CERT_NAME,
    POLICY_PATH,
    ClientHello,
    PolicyHost,
    PolicyRequest,
)
from harness.world.web.proxy import Proxy, ProxyEvent, ProxyOutcome, ProxyResolver
from harness.world.web.report_sink import GZIP_TYPE, JSON_TYPE, ReceivedReport, ReportSink
from harness.world.world import Now, World, shared_cert_factory

__all__ = [
    "AAAA",
    "ALERTS",
    "ALL_RCPTS",
    "CNAME",
    "DEFAULT_ALLOCATOR",
    "DEFAULT_CERT_NAME",
    "DNS_HOST",
    "DNS_STUB",
    "GZIP_TYPE",
    "HELO_ONLY",
    "JSON_TYPE",
    "MALFORMED_LINE",
    "MX",
    "POLICY_PATH",
    "POSITIVE_CODES",
    "RDATA_TYPES",
    "STAGES",
    "TABLE",
    "TLSA",
    "TXT",
    "A",
    "Action",
    "AddressBlock",
    "Answer",
    "ClientHello",
    "DerivedTlsa",
    "Disconnect",
    "DnsBehaviour",
    "DnsRule",
    "DnssecStatus",
    "DomainSpec",
    "ExchangeKind",
    "FakeDns",
    "Fault",
    "FaultKind",
    "HostInfo",
    "HostRole",
    "HostSpec",
    "LoggedQuery",
    "Lookup",
    "LoopbackAllocator",
    "MtaProtocol",
    "MtaSession",
    "MxStartTls",
    "Now",
    "PolicyBehaviour",
    "PolicyHost",
    "PolicyHostSpec",
    "PolicyRequest",
    "PolicyResponse",
    "Proxy",
    "ProxyEvent",
    "ProxyFault",
    "ProxyOutcome",
    "ProxyResolver",
    "ProxySpec",
    "RData",
    "RcptResult",
    "ReceivedMessage",
    "ReceivedReport",
    "ReceivingMta",
    "Record",
    "RecordSpec",
    "ReportSink",
    "ReportSinkSpec",
    "Rule",
    "Script",
    "ScriptedReply",
    "ServerCert",
    "Servers",
    "SessionAnswer",
    "SessionConfig",
    "SessionEnd",
    "SessionLog",
    "SessionOwner",
    "StampedLog",
    "StandardPorts",
    "TimedDns",
    "TimedMta",
    "TimedPolicyHost",
    "TimedProxy",
    "TimedReportSink",
    "TlsSetup",
    "Transaction",
    "Transport",
    "World",
    "WorldExchange",
    "WorldSnapshot",
    "WorldSpec",
    "Zone",
    "ZoneError",
    "address_of",
    "answer",
    "break_handshake",
    "build_zones",
    "canonical_name",
    "changed_dns",
    "changed_domain",
    "changed_policy",
    "check_loopback",
    "describe_action",
    "describe_cert",
    "dns_rules_from",
    "domain_from",
    "host_from",
    "is_fault",
    "is_loopback_v4",
    "is_tls_record",
    "load_world_spec",
    "member_of",
    "merge",
    "monotonic_clock",
    "name_of",
    "parse_action",
    "parse_record",
    "parse_replies",
    "parse_tlsa",
    "process_slot",
    "proxy_from",
    "read_world_spec",
    "report_sink_from",
    "ruleset",
    "server_hello_flight",
    "shared_cert_factory",
    "strings_of",
    "tlsa_name",
    "zone_apex",
]
