"""``sts-harness profiles``: the certificate profiles a world's hosts can serve.

A host's ``cert = "..."`` (and ``rotate_cert``'s ``profile``) takes one of these names.
The text is made from :data:`certs.profiles.PROFILE_SPECS`, the table the certificate
factory itself reads, so a new profile shows up here (and in ``scenarios/README.md``,
which ``--markdown`` writes and a test compares) without another edit.
"""

from __future__ import annotations

import argparse
from typing import Any

from certs.profiles import PROFILE_SPECS, CertProfile, IssuerKind, NameRule, ProfileSpec, Validity

__all__ = ["markdown_table", "profile_rows", "register"]

_EXAMPLE = """example:
  sts-harness profiles
  sts-harness profiles --markdown      (the table of scenarios/README.md)

A world uses them as  [hosts."mx1.example.com"] cert = "expired"  and a step as
rotate_cert = { host = "mx1.example.com", profile = "self-signed" }.
(Engine profiles, the real MTAs a run can drive, are another thing: sts-harness profile check.)
"""

_ISSUER = {
    IssuerKind.TRUSTED_ROOT: "signed by the world's trusted root",
    IssuerKind.UNTRUSTED_ROOT: "signed by a root the sender does not trust",
    IssuerKind.INTERMEDIATE: "signed by an intermediate CA below the trusted root",
    IssuerKind.SELF: "self-signed",
    IssuerKind.BELOW_PATHLEN0: "signed two CAs below a CA with pathLenConstraint 0",
    IssuerKind.LONG_CHAIN: "signed at the end of a chain of 101 CAs below the trusted root",
}
_NAMES = {
    NameRule.REQUESTED: "the host's own names in the SAN",
    NameRule.WRONG: "only the name wrong-name.invalid",
    NameRule.WILDCARD: "a wildcard name in place of each name (the parent domain's)",
    NameRule.CN_ONLY: "the host's name in the subject CN only, no SAN",
}


def _validity(v: Validity) -> str:
    if v.end.total_seconds() < 0:
        return "expired"
    if v.start.total_seconds() > 0:
        return "not yet valid"
    return "current"


def _describe(spec: ProfileSpec) -> str:
    if spec.sends_intermediate:
        sent = "; the server sends the CAs below the root too"
    elif spec.issuer is IssuerKind.INTERMEDIATE:
        sent = "; the server does not send the intermediate"
    else:
        sent = ""
    return f"{_ISSUER[spec.issuer]}, {_NAMES[spec.names]}, {_validity(spec.validity)}{sent}"


def profile_rows() -> list[tuple[str, str, str]]:
    """(name, what it is, what a strict sender does with it) per profile."""
    return [
        (profile.value, _describe(spec), f"refused ({spec.breaks})" if spec.breaks else "accepted")
        for profile, spec in PROFILE_SPECS.items()
        if isinstance(profile, CertProfile)
    ]


def markdown_table() -> str:
    """The profiles as a Markdown table (``scenarios/README.md`` holds it)."""
    rows = ["| profile | what the host serves | a strict sender |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | {what} | {breaks} |" for name, what, breaks in profile_rows()]
    return "\n".join(rows) + "\n"


def register(subparsers: Any) -> None:
    """Add the ``profiles`` command."""
    p = subparsers.add_parser(
        "profiles",
        help="list the certificate profiles a world's hosts can serve (not engine profiles)",
        description="List the certificate profiles (cert = NAME in a world, profile = NAME "
        "in rotate_cert): what each one is and what a strict sender refuses it for.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table(), end="")
        return 0
    width = max(len(name) for name, _, _ in profile_rows())
    for name, what, breaks in profile_rows():
        print(f"{name:<{width}}  {what}")
        print(f"{'':<{width}}  a strict sender: {breaks}")
    return 0
