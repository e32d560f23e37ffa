"""A NAT mapping must not outlive its world (harness.netns.flush_conntrack).

The black-box child changes the namespace's DNAT table for every batch (a new world,
its DNS on a new port). UDP conntrack entries outlive the table by 30 s, so a query
that reuses a recent source port went to the old, closed port and Postfix failed it
at once ("Host not found, try again": pol-3-version-value in one matrix run).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.netns import Namespace, NamespaceError, flush_conntrack, probe

# Run inside the namespace: a DNAT of 127.0.0.53:53 to one port, a query, the DNAT
# moved to another port, a query from the same socket (same source port) before and
# after the flush. Timeouts are a ceiling only: each answer or refusal comes at once.
_CHILD = r"""
import socket, subprocess, sys
from harness.netns import flush_conntrack

def dnat(port):
    table = ("table ip t {}\ndelete table ip t\ntable ip t {\n chain out {"
             " type nat hook output priority -100; policy accept;\n"
             f" ip daddr 127.0.0.53 udp dport 53 dnat to 127.9.9.9:{port}\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=table, text=True, check=True)

old, new = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
old.bind(("127.9.9.9", 0)); new.bind(("127.9.9.9", 0)); new.settimeout(5)
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.bind(("127.0.0.1", 0)); client.connect(("127.0.0.53", 53)); client.settimeout(5)
dnat(old.getsockname()[1]); client.send(b"1"); old.recv(8); old.close()
dnat(new.getsockname()[1]); client.send(b"2")
try:
    client.recv(8)
    print("stale: answered?")
except ConnectionRefusedError:
    print("stale: refused")
flush_conntrack()
client.send(b"3")
print("after flush:", new.recv(8).decode())
"""


@pytest.mark.netns
def test_a_flush_sends_a_reused_source_port_to_the_new_dnat_target():
    if not probe().ok:
        pytest.skip(probe().reason)
    with Namespace() as ns:
        done = subprocess.run(
            ns.argv([sys.executable, "-c", _CHILD]),
            env=ns.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    # Without the flush the stale mapping wins (the failure the child now prevents).
    assert done.stdout.splitlines() == ["stale: refused", "after flush: 3"]


def test_flush_conntrack_refuses_outside_a_harness_namespace(monkeypatch):
    monkeypatch.delenv("STS_HARNESS_NETNS", raising=False)
    with pytest.raises(NamespaceError, match="outside a harness namespace"):
        flush_conntrack()
