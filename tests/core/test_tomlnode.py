"""engine.core.tomlnode: every value checked, every error naming file, key path and value."""

from __future__ import annotations

from enum import StrEnum

import pytest

from engine.core.errors import ConfigError
from engine.core.tomlnode import TomlNode, key_path

DOC = """
name = "gw"
flag = true
count = 3
ratio = 0.5
names = ["a", 1]
empty = []
[dns]
timeout = 5
[domains."example.com"]
tls = "required_verify"
"""


class Tls(StrEnum):
    NO = "no"
    REQUIRED_VERIFY = "required-verify"


@pytest.fixture
def root() -> TomlNode:
    return TomlNode.parse(DOC, "gw.toml")


def _error(call) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.file == "gw.toml"
    return info.value


@pytest.mark.parametrize(
    ("prefix", "key", "path"),
    [
        ("", "dns", "dns"),
        ("dns", "timeout", "dns.timeout"),
        ("domains", "example.com", 'domains."example.com"'),
        ("domains", "bücher", 'domains."bücher"'),
        ("x", 'a"b', 'x."a\\"b"'),
        ("x", "", 'x.""'),
        ("dns.resolvers", 0, "dns.resolvers[0]"),
    ],
)
def test_key_path_quotes_what_is_not_a_bare_key(prefix, key, path) -> None:
    assert key_path(prefix, key) == path


def test_values_come_back_checked(root: TomlNode) -> None:
    assert root.get("name").text() == "gw"
    assert root.get("flag").boolean() is True
    assert root.get("count").integer(1, 10) == 3
    assert root.get("ratio").number(above=0) == 0.5
    assert root.get("count").number(at_least=3) == 3.0
    assert root.get("dns").get("timeout").number() == 5.0
    assert [n.path for n in root.get("names").items()] == ["names[0]", "names[1]"]
    assert root.get("name").choice(("gw", "mta")) == "gw"
    tls = root.get("domains").get("example.com").get("tls")
    assert tls.path == 'domains."example.com".tls'
    assert tls.member(Tls, spelling=lambda t: t.replace("_", "-")) is Tls.REQUIRED_VERIFY


def test_a_default_has_the_path_of_its_key_and_is_checked_too(root: TomlNode) -> None:
    absent = root.get("dns").get("retransmit", 1.0)
    assert (absent.value, absent.path) == (1.0, "dns.retransmit")
    assert "retransmit" not in root.get("dns") and "timeout" in root.get("dns")
    err = _error(lambda: root.get("dns").get("retransmit", -1).number(at_least=0))
    assert (err.key, err.value) == ("dns.retransmit", -1)


def test_unknown_keys_are_named_by_their_own_path(root: TomlNode) -> None:
    err = _error(lambda: root.get("dns").table(("resolvers", "retransmit")))
    assert err.key == "dns.timeout" and err.value is None
    assert err.reason == "unknown key; allowed keys are resolvers, retransmit"
    assert err.allowed == ("resolvers", "retransmit")
    assert set(root.get("domains").table()) == {"example.com"}  # None: any key


def test_a_missing_key_without_default_is_an_error(root: TomlNode) -> None:
    err = _error(lambda: root.get("dns").get("resolvers"))
    assert (err.key, err.reason) == ("dns.resolvers", "missing key")


def test_a_table_names_a_missing_required_key(root: TomlNode) -> None:
    assert set(root.get("dns").table(("timeout",), required=("timeout",))) == {"timeout"}
    err = _error(lambda: root.get("dns").table(("timeout", "resolvers"), required=("resolvers",)))
    assert (err.key, err.reason) == ("dns.resolvers", "missing key")


def test_an_error_in_the_callers_words_names_key_and_value(root: TomlNode) -> None:
    err = root.get("count").error("more than the names", ("1", "2"))
    assert (err.key, err.value, err.reason, err.allowed) == (
        "count",
        3,
        "more than the names",
        ("1", "2"),
    )
    assert str(err) == "gw.toml: count: more than the names (value 3)"


def test_a_tuple_is_a_list_for_a_document_built_in_python() -> None:
    node = TomlNode({"mx": (10, "mx1.example.com")}, "<world>")
    assert [n.value for n in node.get("mx").items()] == [10, "mx1.example.com"]
    assert node.get("mx").items()[1].path == "mx[1]"


@pytest.mark.parametrize(
    ("read", "key", "value", "expected"),
    [
        (lambda r: r.get("name").table(), "name", "gw", "a table"),
        (lambda r: r.get("name").get("x"), "name", "gw", "a table"),
        (lambda r: r.get("count").text(), "count", 3, "a string"),
        (lambda r: r.get("empty").items(non_empty=True), "empty", [], "a non-empty list"),
        (lambda r: r.get("name").items(), "name", "gw", "a list"),
        (lambda r: r.get("count").boolean(), "count", 3, "a boolean"),
        (lambda r: r.get("flag").integer(0), "flag", True, "an integer >= 0"),
        (lambda r: r.get("count").integer(5), "count", 3, "an integer >= 5"),
        (lambda r: r.get("count").integer(0, 2), "count", 3, "an integer 0..2"),
        (lambda r: r.get("flag").number(), "flag", True, "a finite number"),
        (lambda r: r.get("ratio").number(above=1), "ratio", 0.5, "a finite number greater than 1"),
        (lambda r: r.get("ratio").number(at_least=1), "ratio", 0.5, "a finite number, 1 or more"),
        (lambda r: r.get("name").choice(("a", "b")), "name", "gw", "one of a, b"),
        (lambda r: r.get("count").member(Tls), "count", 3, "one of no, required-verify"),
        (lambda r: r.get("names").items()[1].text(), "names[1]", 1, "a string"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(root, read, key, value, expected) -> None:
    err = _error(lambda: read(root))
    assert (err.key, err.value) == (key, value) and type(err.value) is type(value)
    assert err.reason == f"invalid value; expected {expected}"
    assert str(err) == f"gw.toml: {key}: invalid value; expected {expected} (value {value!r})"


def test_closed_sets_are_carried_as_data(root: TomlNode) -> None:
    err = _error(lambda: root.get("domains").get("example.com").get("tls").member(Tls))
    assert err.allowed == ("no", "required-verify") and err.value == "required_verify"


def test_expected_words_replace_the_default_wording(root: TomlNode) -> None:
    err = _error(lambda: root.get("count").integer(0, 2, expected="a port number 0..2"))
    assert err.reason == "invalid value; expected a port number 0..2"
    err = _error(lambda: root.get("ratio").text(expected="a path"))
    assert err.reason == "invalid value; expected a path"


def test_a_syntax_error_names_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        TomlNode.parse("[dns\n", "gw.toml")
    assert info.value.file == "gw.toml" and info.value.reason.startswith("TOML syntax error:")
    assert "line 1" in info.value.reason
