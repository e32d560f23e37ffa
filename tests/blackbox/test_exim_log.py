"""The exim-dane profile's log map on lines Exim 4.96 wrote in the harness's runs."""

from __future__ import annotations

from harness.adapters.blackbox.drivers import driver_for
from harness.adapters.blackbox.profile import load_profile

QID = "1xae8u-0007dY-05"
T = "2026-12-07 19:12:56"
DELIVERED = (
    f"{T} {QID} => third@s1.example.com R=dnslookup T=remote_smtp S=453 "
    "H=mx2.s1.hoster.example [127.10.0.3]:25 "
    'X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=dane C="250 2.0.0 OK"'
)
# A further recipient of the same SMTP transaction (found by sts-harness fuzz).
ALSO = (
    f"{T} {QID} -> rcpt@s1.example.com R=dnslookup T=remote_smtp S=453 "
    "H=mx2.s1.hoster.example [127.10.0.3]:25 "
    'X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=dane C="250 2.0.0 OK"'
)
DEFERRED = (
    f"{T} {QID} == rcpt@s5.example.com R=dnslookup T=remote_smtp defer (-36): "
    "DANE error: tlsa lookup DEFER"
)
BOUNCED = f"{T} {QID} ** rcpt@s68.example.com: all relevant MX records point to non-existent hosts"
CLEAR = (
    f"{T} {QID} => rcpt@s247.example.com R=dnslookup T=remote_smtp S=450 "
    'H=mx1.s247.example.com [127.10.0.75]:25 C="250 2.0.0 OK: queued"'
)


def _outcomes(*lines: str) -> dict[str, dict[str, object]]:
    driver = driver_for(load_profile("exim-dane"))
    events = [e for line in lines for e in driver.parse("log", line)]
    return {k: dict(v) for k, v in driver.settle(QID, ["x"], events).items()}


def test_every_recipient_of_a_transaction_is_settled_with_its_mx_and_trust():
    got = _outcomes(DELIVERED, ALSO)
    assert set(got) == {"third@s1.example.com", "rcpt@s1.example.com"}
    for f in got.values():
        assert (f["status"], f["mx"], f["trust"]) == ("delivered", "mx2.s1.hoster.example", "dane")


def test_deferrals_and_bounces_name_the_recipient_and_why():
    got = _outcomes(DEFERRED, BOUNCED)
    assert got["rcpt@s5.example.com"]["status"] == "deferred"
    assert "tlsa lookup DEFER" in str(got["rcpt@s5.example.com"]["reason"])
    assert got["rcpt@s68.example.com"]["status"] == "bounced"  # no trailing colon
    assert "non-existent hosts" in str(got["rcpt@s68.example.com"]["reason"])


def test_a_delivery_line_says_its_trust_as_a_tls_event_too():
    driver = driver_for(load_profile("exim-dane"))
    codes = [(e.code, e.fields.get("trust")) for e in driver.parse("log", DELIVERED)]
    assert codes == [("outcome", "dane"), ("tls.established", "dane")]
    # In clear (no X=, no CV=): an outcome and no TLS event.
    assert [e.code for e in driver.parse("log", CLEAR)] == ["outcome"]
