"""Table settings (accounting groups, quotas): from the file, from the environment, refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilotage.config import load_settings
from pilotage.errors import OperatorError


def test_groups_and_quotas_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "pilotage.toml"
    path.write_text(
        '[server]\naccounting_groups = { group_physics = ["alice", "bob"], open = ["*"] }\n'
        "group_quotas = { group_physics = 4 }\ngroups_accept_surplus = false\n"
    )
    server = load_settings(path, env={}).server
    assert server.accounting_groups == {"group_physics": ("alice", "bob"), "open": ("*",)}
    assert server.group_quotas == {"group_physics": 4.0} and not server.groups_accept_surplus
    env = {"PILOTAGE_SERVER_GROUP_QUOTAS": '{"open": 1.5}'}
    assert load_settings(path, env=env).server.group_quotas == {"open": 1.5}
    json.dumps(load_settings(path, env={}).as_dict())  # what 'pilotage config' prints


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("accounting_groups", "{nope", "not a JSON object"),
        ("accounting_groups", '{"bad name": ["alice"]}', "'bad name' is not a group name"),
        ("accounting_groups", '{"g": [1]}', "must be a list of names"),
        ("accounting_groups", '{"g": ["al ice"]}', "'al ice' .group 'g'. is not a user name"),
        ("group_quotas", '{"g": "many"}', "quota of group 'g' must be a number"),
        ("group_quotas", '{"g": -1}', "must be a number of cpus >= 0"),
        ("group_quotas", "[1]", "not a table of group names"),
    ],
)
def test_bad_tables_are_refused_with_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(OperatorError, match=rf"\[server\] {key}: .*{message}"):
        load_settings(None, env={f"PILOTAGE_SERVER_{key.upper()}": value})
