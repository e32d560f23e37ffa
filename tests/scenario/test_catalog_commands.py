"""``sts-harness profiles``, ``show`` and ``run`` for a newcomer (issue 16 items 6 and 7):
the certificate profiles listed, close matches suggested, short arrays on one line,
``-q`` printing only the failures and the counts."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from certs.profiles import CertProfile
from harness.cli import main
from harness.commands.profiles import markdown_table
from harness.report.tomltext import toml_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "scenarios" / "examples" / "sts-enforce-mx1-bad.toml"


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # ids are looked up under ./scenarios, as a user runs them


def test_profiles_lists_every_profile_with_what_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == [p.value for p in CertProfile]
    assert "expired" in out and "refused (CERT-4, FETCH-6)" in out


def test_the_catalog_readme_lists_the_profiles_as_the_command_does() -> None:
    text = (ROOT / "scenarios" / "README.md").read_text(encoding="utf-8")
    start = "<!-- profiles: sts-harness profiles --markdown -->\n"
    inside = text.split(start, 1)[1].split("<!-- /profiles -->", 1)[0]
    assert inside == markdown_table()


@pytest.mark.parametrize("command", ["show", "run"])
def test_a_mistyped_scenario_id_gets_close_matches(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "dane-ee-deliver"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean: dane-ee-delivery" in err, err


def test_run_takes_a_scenario_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-q", "dane-ee-delivery"]) == 0
    assert capsys.readouterr().out == "1 passed\n"


def test_show_writes_short_arrays_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "dane-ee-delivery"]) == 0
    out = capsys.readouterr().out
    assert '  mx = ["10 mx1.example.com"]\n' in out
    assert "  tlsa = [[3, 1, 1]]\n" in out


_SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(max_size=30),
    st.floats(allow_nan=False, allow_infinity=False),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=6), max_leaves=20)
_KEYS = st.text(min_size=1, max_size=12)


@given(st.dictionaries(_KEYS, st.one_of(_VALUES, st.dictionaries(_KEYS, _VALUES, max_size=4))))
@example({"a\x85b": ["c\u2028d"]})  # line breaks to str.splitlines, not to TOML
def test_toml_text_reads_back_as_the_same_table(table: dict[str, object]) -> None:
    text = toml_text(table)
    assert tomllib.loads(text) == table
    assert all(len(line) <= 100 or not line.rstrip().endswith("]") for line in text.splitlines())


def test_quiet_run_prints_the_failures_and_the_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # -q used to print the whole table of every scenario; it prints what failed.
    shutil.copy(EXAMPLE, tmp_path / "kept.toml")
    broken = EXAMPLE.read_text().replace('via = "mx2.example.com"', 'via = "mx1.example.com"')
    assert broken != EXAMPLE.read_text()
    (tmp_path / "broken.toml").write_text(broken)
    assert main(["run", "-q", str(tmp_path / "kept.toml"), str(tmp_path / "broken.toml")]) == 1
    out = capsys.readouterr().out
    assert "broken" in out and "via" in out
    assert "kept" not in out
    assert out.rstrip().endswith("1 passed, 1 failed")
