"""``sts-engine policy lint`` and ``sts-engine txt lint``: check inputs by hand.

Both print JSON on stdout (the parsed value, or the error as
:meth:`~engine.core.errors.ParseError.as_dict`) and, on failure, one human
line on stderr. Exit status: 0 valid, 1 invalid, 2 usage or I/O problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from engine.commands import UsageError, command_group
from engine.core.errors import PolicyError
from engine.core.policy import Policy, parse_policy
from engine.core.txt import (
    NoStsRecord,
    NoTlsRptRecord,
    StsRecord,
    TlsRptRecord,
    select_sts_record,
    select_tlsrpt_record,
)

if TYPE_CHECKING:
    from engine.commands import Subparsers

__all__ = ["policy_as_json", "register", "split_character_strings"]

_POLICY_EPILOG = """\
examples:
  sts-engine policy lint fixtures/policies/valid/enforce-basic.txt
  curl -s https://mta-sts.example.com/.well-known/mta-sts.txt | sts-engine policy lint -

Prints the policy as JSON (version, mode, max_age, mx, extensions) and exits 0,
or prints the error as JSON (error, reason, source, line, field, value, rule)
and exits 1.
"""

_TXT_EPILOG = """\
examples:
  sts-engine txt lint 'v=STSv1; id=20240101'
  sts-engine txt lint 'v=spf1 -all' '"v=STSv1; " "id=2024A"'
  sts-engine txt lint --tlsrpt 'v=TLSRPTv1; rua=mailto:tlsrpt@example.com'

One argument per TXT RR. An argument made of "quoted" strings is several
character-strings (joined without spaces, RFC 8461 §3.1); inside quotes, \\"
and \\\\ escape, and \\DDD is a decimal byte. An unquoted argument is one string.

Prints one line of JSON: the record (v, id, extensions; --tlsrpt: v, rua,
extensions) and exits 0, or why there is none (reason, detail, error) and exits 1.
"""


def register(subparsers: Subparsers) -> None:
    """Add ``policy lint`` and ``txt lint``."""
    policy = command_group(
        subparsers,
        "policy",
        help="MTA-STS policy bodies (RFC 8461 §3.2)",
        epilog="example:\n  sts-engine policy lint fixtures/policies/valid/enforce-basic.txt\n",
    )
    lint = policy.add_parser(
        "lint",
        help="parse a policy body and print it as JSON",
        description="Parse an MTA-STS policy body strictly (RFC 8461 §3.2).",
        epilog=_POLICY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lint.add_argument("file", metavar="FILE", help="policy body file, or - for stdin")
    lint.set_defaults(handler=_lint_policy)

    txt = command_group(
        subparsers,
        "txt",
        help="_mta-sts and _smtp._tls TXT records",
        epilog="example:\n  sts-engine txt lint 'v=STSv1; id=20240101'\n",
    )
    tlint = txt.add_parser(
        "lint",
        help="select and parse a TXT RRset and print the record as JSON",
        description="Select and parse an _mta-sts TXT RRset (RFC 8461 §3.1).",
        epilog=_TXT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tlint.add_argument("records", metavar="RR", nargs="+", help="one TXT RR per argument")
    tlint.add_argument(
        "--tlsrpt", action="store_true", help="read the RRset as _smtp._tls (RFC 8460 §3)"
    )
    tlint.set_defaults(handler=_lint_txt)


def policy_as_json(policy: Policy) -> dict[str, object]:
    """The stable JSON form of a policy printed by ``policy lint``."""
    return {
        "version": policy.version,
        "mode": policy.mode.value,
        "max_age": policy.max_age,
        "mx": [str(p) for p in policy.mx],
        "extensions": [[k, v] for k, v in policy.extensions],
    }


def _emit(obj: object) -> None:
    # One line per result: the README shows it so, and line-oriented tools read it.
    sys.stdout.write(json.dumps(obj) + "\n")


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def _lint_policy(args: argparse.Namespace) -> int:
    path: str = args.file
    body = _read(path)
    try:
        policy = parse_policy(body, source="<stdin>" if path == "-" else path)
    except PolicyError as exc:
        _emit(exc.as_dict())
        sys.stderr.write(f"sts-engine: invalid policy: {exc}\n")
        return 1
    _emit(policy_as_json(policy))
    return 0


def split_character_strings(arg: str) -> list[bytes]:
    """Split one command-line RR into its character-strings.

    Args:
        arg: ``"a" "b"`` (quoted, zone-file style escapes) or plain text (one string).

    Returns:
        The strings as bytes (text is encoded as UTF-8).

    Raises:
        UsageError: unbalanced quotes, text between quoted strings, or a bad escape.
    """
    if not arg.lstrip().startswith('"'):
        return [arg.encode("utf-8")]
    out: list[bytes] = []
    i, n = 0, len(arg)
    while True:
        while i < n and arg[i] in " \t":
            i += 1
        if i == n:
            return out
        if arg[i] != '"':
            raise UsageError(f"text outside quotes at offset {i} in {arg!r}")
        i += 1
        buf = bytearray()
        while True:
            if i == n:
                raise UsageError(f"unterminated quoted string in {arg!r}")
            c = arg[i]
            if c == '"':
                i += 1
                break
            if c == "\\":
                if arg[i + 1 : i + 4].isdigit() and len(arg[i + 1 : i + 4]) == 3:
                    code = int(arg[i + 1 : i + 4])
                    if code > 255:
                        raise UsageError(f"escape \\{arg[i + 1 : i + 4]} is not a byte")
                    buf.append(code)
                    i += 4
                    continue
                if i + 1 == n:
                    raise UsageError(f"dangling backslash in {arg!r}")
                c = arg[i + 1]
                i += 1
            buf += c.encode("utf-8")
            i += 1
        out.append(bytes(buf))


def _lint_txt(args: argparse.Namespace) -> int:
    rrset = [split_character_strings(a) for a in args.records]
    if args.tlsrpt:
        found = select_tlsrpt_record(rrset, source="<argv>")
        if not isinstance(found, NoTlsRptRecord):
            _emit({"v": "TLSRPTv1", "rua": list(found.rua), "extensions": _pairs(found)})
            return 0
        return _no_record(found)
    result = select_sts_record(rrset, source="<argv>")
    if isinstance(result, StsRecord):
        _emit({"v": "STSv1", "id": result.id, "extensions": _pairs(result)})
        return 0
    return _no_record(result)


def _pairs(record: StsRecord | TlsRptRecord) -> list[list[str]]:
    return [[k, v] for k, v in record.extensions]


def _no_record(found: NoStsRecord | NoTlsRptRecord) -> int:
    _emit(
        {
            "reason": found.reason.value,
            "detail": found.detail,
            "error": None if found.error is None else found.error.as_dict(),
        }
    )
    sys.stderr.write(f"sts-engine: no usable record ({found.reason.value}): {found.detail}\n")
    return 1
