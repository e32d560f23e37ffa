"""What a message asks of the next hop: 8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531)."""

from __future__ import annotations

import pytest

from engine.core.transfer import TransferNeeds, plan_transfer, transfer_needs

ASCII = b"Subject: hi\r\n\r\nhello\r\n"
EIGHT_BIT_BODY = "Subject: hi\r\n\r\nGrüße\r\n".encode()
UTF8_HEADER = "Subject: Grüße\r\n\r\nhello\r\n".encode()
LATIN1_HEADER = "Subject: Grüße\r\n\r\nhello\r\n".encode("latin-1")  # legacy, not UTF-8
BARE_LF_UTF8_HEADER = "Subject: Grüße\n\nhello\n".encode()


@pytest.mark.parametrize(
    ("mail_from", "rcpts", "data", "needs"),
    [
        ("a@b.example", ["c@d.example"], ASCII, TransferNeeds()),
        ("a@b.example", ["c@d.example"], EIGHT_BIT_BODY, TransferNeeds(eight_bit=True)),
        ("a@b.example", ["c@d.example"], UTF8_HEADER, TransferNeeds(True, False, True)),
        ("a@b.example", ["c@d.example"], BARE_LF_UTF8_HEADER, TransferNeeds(True, False, True)),
        # Raw Latin-1 in a header is 8-bit data, not an internationalised message.
        ("a@b.example", ["c@d.example"], LATIN1_HEADER, TransferNeeds(eight_bit=True)),
        # A non-ASCII domain travels in A-labels; only a local part needs SMTPUTF8.
        ("a@b.example", ["c@bücher.example"], ASCII, TransferNeeds()),
        ("a@b.example", ["jörg@d.example"], ASCII, TransferNeeds(utf8_addresses=True)),
        ("jörg@b.example", ["c@d.example"], ASCII, TransferNeeds(utf8_addresses=True)),
        ("", ["c@d.example"], ASCII, TransferNeeds()),  # the null reverse-path
    ],
)
def test_transfer_needs_read_from_envelope_and_bytes(mail_from, rcpts, data, needs):
    assert transfer_needs(mail_from, rcpts, data) == needs


@pytest.mark.parametrize(
    ("needs", "offered", "parameters", "status"),
    [
        (TransferNeeds(), set(), (), None),
        (TransferNeeds(), {"8BITMIME", "SMTPUTF8"}, (), None),
        (TransferNeeds(eight_bit=True), {"8BITMIME"}, ("BODY=8BITMIME",), None),
        (TransferNeeds(eight_bit=True), set(), (), "5.6.3"),
        (TransferNeeds(utf8_addresses=True), {"8BITMIME", "SMTPUTF8"}, ("SMTPUTF8",), None),
        (TransferNeeds(utf8_addresses=True), {"8BITMIME"}, (), "5.6.7"),
        (TransferNeeds(True, False, True), {"8BITMIME"}, (), "5.6.9"),
        (
            TransferNeeds(True, True, True),
            {"8BITMIME", "SMTPUTF8"},
            ("BODY=8BITMIME", "SMTPUTF8"),
            None,
        ),
        # A server that offers SMTPUTF8 without 8BITMIME (RFC 6531 §3.1 says it must not):
        # 8-bit data still needs 8BITMIME.
        (TransferNeeds(True, False, True), {"SMTPUTF8"}, (), "5.6.3"),
    ],
)
def test_plan_transfer_labels_or_refuses(needs, offered, parameters, status):
    plan = plan_transfer(needs, offered)
    assert (plan.parameters, plan.status, plan.sendable) == (parameters, status, status is None)
    if status is not None:
        assert plan.reason and ("RFC 6152" in plan.reason or "RFC 6531" in plan.reason)
