"""The world spec: a TOML table describing DNS, policy hosts, MXs, proxy and report sink.

Theory of operation
-------------------
:func:`load_world_spec` turns a dict (a whole ``world.toml``, or a scenario's
``[world]`` table: pass its ``prefix``) into a frozen :class:`WorldSpec`. Every key
is checked; a wrong one raises :class:`~harness.errors.SpecError` naming the file,
the key path and the value. After loading, the spec is *complete*: every MX target
has a :class:`HostSpec` (defaults when not declared), names are canonical, and the
policy host's response is a ready :class:`~harness.world.web.policy_host.PolicyResponse`.
:class:`~harness.world.world.World` builds from it and keeps it as its state, so a
mutation is "load the changed table, replace it in the spec, rebuild what depends".

The format (every key optional unless noted)::

    [domains."example.com"]             # a zone, and a mail domain when it has `mx`
    dnssec = "insecure"                 # secure | insecure | bogus
    mx = [[10, "mx1.example.com"], "20 mx2.example.com"]
    mta_sts_txt = ["v=STSv1; id=A1"]    # RRs at _mta-sts.<domain>; an RR may be a list
    tlsrpt_txt = ["v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example"]   # at _smtp._tls.<domain>
    policy = "version: STSv1\\n..."     # presence => https://mta-sts.<domain> exists
    [domains."example.com".policy_host] # also makes the host exist (empty body)
    cert = "valid"; names = [...]; key_type = "ecdsa"; address = "127.0.9.9"
    behaviour = "serve"; status = 200; content_type = "text/plain" (false: none)
    headers = { "Cache-Control" = "no-store" }; location = "https://..."
    trickle_interval = 0.05; trickle_bytes = 1; oversize_bytes = 10485760
    tls_min = "1.0"; tls_max = "1.1"    # protocol range; a host with a range of its own
                                        # gets its own listener (FETCH-17)

    [hosts."mx1.example.com"]           # a ReceivingMta (MX targets get one anyway)
    cert = "valid"                      # any CertProfile, or "none"
    names = [...]; key_type = "ecdsa"; address = "127.0.9.1"
    cn = "mx1.example.com"              # subject CN apart from the SAN names (DANE-26)
    port = 2525                         # the service port (default 25), in the endpoint map
    starttls = "offered"                # offered | absent | refused | no-shared-cipher |
                                        # broken-close | broken-close-after-220 |
                                        # broken-reset | broken-stall | broken-garbage |
                                        # broken-alert-protocol-version |
                                        # broken-alert-handshake-failure |
                                        # broken-alert-internal-error |
                                        # broken-chain-malformed (mta/script.py MxStartTls)
    cert = "long-chain"                 # 101 CAs below the root: beyond verify depth
    tls_min = "1.2"; tls_max = "1.3"
    tlsa = [[3, 1, 1]]                  # at _<port>._tcp.<host>, from this host's cert;
    tlsa = [{ usage = 3, selector = 0, mtype = 1, data_from = [3, 1, 1] }]   # or derived:
                                        # published as 3 0 1, data computed as 3 1 1
                                        # (DANE-21); `depth = 3`: from that CA (DANE-30)
    tlsa_raw = ["3 1 1 ABCD..."]        # also at _<port>._tcp.<host>
    sni_certs = { "mx1.example.com" = "valid" }   # served for that SNI; `cert` otherwise
    replies = { banner = "...", ehlo, helo, starttls, mail, data_start, data,
                rcpt = "450 4.2.0 later" | { "a@x" = "550 no" }, rcpt_by_index = [...] }
                                        # each: "<code> <text>" | "disconnect" | "reset" |
                                        # "stall" | "malformed" | "multiline-broken"
                                        # (harness/world/mta/script.py says what each does)

    [dns]                               # faults and DNSSEC status per name and type
    "_mta-sts.example.com" = { TXT = "servfail", "*" = { behaviour = "drop" } }
    [[records]]                         # raw extra records
    name = "relay.example.net"; type = "A"; value = "127.0.9.1"; ttl = 60; dnssec = "bogus"
    [proxy]                             # an HTTP CONNECT proxy
    fault = "none"; address = "127.0.9.2"
    [report_sink]                       # a TLS-RPT HTTPS collector
    name = "reports.rpt.example"; cert = "valid"; address = "..."
    statuses = { "/tlsrpt" = [503, 201] }
"""

import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.core.tomlnode import TomlNode
from harness.errors import SpecError, spec_errors
from harness.world.spec.model import DomainSpec, HostSpec, WorldSpec
from harness.world.spec.records import parse_record
from harness.world.spec.tables import (
    dns_rules_from,
    domain_from,
    host_from,
    proxy_from,
    report_sink_from,
)
from harness.world.spec.values import name_of

__all__ = ["load_world_spec", "read_world_spec"]


def load_world_spec(
    data: Mapping[str, Any], source: str = "<world>", prefix: str = ""
) -> WorldSpec:
    """Check and complete a world spec given as a dict.

    Args:
        data: the world table (e.g. ``tomllib.load(...)`` or a scenario's ``[world]``).
        source: the file name errors start with.
        prefix: the key path of ``data`` inside that file (``"world"`` in a scenario).

    Returns:
        The complete :class:`WorldSpec`.

    Raises:
        SpecError: an unknown key, a bad value, or an inconsistency; the message names
            ``source: key.path`` and the value.
    """
    with spec_errors():
        return _world(TomlNode(data, source, prefix))


def _world(root: TomlNode) -> WorldSpec:
    source, prefix = root.file, root.path
    keys = ("domains", "hosts", "dns", "records", "proxy", "report_sink")
    top = root.table(keys)
    domains: dict[str, DomainSpec] = {}
    for raw, node in top["domains"].table().items() if "domains" in top else ():
        name = name_of(TomlNode(raw, source, node.path))
        domains[name] = domain_from(node, name)
    hosts: dict[str, HostSpec] = {}
    for raw, node in top["hosts"].table().items() if "hosts" in top else ():
        name = name_of(TomlNode(raw, source, node.path))
        hosts[name] = host_from(node, name)
    for d in domains.values():
        for _, target in d.mx:
            if target and target not in hosts:  # "" is the null MX "." (RFC 7505)
                hosts[target] = HostSpec(target)
    return WorldSpec(
        domains=MappingProxyType(domains),
        hosts=MappingProxyType(hosts),
        dns=dns_rules_from(top["dns"]) if "dns" in top else (),
        records=tuple(parse_record(n) for n in top["records"].items()) if "records" in top else (),
        proxy=proxy_from(top["proxy"]) if "proxy" in top else None,
        report_sink=report_sink_from(top["report_sink"]) if "report_sink" in top else None,
        source=source,
        prefix=prefix,
    )


def read_world_spec(path: str | Path) -> WorldSpec:
    """Read and check a ``world.toml`` file.

    Raises:
        SpecError: the file cannot be read, is not TOML, or holds a bad spec.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"not valid TOML: {exc}", file=str(path)) from None
    return load_world_spec(data, str(path))
