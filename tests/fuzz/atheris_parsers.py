"""Coverage-guided fuzzing of the core parsers with atheris (libFuzzer).

Run as ``tox -e atheris`` or, with atheris installed::

    python tests/fuzz/atheris_parsers.py -runs=200000 -max_len=4096

It takes libFuzzer's options (``-runs``, ``-max_total_time``, a corpus directory,
...); with no corpus directory it starts from the policy bodies in
``fixtures/policies``. The entry points are the ones the hypothesis properties
cover: ``parse_policy`` (bytes, so UTF-8 decoding is fuzzed too), the policy fast
path against the reference reader, ``parse_sts_record``, ``parse_tlsrpt_record``,
``parse_mx_pattern``, ``parse_tlsa``, and the lean DNS reader
(``engine.io.dnswire.read_txt_reply``) against dnspython. The oracle, per input:

* only the parser's own :class:`~engine.core.errors.ParseError` may be raised; any
  other exception is a crash that libFuzzer reports with the input that caused it;
* a policy the parser accepts renders to a body that parses back equal;
* the fast path, with its tables of known lines cold and then warm, and the C reader
  (engine/core/_policyscan.c, when built) never accept a body the reference reader
  rejects and never disagree with it;
* a DNS reply the lean reader accepts is one dnspython decodes to the same answer.

This file is not collected by pytest (no ``test_`` prefix); atheris is installed
only by the ``atheris`` tox env.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

with atheris.instrument_imports():
    from engine.core import policy as policy_module
    from engine.core.errors import ParseError
    from engine.core.mx import parse_mx_pattern
    from engine.core.policy import parse_policy, render_policy
    from engine.core.tlsa import parse_tlsa
    from engine.core.txt import parse_sts_record, parse_tlsrpt_record
    from engine.io.dns import ResolverAddress, _classify, _txt_answer
    from engine.io.dnsudp import check_reply
    from engine.io.dnswire import query_question, query_wire, read_txt_reply

import dns.exception
import dns.flags
import dns.message
import dns.rrset

_SEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "policies"


def _check_policy(data: bytes) -> None:
    try:
        policy = parse_policy(data)
    except ParseError:
        policy = None
    if policy is not None:
        assert parse_policy(render_policy(policy)) == policy, "render/parse round trip"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        reference = policy_module._parse_lines(text, None)
    except ParseError:
        reference = None
    for attempt in ("cold", "warm"):  # the first call may teach the line tables
        fast = policy_module._parse_fast(text)
        if reference is None:
            assert fast is None, f"fast path ({attempt}) accepted a body the reference rejects"
        else:
            assert fast in (None, reference), f"fast path ({attempt}) disagrees"
    c_parse = policy_module._c_parse  # the C reader, when it is built
    if c_parse is not None:
        got = c_parse(text)
        if reference is None:
            assert got is None, "the C reader accepted a body the reference rejects"
        else:
            assert got in (None, reference), "the C reader disagrees with the reference"
    assert policy == reference, "parse_policy disagrees with the reference reader"


def _check_text(parse: Callable[[str], object], data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse(data.decode("utf-8", "surrogateescape"))


_QNAME = "_mta-sts.example.com"
_QUERY = query_wire(_QNAME, "TXT") or b""
_SERVER = ResolverAddress("127.0.0.1", 53)


def _check_txt_reply(wire: bytes) -> None:
    """The lean TXT reader never raises, and whatever it reads dnspython reads the same."""
    lean = read_txt_reply(wire, query_question(_QUERY))
    if lean is None:
        return
    q = dns.message.make_query(_QNAME, "TXT", want_dnssec=True, payload=1232)
    q.flags |= dns.flags.AD
    q.id = int.from_bytes(wire[:2], "big")
    try:
        reply = check_reply(q, wire)
    except (dns.exception.DNSException, ValueError) as exc:
        raise AssertionError(f"lean reader accepted a reply dnspython rejects: {exc}") from exc
    ours, theirs = (
        _txt_answer(lean, _QNAME, _SERVER),
        _classify(reply, _QNAME, "TXT", _SERVER, False),
    )
    assert (ours.status, ours.secure, ours.txt_strings(), ours.rrs_text) == (
        theirs.status,
        theirs.secure,
        theirs.txt_strings(),
        theirs.rrs_text,
    ), "lean reader and dnspython disagree"


def _txt_reply_seed() -> bytes:
    q = dns.message.make_query(_QNAME, "TXT", want_dnssec=True, payload=1232, id=0)
    reply = dns.message.make_response(q)
    reply.answer.append(dns.rrset.from_text(_QNAME + ".", 60, "IN", "TXT", '"v=STSv1; id=1"'))
    return reply.to_wire()


_TARGETS = (
    _check_policy,
    lambda data: _check_text(parse_sts_record, data),
    lambda data: _check_text(parse_tlsrpt_record, data),
    lambda data: _check_text(parse_mx_pattern, data),
    lambda data: _check_text(parse_tlsa, data),
    _check_txt_reply,
)


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: its first byte picks the entry point, the rest is the text."""
    if not data:
        return
    _TARGETS[data[0] % len(_TARGETS)](data[1:])


def _seed_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for n, body in enumerate(sorted(_SEEDS.glob("*/*.txt"))):
        (directory / f"seed-{n}").write_bytes(b"\x00" + body.read_bytes())
    (directory / "seed-txt-reply").write_bytes(bytes([len(_TARGETS) - 1]) + _txt_reply_seed())


def main() -> None:
    """Fuzz until libFuzzer's ``-runs`` / ``-max_total_time`` limit, or a crash."""
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(".atheris-corpus")
        _seed_corpus(corpus)
        args.append(str(corpus))
    where = policy_module._c_parse
    print(f"policy C reader: {'in use' if where is not None else 'not built'}", file=sys.stderr)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
