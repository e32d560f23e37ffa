"""Worked examples: other projects' MTA-STS parsers as ``module:function`` targets.

Each function takes the input bytes and returns a truthy value (accept), returns a
falsy one or raises (reject), the callable convention of
:mod:`harness.parserfuzz.adapters`. The packages come with the ``parsers`` extra
(``pip install -e '.[parsers]'``); without them a function raises
:class:`~harness.parserfuzz.adapters.TargetError`, which ends the run with a one-line
error instead of counting every input as a reject.

Run one with::

    sts-harness fuzz-parser --kind policy \\
        --callable harness.parserfuzz.targets:postfix_mta_sts_resolver_policy

What each function reproduces, and where a choice had to be made (the bytes' decoding),
is in its docstring.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

from harness.parserfuzz.adapters import TargetError

__all__ = [
    "TARGETS",
    "checkdmarc_policy",
    "checkdmarc_txt",
    "postfix_mta_sts_resolver_policy",
    "postfix_mta_sts_resolver_txt",
]

# RFC 8461 §3.2's stated maximum, which postfix-mta-sts-resolver enforces as a bound.
_ONE_YEAR = 31_557_600


def _require(module: str, package: str) -> ModuleType:
    try:
        with warnings.catch_warnings():
            # Their dependencies' import-time deprecation warnings (checkdmarc imports
            # dnspython's DSA support) are not findings, and tests run warnings-as-errors.
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError:
        raise TargetError(
            f"{package} is not installed: pip install -e '.[parsers]' (or pip install {package})"
        ) from None


def postfix_mta_sts_resolver_policy(body: bytes) -> bool:
    """postfix-mta-sts-resolver (1.5): policy body, parse plus the resolver's checks.

    The package splits the work: ``utils.parse_mta_sts_policy`` turns the text into a
    dict (``str.splitlines``, the part before the first ``:`` as the key, a later key
    replacing an earlier one, ``mx`` values collected), and ``STSResolver.resolve`` in
    ``resolver.py`` then decides inside the same async method that does the DNS and
    HTTPS work. This function calls the parser and applies the checks that method
    applies to the dict, in its order: version ``STSv1``, ``max_age`` an ``int()`` from 0
    to one year, a mode present, ``none`` valid as is, otherwise ``testing`` or
    ``enforce`` with at least one ``mx``. The body is decoded as ASCII, what the
    resolver does for a response without a charset; a decoding error is its fetch
    error, so a reject here.

    Returns:
        True when the resolver would take the policy as valid.
    """
    utils = _require("postfix_mta_sts_resolver.utils", "postfix-mta-sts-resolver")
    policy: dict[str, Any] = utils.parse_mta_sts_policy(body.decode("ascii"))
    if policy.get("version") != "STSv1":
        return False
    max_age = int(policy.get("max_age", "-1"))  # a ValueError is the resolver's reject too
    if not 0 <= max_age <= _ONE_YEAR or "mode" not in policy:
        return False
    if policy["mode"] == "none":
        return True
    return policy["mode"] in ("testing", "enforce") and bool(policy["mx"])


def postfix_mta_sts_resolver_txt(record: bytes) -> bool:
    """postfix-mta-sts-resolver (1.5): one ``_mta-sts`` TXT record, as the resolver reads it.

    ``utils.filter_text`` drops a record that is not ASCII; the resolver keeps records
    starting with ``v=STSv1`` and needs exactly one; ``utils.parse_mta_sts_record``
    splits it on ``;`` and ``=`` (stripping whitespace), and the resolver then needs
    ``v`` to be ``STSv1`` and an ``id`` key to exist. This function does those steps
    for an RRset of this one record.

    Returns:
        True when the resolver would go on to fetch the policy.
    """
    utils = _require("postfix_mta_sts_resolver.utils", "postfix-mta-sts-resolver")
    texts = [t for t in utils.filter_text([record]) if t.startswith("v=STSv1")]
    if len(texts) != 1:
        return False
    fields: dict[str, str] = utils.parse_mta_sts_record(texts[0])
    return fields.get("v") == "STSv1" and "id" in fields


def checkdmarc_policy(body: bytes) -> object:
    """checkdmarc (6.0): ``checkdmarc.mta_sts.parse_mta_sts_policy`` on the body.

    It takes text; checkdmarc downloads the policy with ``requests`` and passes
    ``Response.text``, which for ``text/plain`` without a charset is ISO-8859-1, so the
    bytes are decoded as Latin-1 here (every byte maps to one character).

    Returns:
        The parse result (a non-empty dict, so truthy); a syntax error raises.
    """
    mta_sts = _require("checkdmarc.mta_sts", "checkdmarc")
    return mta_sts.parse_mta_sts_policy(body.decode("latin-1"))


def checkdmarc_txt(record: bytes) -> object:
    """checkdmarc (6.0): ``checkdmarc.mta_sts.parse_mta_sts_record`` on one record.

    The record is decoded as Latin-1 (lossless; checkdmarc's own DNS layer hands it
    text). Only the record parser is exercised, not ``query_mta_sts_record``'s choice
    among several records.

    Returns:
        The parse result (a non-empty dict, so truthy); a syntax error raises.
    """
    mta_sts = _require("checkdmarc.mta_sts", "checkdmarc")
    return mta_sts.parse_mta_sts_record(record.decode("latin-1"))


# (target, kind, the package it needs): what docs/conformance.md measures.
TARGETS: tuple[tuple[str, str, str], ...] = (
    (
        "harness.parserfuzz.targets:postfix_mta_sts_resolver_policy",
        "policy",
        "postfix_mta_sts_resolver",
    ),
    ("harness.parserfuzz.targets:postfix_mta_sts_resolver_txt", "txt", "postfix_mta_sts_resolver"),
    ("harness.parserfuzz.targets:checkdmarc_policy", "policy", "checkdmarc"),
    ("harness.parserfuzz.targets:checkdmarc_txt", "txt", "checkdmarc"),
)
