"""A realistic, deterministic corpus of MTA-STS policy bodies for bench/bench_parse.py.

Every body is valid under RFC 8461 §3.2. The mix follows what is published in
the wild: mostly enforce and testing, a few none; one to eight mx lines, some
with ``*.`` wildcards; LF or CRLF endings, sometimes no final newline; a
share of bodies with extension lines; max_age from an hour to a year, a few
with leading zeros.
"""

from __future__ import annotations

import random

__all__ = ["make_corpus", "make_unseen_corpus"]

_PROVIDERS = [
    "mx{n}.{d}",
    "mail{n}.{d}",
    "{d}-com.mail.protection.outlook.com",
    "aspmx.l.google.com",
    "alt{n}.aspmx.l.google.com",
    "*.{d}",
    "*.mx.{d}",
    "inbound{n}.smtp.hoster.example",
]
_DOMAINS = [
    "example.com",
    "example.org",
    "mail-host.example.net",
    "shop.example",
    "xn--bcher-kva.example",
]
_EXTENSIONS = [
    "policy_id: 20240101",
    "contact: postmaster@example.com",
    "note: rotated quarterly",
    "x-generator: mta-sts-publisher 2.1",
]


def make_corpus(size: int = 400, seed: int = 8461) -> list[str]:
    """``size`` valid policy bodies, the same ones for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(size):
        domain = rng.choice(_DOMAINS)
        mode = rng.choices(["enforce", "testing", "none"], weights=[6, 3, 1])[0]
        n_mx = rng.randint(1, 8)
        mx = [rng.choice(_PROVIDERS).format(n=i + 1, d=domain) for i in range(n_mx)]
        age = rng.choice([3600, 86400, 604800, 1209600, 2592000, 31557600])
        age_text = str(age).zfill(10) if rng.random() < 0.1 else str(age)
        lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx]
        lines.append(f"max_age: {age_text}")
        if rng.random() < 0.3:
            lines += rng.sample(_EXTENSIONS, rng.randint(1, 2))
        end = "\r\n" if rng.random() < 0.3 else "\n"
        body = end.join(lines)
        if rng.random() < 0.8:
            body += end
        out.append(body)
    return out


def make_unseen_corpus(size: int, seed: int = 7672) -> list[str]:
    """``size`` bodies like :func:`make_corpus`'s, but no mx host name occurs twice.

    Our parser remembers lines it has found valid (bounded tables); this corpus shows
    its speed when none of them helps, i.e. every mx pattern is read for the first time.
    The seed is part of each name, so corpora made with different seeds share none.
    """
    out = []
    for i, body in enumerate(make_corpus(size, seed)):
        lines = body.split("\n")
        for n, line in enumerate(lines):
            if line.startswith("mx: "):
                value = line[4:]
                wild = "*." if value.startswith("*.") else ""
                lines[n] = f"mx: {wild}u{seed}-{i}-{n}.{value.removeprefix('*.')}"
        out.append("\n".join(lines))
    return out
