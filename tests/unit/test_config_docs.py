"""docs/configuration.md lists every key of the configuration, with its default, its
environment variable and whether a reload takes it, exactly as the code has them."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from pilotage.config import ENV_PREFIX, Settings
from pilotage.config_reload import reloads

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([a-z_0-9]+)` \| `(.*?)` \| `([A-Z_0-9]+)` \| (yes|restart) \| .+ \|$")


def _toml(value: Any) -> str:
    """A default as the document writes it (a TOML literal)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise TypeError(f"no documented form for {value!r}")


def _documented() -> dict[str, dict[str, tuple[str, str, str]]]:
    sections: dict[str, dict[str, tuple[str, str, str]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^## `\[([a-z0-9]+)\]`$", line)
        if heading:
            current = sections.setdefault(heading.group(1), {})
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("| `"):
            row = ROW.match(line)
            assert row, f"docs/configuration.md: a row not in the table's form: {line}"
            key, default, env, reload = row.groups()
            current[key] = (default, env, reload)
    return sections


def test_every_key_is_documented_as_the_code_has_it() -> None:
    documented = _documented()
    settings = Settings()
    assert set(documented) == {f.name for f in dataclasses.fields(settings)}
    for section_field in dataclasses.fields(settings):
        section = section_field.name
        values = getattr(settings, section)
        keys = {f.name for f in dataclasses.fields(values)}
        rows = documented[section]
        assert set(rows) == keys, (
            f"[{section}]: undocumented {sorted(keys - set(rows))}, "
            f"documented but unknown {sorted(set(rows) - keys)}"
        )
        for key, (default, env, reload) in rows.items():
            where = f"[{section}] {key}"
            assert default == _toml(getattr(values, key)), where
            assert env == f"{ENV_PREFIX}{section.upper()}_{key.upper()}", where
            assert reload == ("yes" if reloads(section, key) else "restart"), where
