"""Settings: defaults < file < environment < flags, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.config import load_settings, with_overrides
from pilotage.errors import OperatorError


def test_precedence(tmp_path: Path) -> None:
    path = tmp_path / "pilotage.toml"
    path.write_text('[pool]\nname = "cms"\n[server]\nport = 9000\nlease_s = 60\n')
    settings = load_settings(path, env={"PILOTAGE_SERVER_PORT": "9100"})
    assert settings.pool.name == "cms" and settings.issuer == "pilotage:cms"
    assert settings.server.port == 9100  # environment beats the file
    assert settings.server.lease_s == 60.0  # file beats the default
    flagged = with_overrides(settings, "server", port=9200, db=None)
    assert flagged.server.port == 9200 and flagged.server.db == ""


def test_defaults_without_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.toml", env={})
    assert settings.server.port == 9618 and settings.server.idle_timeout_s == 1200.0


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[server]\nprot = 1\n", {}, "unknown key 'prot'"),
        ("[serve]\nport = 1\n", {}, r"unknown section \[serve\]"),
        ("[server]\nport = 'x'\n", {}, r"\[server\] port = 'x' is not a valid int"),
        ("[server]\nport = 1.5\n", {}, "is not a valid int"),
        ("[server\n", {}, "is not valid TOML"),
        ("", {"PILOTAGE_SERVER_LEASE_S": "soon"}, r"lease_s = 'soon' is not a valid float"),
        ("server = 3\n", {}, "must be a"),
    ],
)
def test_bad_config_is_refused(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "pilotage.toml"
    path.write_text(text)
    with pytest.raises(OperatorError, match=message):
        load_settings(path, env=env)


def test_admins_from_environment(tmp_path: Path) -> None:
    settings = load_settings(None, env={"PILOTAGE_SERVER_ADMINS": "alice, bob"})
    assert settings.server.admins == ("alice", "bob")
