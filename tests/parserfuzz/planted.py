"""Targets with known behaviour, importable as ``tests.parserfuzz.planted:NAME``."""

from __future__ import annotations

from engine.core.errors import PolicyError
from engine.core.policy import parse_policy
from harness.parserfuzz import Kind, judge


def agreeing_policy(data: bytes) -> bool:
    """Our own reader: agrees with the oracle on every input."""
    return judge(Kind.POLICY, data).accept


def agreeing_txt(data: bytes) -> bool:
    """Our own TXT reader."""
    return judge(Kind.TXT, data).accept


def any_mode(data: bytes) -> bool:
    """Our reader, except that any mode value is taken (the planted leniency)."""
    try:
        parse_policy(data)
    except PolicyError as exc:
        return exc.rule == "POL-4"
    return True


def no_long_max_age(data: bytes) -> object:
    """Our reader, except that a max_age above one year is refused (as some readers do)."""
    policy = parse_policy(data)  # raises: reject
    text = data.decode("utf-8")
    ages = [
        ln.partition(":")[2].strip(" \t\r") for ln in text.split("\n") if ln.startswith("max_age:")
    ]
    return int(ages[0]) <= 31_557_600 and policy


# Not callable: load_callable refuses it.
not_callable = 42
