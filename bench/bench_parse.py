"""Policy-body parsing speed: ours against postfix-mta-sts-resolver and checkdmarc.

Run as ``python bench/bench_parse.py [--rounds N] [--size N]``. Prints policies/second
for each parser and the ratios ours/PMSR and ours/checkdmarc. A competitor that is
not installed is skipped with a message (``pip install -e '.[bench]'``).
Benchmarks print; they never assert wall times.

"ours" is ``parse_policy`` as installed: with the C reader
(engine/core/_policyscan.c) when it was built, which the first line says. The same
run also times the pure-Python readers alone, as on a machine without a compiler.

Our parser remembers the mx patterns it has built (and, in pure Python, whole lines
it has found valid) in small bounded tables, so where the corpus is parsed over and
over, each mx name is turned into an object once. That is the steady state of an MTA
whose peers share a few providers' names, but not of a first read, so one more line
times a single pass over bodies in which no mx name repeats.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_policies import make_corpus, make_unseen_corpus

from engine.core import policy as policy_module
from engine.core.policy import parse_policy

Parser = Callable[[str], object]


def _competitor(module: str, attr: str, package: str) -> Parser | None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        print(f"skip {package}: not installed ({exc}); pip install {package}")
        return None
    fn: Parser = getattr(mod, attr)
    return fn


def _pass(parse: Parser, corpus: list[str]) -> float:
    start = time.perf_counter()
    for body in corpus:
        parse(body)
    return time.perf_counter() - start


def _rates(parsers: dict[str, Parser], corpus: list[str], rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` policies/second, passes interleaved so load hits all alike."""
    for parse in parsers.values():  # warm up, and check the whole corpus is accepted
        for body in corpus:
            parse(body)
    best = dict.fromkeys(parsers, float("inf"))
    for _ in range(rounds):
        for name, parse in parsers.items():
            best[name] = min(best[name], _pass(parse, corpus))
    return {name: len(corpus) / seconds for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30, help="timed passes; the best is kept")
    ap.add_argument("--size", type=int, default=400, help="corpus size")
    ap.add_argument("--first-reads", type=int, default=5, help="first-read passes; best kept")
    args = ap.parse_args(argv)
    corpus = make_corpus(args.size)
    reader = "C reader built" if policy_module._c_parse is not None else "pure Python (no C)"
    print(f"corpus: {len(corpus)} policy bodies, best of {args.rounds} passes; ours: {reader}")
    parsers: dict[str, Parser | None] = {
        "ours (engine.core.policy)": parse_policy,
        "PMSR (postfix_mta_sts_resolver.utils)": _competitor(
            "postfix_mta_sts_resolver.utils", "parse_mta_sts_policy", "postfix-mta-sts-resolver"
        ),
        "checkdmarc (checkdmarc.mta_sts)": _competitor(
            "checkdmarc.mta_sts", "parse_mta_sts_policy", "checkdmarc"
        ),
    }
    present = {name: parse for name, parse in parsers.items() if parse is not None}
    rates = _rates(present, corpus, args.rounds)
    _report(rates, "ours (engine.core.policy)", rates)

    # A first read: N distinct bodies, each parsed once, in which no mx name occurs twice,
    # so none of our parser's tables helps (its slowest common case). Every parser reads
    # its own fresh copy (a body not yet in the CPU's caches), ours with names it has
    # never seen; the best of --first-reads passes is kept.
    size = args.size * 10
    seeds = iter(range(10_000, 1_000_000))
    first = dict.fromkeys(present, 0.0)
    for _ in range(args.first_reads):
        for name, parse in present.items():
            first[name] = max(first[name], _one_pass(parse, make_unseen_corpus(size, next(seeds))))
    print(
        f"first reads: {size} distinct bodies, every mx name new, one pass each, best of "
        f"{args.first_reads}"
    )
    _report(first, "ours (engine.core.policy)", first)
    c_parse = policy_module._c_parse
    if c_parse is not None:  # the same parser without the C reader, as a pure install runs
        policy_module._c_parse = None
        try:
            pure = _rates({"pure": parse_policy}, corpus, args.rounds)["pure"]
            pure_first = max(
                _one_pass(parse_policy, make_unseen_corpus(size, next(seeds)))
                for _ in range(args.first_reads)
            )
        finally:
            policy_module._c_parse = c_parse
        print("ours without the C reader (pure Python), against the competitors above")
        _report({"pure Python, corpus over and over": pure}, None, rates)
        _report({"pure Python, first reads": pure_first}, None, first)
    return 0


def _report(rates: dict[str, float], ours: str | None, against: dict[str, float]) -> None:
    """Print each rate, then ours (or the one rate given) over each competitor's."""
    for name, rate in rates.items():
        print(f"{name:40} {rate:>12,.0f} policies/s")
    mine = rates[ours] if ours is not None else next(iter(rates.values()))
    for name, label in (("PMSR", "ours/PMSR"), ("checkdmarc", "ours/checkdmarc")):
        theirs = next((r for n, r in against.items() if n.startswith(name)), None)
        if theirs is not None:
            print(f"{label:40} {mine / theirs:>12.2f}x")


def _one_pass(parse: Parser, corpus: list[str]) -> float:
    start = time.perf_counter()
    for body in corpus:
        parse(body)
    return len(corpus) / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
