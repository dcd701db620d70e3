"""An entry's attributes on its way to the pilot: ``pilot.json``, then the agent's flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import classad2
import pytest

from pilotage.errors import OperatorError
from pilotage.factory import validate
from pilotage.factory.entries import Entry, parse_config
from pilotage.factory.pilotfiles import PilotConfig, classad_literal, pilot_json

CONFIG = PilotConfig(server_url="https://pool.example:8443", ca_pem=b"")


def entry(**extra: Any) -> Entry:
    table = {"site": "SITE_A", "extra": extra}
    return parse_config({"entry": [{"name": "alpha", "attrs": table}]}).entry[0]


@pytest.mark.parametrize(
    "value", ["plain", 'with "quotes" and \\ backslash', "two\nlines", "ünïcode", 2, 2.5, True]
)
def test_literals_evaluate_back_to_the_value(value: str | int | float | bool) -> None:
    text = classad_literal(value)
    assert "\n" not in text
    assert classad2.ExprTree(text).eval() == value


def test_pilot_json_carries_the_extra_attributes_as_expressions() -> None:
    document = json.loads(pilot_json(entry(Tier=2, Repo="atlas", Gpu=False), CONFIG))
    assert document["attrs"] == {"Gpu": "false", "Repo": '"atlas"', "Tier": "2"}


def agent_attrs(tmp_path: Path, e: Entry, site_attrs: dict[str, str]) -> dict[str, str]:
    (tmp_path / "pilot.json").write_bytes(pilot_json(e, CONFIG))
    node = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1024}
    result = {"attrs": site_attrs, "lifetime_s": 600.0, "node": node}
    args = validate.agent_args(tmp_path, tmp_path, tmp_path / "token", result)
    pairs = [a.removeprefix("--attr=").split("=", 1) for a in args if a.startswith("--attr=")]
    return dict((k, v) for k, v in pairs)


def test_site_checks_override_entry_attributes_but_never_the_entry_name(tmp_path: Path) -> None:
    e = entry(Tier=2, Repo="atlas")
    site = {"Tier": "3", "HasCvmfs": "true", "EntryName": '"elsewhere"'}
    assert agent_attrs(tmp_path, e, site) == {
        "Tier": "3",
        "Repo": '"atlas"',
        "HasCvmfs": "true",
        "EntryName": '"alpha"',
    }


def test_a_multi_line_attribute_in_pilot_json_is_refused() -> None:
    with pytest.raises(validate.Refused, match="attribute 'Bad'"):
        validate.entry_attrs({"attrs": {"Bad": '"a\nb"'}})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"Site": "x"}, "'Site' is an attribute pilotage sets itself"),
        ({"entryname": "x"}, "'entryname' is an attribute pilotage sets itself"),
        ({"bad-name": 1}, "'bad-name' is not a valid ClassAd attribute name"),
        ({"Huge": float("inf")}, "Huge: inf is not a finite number"),
    ],
)
def test_extra_attributes_pilotage_cannot_pass_on_are_refused(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(OperatorError, match=message):
        entry(**extra)
