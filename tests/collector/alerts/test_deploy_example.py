"""deploy/collector.toml documents every [attribution], [incidents] and [alerts] key,
each with its default, and the file as shipped loads."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import pytest

from collector.settings import AlertSettings, AttributionSettings, IncidentSettings, load_settings
from tests.helpers import ROOT

EXAMPLE = ROOT / "deploy" / "collector.toml"
TABLES: dict[str, Any] = {
    "attribution": AttributionSettings,
    "incidents": IncidentSettings,
    "alerts": AlertSettings,
}


def _switched_on() -> str:
    """The file with the commented-out ``# key = value`` lines of these tables switched on."""
    text = EXAMPLE.read_text()
    head, sep, tail = text.partition("\n[attribution]")
    lines = [re.sub(r"^# ([a-z_]+ = .*)$", r"\1", line) for line in tail.splitlines()]
    return head + sep + "\n".join(lines)


@pytest.mark.parametrize("table", TABLES)
def test_every_key_is_shown_with_its_default(table: str) -> None:
    shown = tomllib.loads(_switched_on())[table]
    defaults = TABLES[table]()
    assert set(shown) == {f.name for f in dataclasses.fields(defaults)}
    for key, value in shown.items():
        default = getattr(defaults, key)
        if default not in (None, ()):  # no default: the example shows a sample value
            assert value == default, key


def test_the_example_with_every_key_switched_on_is_valid(tmp_path: Any) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(_switched_on())
    settings = load_settings(config=path)
    assert settings.alerts.webhook_url == "https://hooks.example.com/posmon"
    assert settings.alerts.smtp_to == ("it@example.com",)
    assert load_settings(config=EXAMPLE).alerts == AlertSettings()
