"""``sts-harness profile check``: good profiles pass, each mistake is one clear line."""

from __future__ import annotations

import pytest

from harness.adapters.blackbox.check import check_profile
from harness.adapters.blackbox.profile import ENGINES_ENV, PROFILE_DIR, load_profile, profile_names
from harness.cli import main

GOOD = (PROFILE_DIR / "exim-dane.toml").read_text(encoding="utf-8")


def test_every_shipped_profile_passes():
    assert profile_names()
    for name in profile_names():
        report = check_profile(load_profile(name).path, binaries=False)
        assert report.ok, report.problems


def test_the_command_accepts_good_profiles(capsys):
    files = [str(load_profile(n).path) for n in profile_names()]
    assert main(["profile", "check", "--no-binaries", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(files) and all(": ok (" in line for line in out)


# (what to replace in the Exim profile, with what, what the one line must say)
BAD = [
    ('title = "Exim', 'titel = "x"\ntitle = "Exim', "engine.titel: unknown key; allowed keys"),
    ('driver = "exim"', 'driver = "sendmail"', "engine.driver: invalid value; expected one of"),
    ("rootless = true\n", "rootless = false\n", "says why in rootless_needs"),
    (
        "smtp_timeout = 3",
        "smtp_timeout = -1",
        "engine.smtp_timeout: invalid value; expected seconds",
    ),
    ('features = ["dane"]', 'features = ["dnssec"]', "engine.features[0]: invalid value"),
    (
        "spool_directory = {{dir}}/spool",
        "spool_directory = {{spool}}",
        "unknown placeholder {{spool}}",
    ),
    (
        "match = '(?P<qid>",
        "match = '(?P<qid",
        "log[0].match: invalid value; expected a regular expression",
    ),
    ("(?P<rcpt>\\S+)(?: <[^>]*>)? .*?H=", "(?P<who>\\S+)(?: <[^>]*>)? .*?H=", "missing rcpt"),
    (
        'binaries = ["exim4"',
        'binaries = ["no-such-mta-binary"',
        "'no-such-mta-binary' is not installed",
    ),
    ("[submit]\n", "[submit\n", "TOML syntax error"),
    ('method = "smtp"', 'method = "lmtp"', "submit.method: invalid value; expected one of smtp"),
]


@pytest.mark.parametrize(("old", "new", "says"), BAD, ids=[b[2][:40] for b in BAD])
def test_each_mistake_is_one_line_naming_file_key_and_rule(tmp_path, capsys, old, new, says):
    assert old in GOOD
    bad = tmp_path / "my-mta.toml"
    bad.write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    # The binaries are looked up only for the mistake about them: where exim4 is not
    # on PATH (a user without /usr/local/sbin), the others must still be one line.
    report = check_profile(bad, binaries="is not installed" in says)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    (line,) = report.problems
    assert "\n" not in line and line.startswith(str(bad)), line
    assert says in line, line
    assert main(["profile", "check", str(bad)]) == 1
    assert says in capsys.readouterr().err


def test_a_missing_file_is_one_line(tmp_path):
    (line,) = check_profile(tmp_path / "none.toml").problems
    assert line == f"{tmp_path / 'none.toml'}: no such profile file"


def test_your_own_profiles_are_found_by_name_before_the_shipped_ones(tmp_path, monkeypatch):
    (tmp_path / "my-mta.toml").write_text(GOOD.replace("Exim 4.96 DANE", "My MTA"), "utf-8")
    (tmp_path / "chasquid.toml").write_text(GOOD, encoding="utf-8")  # shadows the shipped one
    monkeypatch.setenv(ENGINES_ENV, str(tmp_path))
    assert {"my-mta", "chasquid", "postfix-sts"} <= set(profile_names())
    assert load_profile("my-mta").title.startswith("My MTA")
    assert load_profile("chasquid").path == tmp_path / "chasquid.toml"
    monkeypatch.delenv(ENGINES_ENV)
    assert load_profile("chasquid").path == PROFILE_DIR / "chasquid.toml"
