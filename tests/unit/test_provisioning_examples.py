"""examples/provisioning loads with the loaders the services use, says what its comments
say, and every line of it is commented."""

from __future__ import annotations

import datetime
import shlex
from pathlib import Path

import pytest

from pilotage.config import load_settings
from pilotage.credentials.authz import RoleRules
from pilotage.credentials.tokens import Role
from pilotage.credentials.vo import check_fqan
from pilotage.factory.entries import load_config
from pilotage.frontend.settings import load_frontend_config
from pilotage.frontend.switch import switch_for
from pilotage.sitepolicy.policy import Policy, Subject

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provisioning"
FILES = ("pilotage.toml", "entries.toml", "frontend.toml", "site-authz.toml", "vo-members.sh")


def test_the_pool_configuration_has_a_vo_with_two_groups() -> None:
    settings = load_settings(EXAMPLE / "pilotage.toml", env={})
    assert settings.pool.name == "examplevo"
    assert set(settings.server.accounting_groups) == {"group_analysis", "group_production"}
    assert settings.server.group_quotas == {"group_analysis": 40.0, "group_production": 160.0}
    rules = RoleRules(settings.authz)
    for group in ("/examplevo/analysis", "/examplevo/production"):
        rules.check_token("someone", Role.USER, (group,))
    rules.check_token("entry:cluster-a/examplevo-frontend", Role.PILOT, ())
    with pytest.raises(Exception, match="not"):
        rules.check_token("entry:cluster-a/another-frontend", Role.PILOT, ())


def test_vo_members_are_valid_commands() -> None:
    groups = set()
    for line in (EXAMPLE / "vo-members.sh").read_text().splitlines():
        if line.startswith("pilotage "):
            words = shlex.split(line)
            assert words[:4] == ["pilotage", "admin", "vo", "add"] and len(words) == 6
            groups.add(check_fqan(words[5]))
    assert {"/examplevo/analysis", "/examplevo/production"} <= groups


def test_factory_and_frontend_settings_load_and_agree() -> None:
    factory = load_config(EXAMPLE / "entries.toml")
    frontend = load_frontend_config(EXAMPLE / "frontend.toml")
    pool = load_settings(EXAMPLE / "pilotage.toml", env={})
    assert factory.factory.name in pool.authz.factory
    assert frontend.frontend.name in pool.authz.frontend
    entries = factory.by_name()
    assert set(entries) == {"local-1", "cluster-a"}
    assert entries["cluster-a"].throttle.retire_grace_s == 86400
    assert set(frontend.pressure.entries) <= set(entries)
    # The VO's mode against each site's answers: pilots go to both entries, multi-user
    # with the setuid switch where the site requires it, single-user where it has none.
    today = datetime.date(2026, 1, 1)
    modes = {}
    for name, entry in entries.items():
        decision = switch_for(
            frontend.frontend.switch, entry.ad(today), frontend.frontend.switch_types,
            frontend.frontend.name,
        )  # fmt: skip
        modes[name] = None if decision.mode is None else str(decision.mode.value)
    assert modes == {"cluster-a": "required", "local-1": "single-user"}


def test_the_site_maps_each_group_to_its_pool(tmp_path: Path) -> None:
    text = (EXAMPLE / "site-authz.toml").read_text()
    local = tmp_path / "site-authz.toml"
    local.write_text(text.replace("/var/lib/pilotage-authz/gridmapdir", str(tmp_path / "gm")))
    policy = Policy.from_file(str(local))
    pilot = Subject("token", "entry:cluster-a/examplevo-frontend", "pilotage:examplevo")

    def user(name: str, group: str) -> Subject:
        return Subject("x509", f"/DC=org/DC=example/CN={name}", "", (group,))

    carol = policy.decide(user("Carol", "/examplevo/production"), pilot)
    alice = policy.decide(user("Alice", "/examplevo/analysis"), pilot)
    assert (carol.permit, carol.account) == (True, "exprod01")
    assert (alice.permit, alice.account) == (True, "exana001")
    assert not policy.decide(user("Mallory", "/examplevo/analysis"), pilot).permit
    assert not policy.decide(user("Alice", "/examplevo/analysis")).permit  # no pilot


@pytest.mark.parametrize("name", FILES)
def test_every_line_is_commented(name: str) -> None:
    """Each setting or command has a comment on its line or on the line just above."""
    previous = ""
    for number, line in enumerate((EXAMPLE / name).read_text().splitlines(), 1):
        code = line.strip()
        plain = code and not code.startswith(("#", "[")) and code != "set -eu"
        if plain:
            assert "#" in line or previous.startswith("#"), f"{name}:{number}: {line}"
        previous = code
