"""A scenario file whose name or directory cannot be its id or topic is one line, not a
traceback (found following the README's "First five minutes": ``run broken.toml`` in
the working directory crashed with ``AttributeError: 'str' object has no attribute
'bad'``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.scenario import load_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "dane-ee-delivery.toml"


def test_a_file_in_the_working_directory_takes_its_name_for_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = tmp_path / "mine"
    where.mkdir()
    (where / "copy.toml").write_text(EXAMPLE.read_text())
    monkeypatch.chdir(where)
    scenario = load_scenario(Path("copy.toml"))
    assert (scenario.id, scenario.topic) == ("copy", "mine")


@pytest.mark.parametrize(
    ("folder", "name", "words"),
    [
        ("ok", "a b.toml", "scenario.id: the file name is the id when [scenario] id is absent"),
        ("Not-A-Topic", "ok.toml", "scenario.topic: the directory's name is the topic when"),
    ],
)
def test_a_name_that_cannot_be_an_id_or_topic_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str, name: str, words: str
) -> None:
    path = tmp_path / folder / name
    path.parent.mkdir()
    path.write_text(EXAMPLE.read_text())
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {words}" in err, err
