"""``sts-engine send``: its first line says what it runs with; user mistakes are one line
(issue 16 items 1, 3, 4 and 5).

The world runs in the test's event loop and ``main(argv)`` in a worker thread, as in
``test_cli_send_check.py``; the warning check runs ``send`` as a process, as a user does.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from engine.cli import main
from engine.core.pkix import load_certificate
from engine.delivery.agent import load_roots

ROOT = Path(__file__).resolve().parents[2]
W_STS = tomllib.loads((ROOT / "fixtures/worlds/w-sts.toml").read_text())
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"
ENVELOPE = ["--from", "a@sender.example", "--to", "rcpt@example.com"]


def _world_args(w: Any, tmp_path: Path) -> list[str]:
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(
        json.dumps({f"{a}:{p}": f"{ra}:{rp}" for (a, p), (ra, rp) in w.endpoint_map.items()})
    )
    host, port = w.resolver
    return [
        "--resolver",
        f"{host}:{port}",
        "--ca-file",
        str(w.ca_file),
        "--endpoints",
        str(endpoints),
    ]


async def _send(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> tuple[int, str, str]:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    status = await asyncio.to_thread(main, ["send", *argv, str(message)])
    out, err = capsys.readouterr()
    return status, out, err


async def test_without_config_the_first_line_says_built_in_defaults_and_no_mta_sts(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: `send` as `sts-harness serve` used to print it, against enforce.
    async with world(W_STS, now=time.time()) as w:
        status, out, _ = await _send([*_world_args(w, tmp_path), *ENVELOPE], capsys, tmp_path)
    assert status == 0
    first = out.splitlines()[0]
    assert first.endswith(
        "Info: Destination Controls for the domain (example.com): TLS no, DANE none, "
        "MTA-STS off (from built-in defaults: no --config)"
    )


@pytest.mark.parametrize(
    ("entry", "source"),
    [
        (
            '[destination_controls."example.com"]\ntls = "preferred"\nmta_sts = true\n',
            "profile example.com",
        ),
        ("", "Default profile"),
    ],
)
async def test_with_config_the_first_line_names_the_file_and_profile(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, source: str
) -> None:
    config = tmp_path / "engine.toml"
    # The Default profile with MTA-STS on makes the engine warn: the settings come first.
    config.write_text(
        '[destination_controls.default]\ntls = "preferred"\ndane = "opportunistic"\n'
        f"mta_sts = true\n{entry}[dns]\ntimeout = 2.0\n"
    )
    async with world(W_STS, now=time.time()) as w:
        argv = ["--config", str(config), *_world_args(w, tmp_path), *ENVELOPE, "--json"]
        status, out, err = await _send(argv, capsys, tmp_path)
    assert status == 0
    assert err.splitlines()[0].endswith(  # a domain entry inherits what it leaves out
        "Info: Destination Controls for the domain (example.com): TLS preferred, "
        f"DANE opportunistic, MTA-STS on (from {config}, {source})"
    )
    assert "Applying MTA-STS policy for the domain (example.com)" in err
    # --json: stdout holds the report and nothing else.
    assert json.loads(out)["recipients"][0]["verification"] == "pkix"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["--resolver", "127.0.0.1:99999", *ENVELOPE],
            "port 99999 of '127.0.0.1:99999' is not in 1..65535",
        ),
        (
            ["--resolver", "dns.example:53", *ENVELOPE],
            "'dns.example' in 'dns.example:53' is not an IP address",
        ),
        (["--resolver", "127.0.0.1", *ENVELOPE], "expected HOST:PORT, got '127.0.0.1'"),
        (["--smtp-port", "0", *ENVELOPE], "expected a port number 1..65535, got '0'"),
        (
            ["--from", "a@sender.example", "--to", "not-an-address"],
            "--to 'not-an-address': Bad recipient address syntax: no domain",
        ),
        (
            ["--from", "a b@x.example", "--to", "b@example.com"],
            "--from 'a b@x.example': Bad sender address syntax",
        ),
        (
            ["--from", "a@x.example", "--to", "b@exa mple.com"],
            "--to 'b@exa mple.com': Bad recipient address syntax",
        ),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], words: str
) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    assert main(["send", *argv, str(message)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("command", ["send", "check"])
@pytest.mark.parametrize(
    "content",
    [b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
    ids=["text", "garbled-block"],
)
def test_a_ca_file_that_is_not_pem_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, content: bytes
) -> None:
    bad = tmp_path / "roots.pem"
    bad.write_bytes(content)
    tail = [*ENVELOPE, "-"] if command == "send" else ["example.com"]
    argv = [command, "--resolver", "127.0.0.1:9", "--ca-file", str(bad), *tail]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"--ca-file '{bad}': no PEM certificate in it" in err and "Traceback" not in err


def _zero_serial_pem() -> tuple[bytes, bytes]:
    """A CA certificate whose serial is 0 (as several roots of Debian's bundle are), and
    the certificate it was made from. The signature no longer matches: reading it is all
    this is for."""
    import trustme

    der = ssl.PEM_cert_to_DER_cert(trustme.CA().cert_pem.bytes().decode())
    # SEQUENCE { SEQUENCE (tbs) { [0] version, INTEGER serial, ... } ...}, long-form lengths
    assert der[0:2] == der[4:6] == b"\x30\x82" and der[8:13] == bytes.fromhex("a003020102")
    assert der[13] == 0x02
    n = der[14]
    cut = n - 1  # INTEGER 0 is one content octet
    outer, tbs = int.from_bytes(der[2:4], "big") - cut, int.from_bytes(der[6:8], "big") - cut
    patched = (
        b"\x30\x82" + outer.to_bytes(2, "big") + b"\x30\x82" + tbs.to_bytes(2, "big")
        + der[8:13] + b"\x02\x01\x00" + der[15 + n :]
    )  # fmt: skip
    return patched, der


def test_roots_with_a_zero_serial_are_kept_and_warn_nothing(tmp_path: Path) -> None:
    patched, plain = _zero_serial_pem()
    with pytest.warns(Warning, match="serial number which wasn't positive"):
        x509.load_der_x509_certificate(patched)  # the negative control: cryptography warns
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ssl.DER_cert_to_PEM_cert(patched) + ssl.DER_cert_to_PEM_cert(plain))
    before = list(warnings.filters)
    roots = load_roots(bundle)  # filterwarnings = error: any warning here fails the test
    assert roots == [patched, plain]
    # What verification does with a root, read again: no warning either (parsed once).
    assert load_certificate(patched).subject == load_certificate(plain).subject
    assert list(warnings.filters) == before  # nothing left silenced for anyone else


def test_send_with_the_system_roots_prints_no_warning(tmp_path: Path) -> None:
    # Issue 16 item 5: every `send` without --ca-file printed CryptographyDeprecationWarning.
    config = tmp_path / "engine.toml"
    config.write_text('[tls]\nca_file = "system"\n[dns]\ntimeout = 0.5\n')
    done = subprocess.run(
        [sys.executable, "-W", "default", "-m", "engine.cli", "send", "--config", str(config),
         "--resolver", "127.0.0.1:9", *ENVELOPE, "-"],
        input=MESSAGE, capture_output=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 75  # nothing answers at the discard port: deferred
    assert b"Warning" not in done.stderr, done.stderr.decode()
