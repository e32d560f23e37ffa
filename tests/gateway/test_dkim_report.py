"""RFC 8460 §3 / RPT-10: mailed TLS reports are DKIM-signed, never with ``l=``, by a key
whose record declares ``s=tlsrpt`` (AMB-23); the harness check rejects anything less."""

from __future__ import annotations

import email

import dkim
import pytest

from engine.core.tlsrpt_report import report_email
from engine.gateway.gateway import Gateway, GatewaySettings
from engine.io.smtp import SmtpTimeouts
from engine.tlsrpt.dkim import REPORT_SIGNED_HEADERS, sign_report
from engine.tlsrpt.reporter import ReportSettings
from harness.adapters.gateway import dkim_key_record, new_dkim_key
from harness.dkim_check import dkim_verdict
from harness.world.dns.records import TXT
from tests.core.test_tlsrpt_report import report_for, sts_session
from tests.gateway.conftest import inject, write_config
from tests.gateway.sim import START

DAY = 86_400.0
SELECTOR, DOMAIN = "tlsrpt", "sender.example"
KEY_NAME = f"{SELECTOR}._domainkey.{DOMAIN}"


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return new_dkim_key()


def _record(key_pem: bytes) -> bytes:
    rdata = dkim_key_record(key_pem, selector=SELECTOR, domain=DOMAIN).rdata
    assert isinstance(rdata, TXT)
    return b"".join(rdata.strings)


def _lookup(records: dict[str, bytes]):
    return lambda name: [records[name]] if name in records else None


def _report_mail() -> bytes:
    report = report_for([sts_session(), sts_session(success=False)])
    msg = report_email(
        report,
        sender="tlsrpt@sender.example",
        recipients=["tlsrpt@rpt.example"],
        now=START,
        unique_id="u1",
        message_id="<u1@sender.example>",
    )
    return msg.as_bytes()


def _tags(signed: bytes) -> dict[str, str]:
    value = str(email.message_from_bytes(signed)["DKIM-Signature"])
    pairs = (t.split("=", 1) for t in "".join(value.split()).split(";") if "=" in t)
    return {k: v for k, v in pairs}


def test_key_record_declares_service_type_tlsrpt(key_pem: bytes) -> None:
    record = _record(key_pem)
    assert record.startswith(b"v=DKIM1; k=rsa; s=tlsrpt; p=")
    rdata = dkim_key_record(key_pem, selector=SELECTOR, domain=DOMAIN).rdata
    assert isinstance(rdata, TXT) and all(len(s) <= 255 for s in rdata.strings)


def test_signed_report_verifies(key_pem: bytes) -> None:
    signed = sign_report(_report_mail(), selector=SELECTOR, domain=DOMAIN, key_pem=key_pem)
    assert dkim_verdict(signed, _lookup({KEY_NAME: _record(key_pem)})) == "pass"
    assert dkim_verdict(_report_mail(), _lookup({KEY_NAME: _record(key_pem)})) == "none"


def test_signature_has_no_length_tag_and_covers_the_report_headers(key_pem: bytes) -> None:
    tags = _tags(sign_report(_report_mail(), selector=SELECTOR, domain=DOMAIN, key_pem=key_pem))
    assert "l" not in tags  # RFC 8460 §3: MUST NOT use l=
    assert tags["d"] == DOMAIN and tags["s"] == SELECTOR
    assert tags["h"].split(":") == [h.lower() for h in REPORT_SIGNED_HEADERS]


def test_tampered_body_fails_verification(key_pem: bytes) -> None:
    signed = sign_report(_report_mail(), selector=SELECTOR, domain=DOMAIN, key_pem=key_pem)
    head, sep, body = signed.partition(b"\r\n\r\n")
    assert b"example.com" in body
    tampered = head + sep + body.replace(b"example.com", b"example.org", 1)
    verdict = dkim_verdict(tampered, _lookup({KEY_NAME: _record(key_pem)}))
    assert verdict.startswith("fail"), verdict


def test_tampered_signed_header_fails_verification(key_pem: bytes) -> None:
    signed = sign_report(_report_mail(), selector=SELECTOR, domain=DOMAIN, key_pem=key_pem)
    tampered = signed.replace(b"TLS-Report-Domain: example.com", b"TLS-Report-Domain: evil.example")
    assert tampered != signed
    assert dkim_verdict(tampered, _lookup({KEY_NAME: _record(key_pem)})).startswith("fail")


def test_checker_rejects_a_length_tag(key_pem: bytes) -> None:
    msg = _report_mail()
    header = dkim.sign(
        msg,
        SELECTOR.encode(),
        DOMAIN.encode(),
        key_pem,
        include_headers=[h.encode() for h in REPORT_SIGNED_HEADERS],
        length=True,
    )
    assert "l" in _tags(header + msg)
    verdict = dkim_verdict(header + msg, _lookup({KEY_NAME: _record(key_pem)}))
    assert verdict == "fail: l= tag in DKIM-Signature"


def test_checker_requires_s_tlsrpt_on_the_key(key_pem: bytes) -> None:
    signed = sign_report(_report_mail(), selector=SELECTOR, domain=DOMAIN, key_pem=key_pem)
    star = _record(key_pem).replace(b"s=tlsrpt; ", b"")  # s= absent: the default "*"
    verdict = dkim_verdict(signed, _lookup({KEY_NAME: star}))
    assert verdict.startswith("fail") and "tlsrpt" in verdict, verdict


def test_checker_fails_without_a_key_or_with_another_key(key_pem: bytes) -> None:
    signed = sign_report(_report_mail(), selector=SELECTOR, domain=DOMAIN, key_pem=key_pem)
    assert dkim_verdict(signed, _lookup({})).startswith("fail")
    other = _record(new_dkim_key())
    assert dkim_verdict(signed, _lookup({KEY_NAME: other})).startswith("fail")


def test_checker_requires_the_reporting_domain_as_signer(key_pem: bytes) -> None:
    signed = sign_report(_report_mail(), selector=SELECTOR, domain="other.example", key_pem=key_pem)
    records = {f"{SELECTOR}._domainkey.other.example": _record(key_pem)}
    verdict = dkim_verdict(signed, _lookup(records))
    assert verdict.startswith("fail: d=other.example"), verdict


async def test_gateway_signs_the_mailed_report(sim, tmp_path, key_pem: bytes) -> None:
    from engine.config import load_config
    from engine.core.events import ListSink

    report = ReportSettings(
        delay_seconds=3600.0,
        jitter_seconds=0.0,
        contact_info="tlsrpt-noreply@sender.example",
        dkim_selector=SELECTOR,
        dkim_domain=DOMAIN,
        dkim_key_pem=key_pem,
    )
    gw = Gateway(
        load_config(write_config(sim, tmp_path)),
        clock=sim.clock,
        sink=ListSink(),
        dialer=sim.dialer(),
        smtp_timeouts=SmtpTimeouts.uniform(5.0),
        settings=GatewaySettings(report=report),
    )
    async with gw:
        await inject(gw, "alice@sender.example", ["bob@example.com"])
        assert (await gw.run_once()).delivered == 1
        sim.clock.set(START - 3600 + DAY + 3600 + 1)
        await gw.run_once()  # report built and queued for mailto
        await gw.run_once()  # the report mail goes out
        await sim.sender_mx.settle()
    [mail] = [m for m in sim.sender_mx.messages if b"TLS-Report-Domain" in m.data]
    assert "l" not in _tags(mail.data)
    assert dkim_verdict(mail.data, _lookup({KEY_NAME: _record(key_pem)})) == "pass"
