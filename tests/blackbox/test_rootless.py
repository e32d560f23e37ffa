"""Rootless black-box runs (harness.userns): the namespace, the skips, real MTAs in it.

These run as root and as any other user: with :data:`~harness.netns.ROOTLESS_ENV` set,
root takes the rootless path too. They skip (with the kernel's reason) only where
unprivileged user namespaces do not work, and per engine where the MTA is not
installed; a profile that cannot run rootless (Postfix) must be *skipped with why*.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import netns, userns
from harness.adapters.blackbox.profile import load_profile, profile_names
from harness.run.batch import child
from harness.run.result import ScenarioVerdict

pytestmark = pytest.mark.netns
SCENARIOS = Path(__file__).parent / "scenarios"
ROOT = Path(__file__).resolve().parents[2]

# Run inside: is it isolated and ours, can it do what a black-box child does?
_INSIDE = """
import json, os, socket, subprocess
from harness.netns import current_namespace, flush_conntrack
s = socket.socket(); s.bind(("127.0.0.53", 25)); s.close()
nft = subprocess.run(["nft", "table ip t { chain o { type nat hook output priority -100; }; }"],
                     capture_output=True, text=True)
flush_conntrack()
print(json.dumps({"ns": current_namespace(), "uid": os.getuid(), "nft": nft.returncode,
                  "resolv": open("/etc/resolv.conf").read(),
                  "links": [n for _, n in socket.if_nameindex()]}))
"""


@pytest.fixture
def rootless(monkeypatch: pytest.MonkeyPatch) -> netns.Probe:
    monkeypatch.setenv(netns.ROOTLESS_ENV, "1")
    p = netns.probe(refresh=True)
    if not p.ok:
        pytest.skip(p.reason)
    return p


def test_a_rootless_namespace_is_isolated_routable_and_believed(rootless):
    with netns.Namespace(rootless=True) as ns:
        done = subprocess.run(
            ns.argv([sys.executable, "-c", _INSIDE]),
            env=ns.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        etc = ns.etc_dir
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
    assert got["ns"] is not None and got["ns"].startswith("sts-userns-")
    assert got["uid"] == os.getuid()  # --map-current-user: the caller's own id
    assert got["nft"] == 0
    assert got["resolv"] == netns.RESOLV_CONF
    assert got["links"] == ["lo"]
    assert not etc.exists()  # the temporary /etc files are gone with the namespace


def test_a_marker_outside_its_namespace_is_not_believed(monkeypatch):
    # Our own marker, here: this namespace has more than a loopback (the host's).
    monkeypatch.setenv(netns.NETNS_ENV, userns.marker())
    if [n for _, n in socket.if_nameindex()] == ["lo"]:
        pytest.skip("this test process itself runs in an isolated namespace")
    assert netns.current_namespace() is None
    monkeypatch.setenv(netns.NETNS_ENV, "sts-userns-1")
    assert netns.current_namespace() is None


def test_rootless_argv_maps_the_caller_or_the_profiles_user():
    plain = userns.argv(Path("/tmp/etc"), ["true"])
    assert plain[:2] == ["unshare", "--map-current-user"]
    assert {"--net", "--mount", "--pid", "--kill-child", "--keep-caps"} <= set(plain)
    assert plain[-3:] == ["/tmp/etc", "--", "true"]
    as_root = userns.argv(Path("/tmp/etc"), ["true"], "root")
    assert as_root[1:3] == ["--map-user=0", "--map-group=0"]


def test_every_shipped_profile_says_whether_it_runs_rootless_and_postfix_says_why():
    for name in profile_names():
        p = load_profile(name)
        assert p.rootless or p.rootless_needs, name
    assert not load_profile("postfix-sts").rootless
    assert "mail_owner" in load_profile("postfix-sts").rootless_needs
    assert load_profile("chasquid").rootless and load_profile("exim-dane").rootless


def test_postfix_is_skipped_rootless_with_the_reason(rootless):
    (r,) = child.run_engine("postfix-sts", [SCENARIOS / "bb-sts-enforce-mx1-bad.toml"])
    assert r.verdict is ScenarioVerdict.SKIPPED
    assert "cannot run rootless" in r.reason and "mail_owner" in r.reason


def _rootless_run(engine: str, *names: str) -> dict[str, object]:
    reason = child.unavailable(engine)
    if reason:
        pytest.skip(f"{engine}: {reason}")
    return {r.id: r for r in child.run_engine(engine, [SCENARIOS / f"{n}.toml" for n in names])}


def _explain(r: object) -> str:
    lines = [m.render() for s in getattr(r, "steps", ()) for m in s.mismatches]
    return f"{r.verdict}: {r.reason[-2000:]}\n" + "\n".join(lines)  # type: ignore[attr-defined]


def test_chasquid_runs_rootless_and_enforces_mta_sts(rootless):
    got = _rootless_run("chasquid", "bb-sts-enforce-mx1-bad", "bb-sts-enforce-all-bad")
    assert len(got) == 2
    for r in got.values():
        assert r.verdict is ScenarioVerdict.PASSED, _explain(r)


def test_exim_runs_rootless_with_dane_a_match_delivers_a_mismatch_defers(rootless):
    got = _rootless_run("exim-dane", "bb-dane-ee", "bb-dane-ee-mismatch", "bb-dane-insecure")
    assert len(got) == 3
    for r in got.values():
        assert r.verdict is ScenarioVerdict.PASSED, _explain(r)
    delivered = got["bb-dane-ee"].steps[0].observation.deliveries[0]  # type: ignore[attr-defined]
    assert (delivered.status, delivered.verified) == ("delivered", "dane")
