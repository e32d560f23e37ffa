"""engine.io.dialer: the endpoint map, from a file that a harness rewrites while it runs."""

from __future__ import annotations

import json
import os

import pytest

from engine.io.dialer import (
    Dialer,
    DialRefused,
    EndpointFile,
    EndpointFileError,
    parse_endpoint_map,
)


def _replace(path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # as the harness does: never half a file


def test_both_layouts_read_the_same_map():
    rows = {"endpoints": [["127.1.0.2", 25, "127.1.0.2", 40001]], "loopback_only": True}
    flat = {"127.1.0.2:25": "127.1.0.2:40001"}
    want = {("127.1.0.2", 25): ("127.1.0.2", 40001)}
    assert parse_endpoint_map(json.dumps(rows)) == want == parse_endpoint_map(json.dumps(flat))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "e.json: not JSON"),
        ("[1]", "e.json: expected an object of 'ADDR:PORT' keys"),
        ('{"endpoints": [[1, 2]]}', "e.json: endpoints row [1, 2] is not [a, p, ra, rp]"),
        ('{"127.0.0.1": "127.0.0.1:1"}', "e.json: '127.0.0.1' is not 'ADDRESS:PORT'"),
    ],
)
def test_a_bad_map_names_the_file_and_the_value(text, message):
    with pytest.raises(EndpointFileError) as info:
        parse_endpoint_map(text, "e.json")
    assert str(info.value).startswith(message)


def test_a_replaced_file_is_read_again_at_the_next_dial(tmp_path):
    path = tmp_path / "endpoints.json"
    _replace(path, {"127.1.0.2:25": "127.1.0.2:40001"})
    dialer = Dialer(endpoint_map=EndpointFile(path), loopback_only=True)
    assert dialer.resolve("127.1.0.2", 25) == ("127.1.0.2", 40001)
    assert dialer.resolve("127.1.0.3", 25) == ("127.1.0.3", 25)  # not mapped (yet)
    # A scenario step adds an MX: same size, same moment, perhaps the same inode.
    _replace(path, {"127.1.0.2:25": "127.1.0.2:40001", "127.1.0.3:25": "127.1.0.3:40002"})
    assert dialer.resolve("127.1.0.3", 25) == ("127.1.0.3", 40002)
    _replace(path, {"127.1.0.2:25": "127.1.0.2:40009"})
    assert dialer.resolve("127.1.0.2", 25) == ("127.1.0.2", 40009)
    assert len(dialer.endpoint_map) == 1


def test_a_file_that_turns_bad_or_vanishes_keeps_the_last_good_map(tmp_path):
    path = tmp_path / "endpoints.json"
    _replace(path, {"127.1.0.2:25": "127.1.0.2:40001"})
    endpoints = EndpointFile(path)
    path.write_text("{ half a fi")
    assert endpoints[("127.1.0.2", 25)] == ("127.1.0.2", 40001)
    path.unlink()
    assert dict(endpoints) == {("127.1.0.2", 25): ("127.1.0.2", 40001)}


def test_a_file_that_is_bad_at_start_is_an_error(tmp_path):
    with pytest.raises(EndpointFileError, match="No such file"):
        EndpointFile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(EndpointFileError, match="not UTF-8 text"):
        EndpointFile(tmp_path / "bad.json")


def test_the_map_never_leads_off_loopback(tmp_path):
    path = tmp_path / "endpoints.json"
    _replace(path, {"127.1.0.2:25": "192.0.2.1:25"})
    dialer = Dialer(endpoint_map=EndpointFile(path), loopback_only=True)
    with pytest.raises(DialRefused, match=r"refusing to dial '192\.0\.2\.1': loopback-only mode"):
        dialer.resolve("127.1.0.2", 25)
