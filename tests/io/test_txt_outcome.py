"""engine.delivery.mtasts.txt_outcome: what a ``_mta-sts`` TXT answer means (valid sets kept)."""

from __future__ import annotations

from engine.core.cache import TxtAbsent, TxtFound, TxtInvalid, TxtTempError
from engine.delivery.mtasts import txt_outcome
from engine.io.dns import DnsAnswer, DnsStatus
from engine.io.dnswire import TxtRdata


def _answer(*records: bytes, qname: str = "_mta-sts.example.com") -> DnsAnswer:
    return DnsAnswer(qname, "TXT", DnsStatus.OK, records=tuple(TxtRdata((r,)) for r in records))


def test_valid_record_is_found_and_the_same_set_gives_the_same_outcome() -> None:
    first = txt_outcome(_answer(b"v=STSv1; id=abc123", b"v=spf1 -all"))
    again = txt_outcome(_answer(b"v=STSv1; id=abc123", b"v=spf1 -all"))
    assert isinstance(first, TxtFound) and first.record.id == "abc123"
    assert again == first


def test_a_changed_record_is_read_again() -> None:
    txt_outcome(_answer(b"v=STSv1; id=one"))
    changed = txt_outcome(_answer(b"v=STSv1; id=two"))
    assert isinstance(changed, TxtFound) and changed.record.id == "two"


def test_invalid_record_names_the_owner_it_came_from_every_time() -> None:
    for qname in ("_mta-sts.a.example", "_mta-sts.b.example"):
        outcome = txt_outcome(_answer(b"v=STSv1; id=bad!", qname=qname))
        assert isinstance(outcome, TxtInvalid)
        assert outcome.why.error is not None and outcome.why.error.source == qname


def test_absent_and_temporary_answers_are_not_found() -> None:
    nodata = DnsAnswer("_mta-sts.example.com", "TXT", DnsStatus.NODATA)
    servfail = DnsAnswer("_mta-sts.example.com", "TXT", DnsStatus.SERVFAIL, detail="SERVFAIL")
    assert isinstance(txt_outcome(nodata), TxtAbsent)
    assert isinstance(txt_outcome(servfail), TxtTempError)
