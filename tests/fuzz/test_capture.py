"""``sts-harness capture``: capture a simulated world, replay the capture, same outcome.

Each case is a world spec and the Destination Controls to send with. The original
scenario runs through the runner; the same world is then brought up on its own and
captured through its resolver and endpoint map (with one live delivery attempt
recording the expectations), and the captured scenario is replayed through the
runner. It must pass its recorded expectations and end like the original.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs import WRONG_NAME, CertProfile
from engine.delivery.agent import load_roots
from engine.io.dialer import Dialer
from harness.adapters.inprocess import InProcessEngine
from harness.capture import capture_domain, capture_scenario, cert_facts, closest_profile
from harness.cli import main
from harness.commands.capture import record_delivery, scenario_text
from harness.fuzz.driver import load_document
from harness.fuzz.strategies import CERT_PROFILES
from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.run.single import run_scenario_async
from harness.scenario.explain import explain
from harness.scenario.loader import loads_scenario
from harness.world.world import World, shared_cert_factory

FROM, RCPT = "alice@sender.example", "rcpt@example.com"
POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 86400\n"
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sts-enforce-mx1-self-signed": (
        {
            "domains": {
                "example.com": {
                    "mx": ["10 mx1.example.com", "20 mx2.example.com"],
                    "mta_sts_txt": ["v=STSv1; id=C1"],
                    "tlsrpt_txt": ["v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example"],
                    "policy": POLICY,
                }
            },
            "hosts": {"mx1.example.com": {"cert": "self-signed"}},
        },
        {"tls": "preferred", "mta_sts": True},
    ),
    "dane-ee-self-signed-mandatory": (
        {
            "domains": {"example.com": {"dnssec": "secure", "mx": ["10 mx1.example.com"]}},
            "hosts": {
                "mx1.example.com": {"cert": "self-signed", "tlsa": [[3, 1, 1]], "tls_max": "1.2"}
            },
        },
        {"tls": "preferred", "dane": "mandatory", "mta_sts": False},
    ),
    "sts-enforce-expired-policy-404": (
        {
            "domains": {
                "example.com": {
                    "mx": ["10 mx1.example.com"],
                    "mta_sts_txt": ["v=STSv1; id=C2"],
                    "policy": POLICY,
                    "policy_host": {"status": 404},
                }
            },
            "hosts": {"mx1.example.com": {"cert": "expired", "starttls": "refused"}},
        },
        {"tls": "required", "mta_sts": True},
    ),
    "sts-enforce-unlisted-mx-in-clear": (
        {
            "domains": {
                "example.com": {
                    "mx": ["10 mx3.example.com"],
                    "mta_sts_txt": ["v=STSv1; id=C3"],
                    "policy": POLICY,
                    "policy_host": {"cert": "wrong-name", "content_type": "text/html"},
                }
            },
            "hosts": {"mx3.example.com": {"cert": "none", "starttls": "absent"}},
        },
        {"tls": "preferred", "mta_sts": True},
    ),
}


def _sender(entry: dict[str, Any]) -> dict[str, Any]:
    full = {"dane": "none", **entry}
    return {"destination_controls": {"default": {"tls": "preferred"}, "example.com": full}}


def _summary(result: ScenarioResult) -> list[tuple[Any, ...]]:
    deliveries = result.steps[0].observation.deliveries
    return [(d.rcpt, d.status, d.mx, d.tls, d.verified) for d in deliveries]


def _dialer(w: World) -> Dialer:
    return Dialer(endpoint_map=w.endpoint_map, loopback_only=True)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_capture_replays_with_the_original_outcome(case: str, tmp_path: Path) -> None:
    world, entry = CASES[case]
    sender, send = _sender(entry), {"from": FROM, "to": [RCPT]}
    original_doc = {
        "scenario": {"id": f"original-{case}"},
        "world": world,
        "sender": sender,
        "steps": [{"send": send}],
    }
    original = await run_scenario_async(load_document(original_doc))
    assert original.verdict is ScenarioVerdict.PASSED, explain(original)

    at = InProcessEngine().now()  # the runner's clock, so "expired" means the same
    async with World(world, now=at, certs=shared_cert_factory()) as w:
        roots = load_roots(w.ca_file)
        capture = await capture_domain(
            "example.com",
            resolvers=[w.resolver],
            roots=roots,
            dialer=_dialer(w),
            at=at,
            timeout=2.0,
        )
        expect = await record_delivery(
            sender,
            resolvers=[w.resolver],
            roots=roots,
            dialer=_dialer(w),
            mail_from=FROM,
            rcpt=RCPT,
            at=at,
        )
    doc = capture_scenario(capture, sender=sender, send=send, expect=expect)
    path = tmp_path / "captured.toml"
    path.write_text(scenario_text(doc, capture, recorded=True))

    replay = await run_scenario_async(loads_scenario(path.read_text(), path))
    assert replay.verdict is ScenarioVerdict.PASSED, explain(replay) + "\n" + path.read_text()
    assert _summary(replay) == _summary(original)
    assert expect["outcome"] == original.steps[0].observation.deliveries[0].status


async def test_capture_records_dns_policy_and_certificates() -> None:
    world, _ = CASES["sts-enforce-mx1-self-signed"]
    at = InProcessEngine().now()
    async with World(world, now=at, certs=shared_cert_factory()) as w:
        c = await capture_domain(
            "example.com",
            resolvers=[w.resolver],
            roots=load_roots(w.ca_file),
            dialer=_dialer(w),
            at=at,
        )
    assert c.sts_txt.txt == (("v=STSv1; id=C1",),)
    assert c.tlsrpt_txt.txt == (("v=TLSRPTv1; rua=mailto:tlsrpt@rpt.example",),)
    assert c.policy is not None and c.policy.body == POLICY and c.policy.status == 200
    assert c.policy.cert is not None and c.policy.cert.chains and c.policy.cert.matches_host
    mx1, mx2 = c.hosts
    assert (mx1.host, mx1.preference, mx2.host) == ("mx1.example.com", 10, "mx2.example.com")
    assert mx1.cert is not None and mx1.cert.self_signed and not mx1.cert.chains
    assert mx2.cert is not None and mx2.cert.chains and mx2.cert.validity == "current"
    assert set(mx2.tls_versions) == {"TLSv1.3", "TLSv1.2"}
    assert not mx1.a.secure and mx1.tlsa is None  # RFC 7672 §2.2.2: insecure, no TLSA query


# A chain that no root completes is "untrusted" whatever is missing; a trusted chain
# naming another host keeps its names (the closest world reproduces them exactly).
# Profiles added later only need to map to some profile the world can serve.
_SAME: dict[str, tuple[str, tuple[str, ...]]] = {p: (p, ()) for p in CERT_PROFILES} | {
    "missing-intermediate": ("untrusted", ()),
    "wrong-name": ("valid", (WRONG_NAME,)),
}


@pytest.mark.parametrize("profile", [p.value for p in CertProfile])
def test_closest_profile_recovers_the_profile_served(profile: str) -> None:
    factory = shared_cert_factory()
    at = InProcessEngine().now()
    issued = factory.issue("mx1.example.com", profile=CertProfile(profile), now=at)
    chain = [
        c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(issued.chain_pem)
    ]
    facts = cert_facts(chain, load_roots_from(factory.ca_bundle_pem), "mx1.example.com", at)
    closest = closest_profile(facts, "mx1.example.com")
    if profile in _SAME:
        assert closest == _SAME[profile]
    else:
        assert closest[0] in CERT_PROFILES


def load_roots_from(pem: bytes) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


async def test_cli_capture_writes_a_loadable_scenario(tmp_path: Path) -> None:
    world, _ = CASES["sts-enforce-mx1-self-signed"]
    at = InProcessEngine().now()
    out, live = tmp_path / "cap.toml", tmp_path / "live.toml"
    async with World(world, now=at, certs=shared_cert_factory()) as w:
        endpoints = tmp_path / "endpoints.json"
        endpoints.write_text(
            json.dumps({f"{a}:{p}": f"{ra}:{rp}" for (a, p), (ra, rp) in w.endpoint_map.items()})
        )
        base = [
            "capture",
            "example.com",
            "--resolver",
            "{}:{}".format(*w.resolver),
            "--ca-file",
            str(w.ca_file),
            "--endpoints",
            str(endpoints),
            "--at",
            str(at),
        ]
        assert await asyncio.to_thread(main, [*base, "-o", str(out)]) == 0
        argv = [*base, "--deliver", "--to", RCPT, "--tls", "required", "-o", str(live)]
        assert await asyncio.to_thread(main, argv) == 0
    text = out.read_text()
    assert text.startswith("# Captured from example.com")
    assert "left for you to fill in" in text
    scenario = loads_scenario(text, out)
    assert scenario.steps[0].args.rcpts == ("postmaster@example.com",)
    data = tomllib.loads(live.read_text())
    assert data["steps"][0]["expect"] == {
        "outcome": "delivered",
        "via": "mx2.example.com",
        "tls": "TLSv1.3",
        "verified": "pkix",
    }
    assert data["sender"]["destination_controls"]["example.com"]["tls"] == "required"


def test_cli_capture_refuses_a_missing_ca_file(tmp_path: Path) -> None:
    assert main(["capture", "example.com", "--ca-file", str(tmp_path / "nope.pem")]) == 2
