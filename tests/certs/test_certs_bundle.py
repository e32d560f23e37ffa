"""write_bundle: files a black-box MTA can load, verified by a real handshake."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest

from certs import CertError, CertFactory, CertProfile, loopback_handshake, write_bundle


def test_bundle_files_work_end_to_end(tmp_path: Path) -> None:
    factory = CertFactory()
    issued = {
        "mx1.example.com": factory.issue("mx1.example.com", profile=CertProfile.VIA_INTERMEDIATE),
        "mx2.example.com": factory.issue("mx2.example.com", profile=CertProfile.EXPIRED),
    }
    paths = write_bundle(tmp_path / "tls", issued)
    assert paths.ca_file.read_bytes() == factory.ca_bundle_pem
    assert set(paths.hosts) == set(issued)
    for host, files in paths.hosts.items():
        assert files.chain_file.read_bytes() == issued[host].chain_pem
        assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600

    mx1 = paths.hosts["mx1.example.com"]
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(mx1.chain_file, mx1.key_file)
    client = ssl.create_default_context(cafile=str(paths.ca_file))
    result = loopback_handshake(server, client, "mx1.example.com")
    assert result.ok, result.client_error
    # Negative control: the same files, a host name they do not cover.
    result = loopback_handshake(server, client, "mx2.example.com")
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)


def test_rewrite_tightens_key_mode(tmp_path: Path) -> None:
    cert = CertFactory().issue("mx1.example.com")
    key = tmp_path / "mx1.example.com.key.pem"
    key.write_bytes(b"old")
    key.chmod(0o644)
    write_bundle(tmp_path, {"mx1.example.com": cert})
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == cert.private_key_pem


def test_empty_bundle_raises(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="at least one"):
        write_bundle(tmp_path, {})


@pytest.mark.parametrize("host", ["../evil", "a/b", ".hidden", ""])
def test_unsafe_host_key_raises(tmp_path: Path, host: str) -> None:
    cert = CertFactory().issue("mx1.example.com")
    with pytest.raises(CertError, match="cannot be a file name"):
        write_bundle(tmp_path, {host: cert})


def test_mixed_factories_raise(tmp_path: Path) -> None:
    a = CertFactory().issue("mx1.example.com")
    b = CertFactory().issue("mx2.example.com")
    with pytest.raises(CertError, match="different trusted roots"):
        write_bundle(tmp_path, {"mx1": a, "mx2": b})
