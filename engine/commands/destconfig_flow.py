"""The appliance's ``destconfig`` flow: questions, answers, and the TOML they produce.

Theory of operation
-------------------
The dialogue follows the seed's CLI transcript (translated from the French,
defaults in brackets as printed there): a specific TLS setting? the six TLS
settings (default 2, Preferred), the certconfig note, DANE, then MTA-STS,
which is offered only for TLS settings 2-6 (seed: "Les options 2 à 6 pour TLS
prennent en charge MTA-STS"), with the note that MTA-STS is not applied to
domains with SMTP routes; then the remaining options (concurrency, messages
per connection, bounce profile).

:class:`Dialogue` is I/O-free: it takes an ``ask(prompt) -> answer`` function,
so the command can drive it from a terminal and tests from a list. The result
is a plain dict of ``[destination_controls."<domain>"]`` keys;
:func:`write_profile` merges it into the TOML file (read with :mod:`tomllib`,
written with :mod:`tomli_w`; other tables are kept, comments are not) and the
command validates the new file with :func:`engine.config.parse_config` before
replacing the old one.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from engine.core.controls import DaneOption, DestinationProfile, TlsSetting

__all__ = [
    "DANE_MENU",
    "MTA_STS_ROUTE_NOTE",
    "TLS_MENU",
    "Dialogue",
    "merge_profile",
    "profile_rows",
    "read_toml",
    "write_profile",
]

TLS_MENU: tuple[tuple[str, TlsSetting], ...] = (
    ("No", TlsSetting.NO),
    ("Preferred", TlsSetting.PREFERRED),
    ("Required", TlsSetting.REQUIRED),
    ("Preferred - Verify", TlsSetting.PREFERRED_VERIFY),
    ("Required - Verify", TlsSetting.REQUIRED_VERIFY),
    ("Required - Verify Hosted Domains", TlsSetting.REQUIRED_VERIFY_HOSTED),
)
DANE_MENU: tuple[tuple[str, DaneOption], ...] = (
    ("None", DaneOption.NONE),
    ("Opportunistic", DaneOption.OPPORTUNISTIC),
    ("Mandatory", DaneOption.MANDATORY),
)
CERTCONFIG_NOTE = (
    "You have chosen to enable TLS. Please use the 'certconfig' command to ensure that "
    "there is a valid certificate configured."
)
MTA_STS_ROUTE_NOTE = "MTA STS is not applied to domains for which SMTP routes are configured."


def _menu(title: str, items: Sequence[str], default: int) -> str:
    lines = [title] + [f"{i}. {label}" for i, label in enumerate(items, 1)]
    return "\n".join(lines) + f"\n[{default}]> "


@dataclass(frozen=True, slots=True)
class Dialogue:
    """The ``destconfig new|edit`` questions.

    Args:
        ask: shows a prompt (ending in ``"> "``) and returns the answer line.
        say: shows a note.
        current: the domain's resolved profile (edit) or the Default entry's (new).
        bounce_profiles: the configured bounce profile names.
        routed: whether the domain has an SMTP route.
    """

    ask: Callable[[str], str]
    say: Callable[[str], None]
    current: DestinationProfile
    bounce_profiles: Sequence[str]
    routed: bool = False

    def _yes(self, question: str, default: bool) -> bool:
        while True:
            answer = self.ask(f"{question} [{'Y' if default else 'N'}]> ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            self.say("Please answer Y or N.")

    def _choose(self, title: str, items: Sequence[str], default: int) -> int:
        while True:
            answer = self.ask(_menu(title, items, default)).strip()
            if not answer:
                return default
            if answer.isdigit() and 1 <= int(answer) <= len(items):
                return int(answer)
            self.say(f"Please enter a number from 1 to {len(items)}.")

    def _number(self, question: str, default: int) -> int:
        while True:
            answer = self.ask(f"{question} [{default}]> ").strip()
            if not answer:
                return default
            if answer.isdigit() and int(answer) >= 1:
                return int(answer)
            self.say("Please enter a whole number of at least 1.")

    def run(self) -> dict[str, Any]:
        """Ask everything; returns the keys to write for the domain."""
        out: dict[str, Any] = {}
        # Seed: "Voulez-vous appliquer un paramètre TLS spécifique pour ce domaine ? [N]>"
        if self._yes("Do you wish to apply a specific TLS setting for this domain?", False):
            settings = [s for _, s in TLS_MENU]
            # Seed: the six settings, default [2] (Preferred).
            picked = self._choose(
                "Do you want to use TLS support?", [label for label, _ in TLS_MENU], 2
            )
            tls = settings[picked - 1]
            out["tls"] = tls.value
            if tls is not TlsSetting.NO:
                self.say(CERTCONFIG_NOTE)
                if self._yes("Would you like to configure DANE support?", False):
                    names = [label for label, _ in DANE_MENU]
                    dane = self._choose("Do you want to use DANE support?", names, 1)
                    out["dane"] = DANE_MENU[dane - 1][1].value
                # Seed: options 2 to 6 for TLS support MTA-STS.
                if self._yes("Do you want to configure MTA STS support?", False):
                    on = self._choose("Do you want to use MTA STS support?", ["Disabled", "On"], 1)
                    out["mta_sts"] = on == 2
                    self.say(MTA_STS_ROUTE_NOTE)
                    if on == 2 and self.routed:
                        self.say("Note: this domain has an SMTP route, so MTA STS will not apply.")
            else:
                out["mta_sts"] = False  # config: MTA-STS needs TLS
        out["max_concurrency"] = self._number(
            "Enter the maximum number of concurrent connections to this domain.",
            self.current.max_concurrency,
        )
        out["max_messages_per_connection"] = self._number(
            "Enter the maximum number of messages per connection.",
            self.current.max_messages_per_connection,
        )
        names = list(self.bounce_profiles)
        default = (
            names.index(self.current.bounce_profile) + 1
            if self.current.bounce_profile in names
            else 1
        )
        picked = self._choose("Select the bounce profile to use:", names, default)
        out["bounce_profile"] = names[picked - 1]
        return out


def read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML data (empty when the file does not exist)."""
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


def merge_profile(data: dict[str, Any], domain: str, values: Mapping[str, Any]) -> str:
    """Merge ``values`` into ``[destination_controls."<domain>"]``; returns the new TOML text."""
    controls = data.setdefault("destination_controls", {})
    entry = controls.setdefault(domain, {})
    entry.update(values)
    return tomli_w.dumps(data)


def write_profile(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``.

    A reader (a gateway reloading) never sees half a file.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def profile_rows(
    profile: DestinationProfile, explicit: Mapping[str, Any], *, routed: bool
) -> list[tuple[str, str]]:
    """(label, value) rows for ``destconfig show``; inherited values are marked."""
    rows = []
    labels = {
        "tls": "TLS Support",
        "dane": "DANE Support",
        "mta_sts": "MTA STS Support",
        "max_concurrency": "Maximum concurrent connections",
        "max_messages_per_connection": "Maximum messages per connection",
        "bounce_profile": "Bounce Profile",
        "ip_sort_pref": "IP sort preference",
    }
    for key, label in labels.items():
        value = getattr(profile, key)
        text = ("On" if value else "Off") if isinstance(value, bool) else str(value)
        if key not in explicit:
            text += " (Default)"
        rows.append((label, text))
    if routed and profile.mta_sts:
        rows.append(("Note", "SMTP route configured: MTA STS is not applied"))
    return rows
