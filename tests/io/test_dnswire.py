"""The lean TXT codec (engine.io.dnswire) against dnspython, the codec it stands in for.

Replies are built with dnspython in every shape the lean reader must either read
the same way or hand back (None): rcodes, the AD and TC bits, duplicate records,
CNAMEs, other types, authority records, EDNS options; then mutated byte by byte.
Whenever the lean reader answers, its DnsAnswer must equal the one the dnspython
path (check_reply + _classify) gives for the same bytes.
"""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.io.dns import DnsAnswer, ResolverAddress, _classify, _txt_answer
from engine.io.dnsudp import check_reply
from engine.io.dnswire import (
    qname_wire,
    query_question,
    query_wire,
    read_txt_reply,
    txt_presentation,
)

_LABEL = st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,20}", fullmatch=True)
_NAMES = st.lists(_LABEL, min_size=1, max_size=5).map(".".join)
_TYPES = st.sampled_from(["A", "AAAA", "MX", "TXT", "TLSA", "CNAME"])
_SERVER = ResolverAddress("127.0.0.1", 53, trusted=True)


def _dnspython_query(qname: str, rdtype: str) -> dns.message.QueryMessage:
    q = dns.message.make_query(qname, rdtype, want_dnssec=True, payload=1232, id=0)
    q.flags |= dns.flags.AD
    return q


@given(_NAMES, _TYPES)
def test_query_wire_is_what_dnspython_writes(qname: str, rdtype: str) -> None:
    q = _dnspython_query(qname, rdtype)
    q.id = 0
    assert query_wire(qname, rdtype) == q.to_wire()


@pytest.mark.parametrize(
    "qname",
    ["", "a..b", ".a", "a.", "x" * 64 + ".example", "caf\u00e9.example", "a b.example", "A.b"],
)
def test_names_outside_the_lean_codec_are_left_to_dnspython(qname: str) -> None:
    assert qname_wire(qname) is None
    assert query_wire(qname, "TXT") is None


def test_unknown_type_is_left_to_dnspython() -> None:
    assert query_wire("_mta-sts.example.com", "SRV") is None


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_presentation_is_dnspython_to_text(strings: list[bytes]) -> None:
    rdata = dns.rdata.from_wire(
        dns.rdataclass.IN,
        dns.rdatatype.TXT,
        b"".join(bytes([len(s)]) + s for s in strings),
        0,
        sum(1 + len(s) for s in strings),
    )
    assert txt_presentation(tuple(strings)) == rdata.to_text()


_STRINGS = st.lists(st.binary(max_size=30), min_size=1, max_size=3).map(tuple)


@st.composite
def _reply_shapes(draw: st.DrawFn) -> dict[str, object]:
    return {
        "qname": draw(_NAMES),
        "rcode": draw(st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL])),
        "ad": draw(st.booleans()),
        "tc": draw(st.integers(0, 9)) == 0,
        "txt": draw(st.lists(st.tuples(_STRINGS, st.integers(0, 3600)), max_size=4)),
        "extra": draw(st.sampled_from(["none", "cname", "a", "soa", "ede", "other-owner"])),
        "uncompressed": draw(st.booleans()),
    }


def _build_reply(shape: dict[str, object]) -> tuple[str, bytes, bytes]:
    """(qname, query wire, reply wire) in many shapes, some deliberately not simple.

    Built in the test body, not in a strategy: dnspython draws from ``random`` while
    building messages, which hypothesis forbids inside strategies.
    """
    qname = str(shape["qname"])
    query = query_wire(qname, "TXT")
    assert query is not None
    reply = dns.message.make_response(_dnspython_query(qname, "TXT"))
    reply.set_rcode(shape["rcode"])  # type: ignore[arg-type]
    if shape["ad"]:
        reply.flags |= dns.flags.AD
    if shape["tc"]:
        reply.flags |= dns.flags.TC
    owner = dns.name.from_text(qname)
    for strings, ttl in shape["txt"]:  # type: ignore[attr-defined]
        txt = dns.rdata.from_text("IN", "TXT", txt_presentation(strings))
        rrset = reply.find_rrset(
            reply.answer, owner, dns.rdataclass.IN, dns.rdatatype.TXT, create=True
        )
        rrset.add(txt, ttl=ttl)
    extra = shape["extra"]
    if extra == "cname":
        reply.answer.insert(0, dns.rrset.from_text(owner, 60, "IN", "CNAME", "target.example."))
    elif extra == "a":
        reply.answer.append(dns.rrset.from_text(owner, 60, "IN", "A", "127.0.0.1"))
    elif extra == "soa":
        reply.authority.append(
            dns.rrset.from_text("example.", 60, "IN", "SOA", "ns. host. 1 2 3 4 5")
        )
    elif extra == "ede":
        reply.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.EDEOption(6)])
    elif extra == "other-owner":
        reply.answer.append(dns.rrset.from_text("other.example.", 60, "IN", "TXT", '"x"'))
    wire = reply.to_wire()
    if shape["uncompressed"]:
        wire = wire.replace(b"\xc0\x0c", qname_wire(qname) or b"", 1)
    return qname, query, wire


def _reference(qname: str, wire: bytes) -> DnsAnswer | None:
    q = _dnspython_query(qname, "TXT")
    q.id = int.from_bytes(wire[:2], "big")  # the UDP channel matched the reply by its ID
    try:
        reply = check_reply(q, wire)
    except (dns.exception.DNSException, ValueError):
        return None
    if reply.flags & dns.flags.TC:
        return None
    return _classify(reply, qname, "TXT", _SERVER, False)


def _agree(qname: str, query: bytes, wire: bytes) -> bool:
    lean = read_txt_reply(wire, query_question(query))
    if lean is None:
        return False
    reference = _reference(qname, wire)
    assert reference is not None, "lean reader accepted what dnspython rejects"
    ours = _txt_answer(lean, qname, _SERVER)
    assert ours.status == reference.status
    assert ours.secure == reference.secure
    assert ours.txt_strings() == reference.txt_strings()
    assert ours.rrs_text == reference.rrs_text
    assert (ours.chain, ours.canonical, ours.server) == (
        reference.chain,
        reference.canonical,
        reference.server,
    )
    return True


@given(_reply_shapes())
def test_lean_reader_agrees_with_dnspython(shape: dict[str, object]) -> None:
    _agree(*_build_reply(shape))


@given(_reply_shapes(), st.data())
def test_lean_reader_agrees_on_mutated_replies(
    shape: dict[str, object], data: st.DataObject
) -> None:
    qname, query, wire = _build_reply(shape)
    i = data.draw(st.integers(0, len(wire) - 1), label="index")
    byte = data.draw(st.integers(0, 255), label="byte")
    _agree(qname, query, wire[:i] + bytes([byte]) + wire[i + 1 :])
    _agree(qname, query, wire[:i] + wire[i + 1 :])


def test_simple_reply_is_read_without_dnspython() -> None:
    query = query_wire("_mta-sts.example.com", "TXT")
    assert query is not None
    q = _dnspython_query("_mta-sts.example.com", "TXT")
    q.id = 0
    reply = dns.message.make_response(q)
    reply.flags |= dns.flags.AD
    reply.answer.append(
        dns.rrset.from_text("_mta-sts.example.com.", 60, "IN", "TXT", '"v=STSv1; id=1"')
    )
    assert _agree("_mta-sts.example.com", query, reply.to_wire())
    lean = read_txt_reply(reply.to_wire(), query_question(query))
    assert lean is not None and lean.authentic_data
    assert [r.strings for r in lean.records] == [(b"v=STSv1; id=1",)]
