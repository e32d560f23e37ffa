"""Coverage-guided fuzzing of the core parsers with atheris (libFuzzer).

Run as ``tox -e atheris`` or, with atheris installed::

    python tests/fuzz/atheris_parsers.py -runs=200000 -max_len=4096

It takes libFuzzer's options (``-runs``, ``-max_total_time``, a corpus directory,
...); with no corpus directory it starts from the policy bodies in
``fixtures/policies``. The entry points are the ones the hypothesis properties
cover: ``parse_policy`` (bytes, so UTF-8 decoding is fuzzed too), the policy fast
path against the reference reader, ``parse_sts_record``, ``parse_tlsrpt_record``,
``parse_mx_pattern`` and ``parse_tlsa``. The oracle, per input:

* only the parser's own :class:`~engine.core.errors.ParseError` may be raised; any
  other exception is a crash that libFuzzer reports with the input that caused it;
* a policy the parser accepts renders to a body that parses back equal;
* the fast path, with its tables of known lines cold and then warm, never accepts a
  body the reference reader rejects and never disagrees with it.

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
    assert policy == reference, "parse_policy disagrees with the reference reader"


def _check_text(parse: Callable[[str], object], data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse(data.decode("utf-8", "surrogateescape"))


_TARGETS = (
    _check_policy,
    lambda data: _check_text(parse_sts_record, data),
    lambda data: _check_text(parse_tlsrpt_record, data),
    lambda data: _check_text(parse_mx_pattern, data),
    lambda data: _check_text(parse_tlsa, data),
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


def main() -> None:
    """Fuzz until libFuzzer's ``-runs`` / ``-max_total_time`` limit, or a crash."""
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(".atheris-corpus")
        _seed_corpus(corpus)
        args.append(str(corpus))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
