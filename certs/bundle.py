"""Certificates on disk, for black-box MTAs (Postfix and friends) that read files.

Layout written into ``directory``::

    ca.pem                  the trusted root (the sender's CAfile)
    <host>.key.pem          the host's private key (mode 0600)
    <host>.chain.pem        the chain the host sends, leaf first
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from certs.errors import CertError
from certs.issued import IssuedCert

__all__ = ["BundlePaths", "HostFiles", "write_bundle"]

# Host keys become file names: no separators, no leading dot, nothing to escape.
_SAFE_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class HostFiles:
    """One host's files.

    Attributes:
        key_file: the private key, PEM.
        chain_file: the sent chain, PEM, leaf first.
    """

    key_file: Path
    chain_file: Path


@dataclass(frozen=True, slots=True)
class BundlePaths:
    """What :func:`write_bundle` wrote.

    Attributes:
        ca_file: the trusted root, PEM.
        hosts: per host key of the input mapping, its :class:`HostFiles`.
    """

    ca_file: Path
    hosts: Mapping[str, HostFiles]


def write_bundle(
    directory: str | os.PathLike[str], issued: Mapping[str, IssuedCert]
) -> BundlePaths:
    """Write the trusted root and each host's key and chain into ``directory``.

    Args:
        directory: an existing directory (created if missing); files in it are overwritten.
        issued: host name (used as the file-name stem) to its certificate. All must come
            from factories with the same trusted root.

    Returns:
        The paths written.

    Raises:
        CertError: an empty mapping, a host key unfit for a file name, or certificates
            that disagree about the trusted root.
    """
    if not issued:
        raise CertError("write_bundle() needs at least one certificate", value=issued)
    roots = {cert.trusted_root_pem for cert in issued.values()}
    if len(roots) != 1:
        raise CertError(
            f"certificates come from {len(roots)} factories with different trusted roots",
            value=sorted(issued),
        )
    for host in issued:
        if not _SAFE_HOST.fullmatch(host):
            raise CertError(f"host key {host!r} cannot be a file name", value=host)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_file = out / "ca.pem"
    ca_file.write_bytes(roots.pop())
    hosts: dict[str, HostFiles] = {}
    for host, cert in issued.items():
        files = HostFiles(out / f"{host}.key.pem", out / f"{host}.chain.pem")
        fd = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already exists
        with os.fdopen(fd, "wb") as f:
            f.write(cert.private_key_pem)
        files.chain_file.write_bytes(cert.chain_pem)
        hosts[host] = files
    return BundlePaths(ca_file=ca_file, hosts=hosts)
