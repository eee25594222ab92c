"""docs/settings.md is what server/settings.py generates: every setting, its variable and default."""

from __future__ import annotations

import dataclasses

from clients.settings_doc import DOC, main, render
from server.settings import Settings


def test_the_committed_settings_table_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "stale docs/settings.md: run make settings-doc"
    assert main(["--check"]) == 0


def test_every_setting_has_a_row_with_its_variable_and_default() -> None:
    text = render()
    for field in dataclasses.fields(Settings):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field.name}` |"))
        assert f"`JUKI_{field.name.upper()}`" in row
        if field.name != "home" and field.default is not None:
            assert str(field.default).lower() in row.lower()
    assert (
        "| `fuhyo_keys_file` | `JUKI_FUHYO_KEYS_FILE` | `var/keys/fuhyo.keys.json` | page tokens only" in text
    )
