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
    for name, rate in rates.items():
        print(f"{name:40} {rate:>12,.0f} policies/s")
    ours = rates["ours (engine.core.policy)"]
    for name, label in (("PMSR", "ours/PMSR"), ("checkdmarc", "ours/checkdmarc")):
        theirs = next((r for n, r in rates.items() if n.startswith(name)), None)
        if theirs is not None:
            print(f"{label:40} {ours / theirs:>12.2f}x")

    def report(label: str, rate: float) -> None:
        print(f"{label:40} {rate:>12,.0f} policies/s")
        for name, ratio in (("PMSR", "  /PMSR"), ("checkdmarc", "  /checkdmarc")):
            theirs = next((r for n, r in rates.items() if n.startswith(name)), None)
            if theirs is not None:
                print(f"{ratio:40} {rate / theirs:>12.2f}x")

    # The same kind of corpus, but every mx host name is new: each body is parsed once,
    # so none of our parser's tables helps (its slowest common case).
    unseen = make_unseen_corpus(args.size * args.rounds)
    report("ours, every mx name new (one pass)", _one_pass(unseen))
    c_parse = policy_module._c_parse
    if c_parse is not None:  # the same parser without the C reader, as a pure install runs
        policy_module._c_parse = None
        try:
            pure = _rates({"pure": parse_policy}, corpus, args.rounds)["pure"]
            report("ours, pure Python (no C reader)", pure)
            unseen = make_unseen_corpus(args.size * args.rounds, seed=5321)
            report("ours, pure Python, every mx name new", _one_pass(unseen))
        finally:
            policy_module._c_parse = c_parse
    return 0


def _one_pass(corpus: list[str]) -> float:
    start = time.perf_counter()
    for body in corpus:
        parse_policy(body)
    return len(corpus) / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
