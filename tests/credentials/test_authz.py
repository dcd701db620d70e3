"""The [authz] rules: explicit identities, regular expressions, VO groups, per role."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.config import AuthzSettings, load_settings
from pilotage.credentials.authz import RoleRules
from pilotage.credentials.errors import IdentityNotAuthorized
from pilotage.credentials.tokens import Role
from pilotage.errors import OperatorError

ALICE = "/O=Example/CN=Alice"


def test_entries_are_exact_identities_regexes_or_fqans() -> None:
    rules = RoleRules(
        AuthzSettings(
            pilot=("pilots", "re:^/O=Example/OU=Pilots/CN=[a-z0-9-]+$", "fqan:/vo/Role=pilot"),
        )
    )
    assert rules.matches(Role.PILOT, "pilots")
    assert not rules.matches(Role.PILOT, "pilots2")  # exact means exact
    assert rules.matches(Role.PILOT, "/O=Example/OU=Pilots/CN=wn-1")
    # The whole identity must match, not a prefix of it.
    assert not rules.matches(Role.PILOT, "/O=Example/OU=Pilots/CN=wn-1/CN=x")
    assert rules.matches(Role.PILOT, ALICE, groups=["/vo", "/vo/Role=pilot"])
    assert not rules.matches(Role.PILOT, ALICE, groups=["/vo"])
    assert not rules.matches(Role.ADMIN, "pilots")


def test_tokens_of_a_role_without_entries_are_kept_and_of_one_with_entries_checked() -> None:
    rules = RoleRules(AuthzSettings(pilot=("pilots",)))
    rules.check_token("anyone", Role.USER, ())  # user has no entry: admins' tokens hold
    rules.check_token("pilots", Role.PILOT, ())
    with pytest.raises(IdentityNotAuthorized, match="no \\[authz\\] pilot entry names it"):
        rules.check_token("intruder", Role.PILOT, ())


def test_x509_login_gets_user_by_default_and_a_privileged_role_only_by_an_entry() -> None:
    rules = RoleRules(AuthzSettings(admin=("re:^/O=Example/CN=Admin.*$",)))
    rules.check_login(ALICE, Role.USER, ())
    rules.check_login("/O=Example/CN=Admin Bob", Role.ADMIN, ())
    for role in (Role.PILOT, Role.FRONTEND, Role.FACTORY, Role.ADMIN):
        with pytest.raises(IdentityNotAuthorized, match=f"grants the {role.value} role"):
            rules.check_login(ALICE, role, ())
    closed = RoleRules(AuthzSettings(user=("re:^/O=Example/OU=Users/.*$",)))
    with pytest.raises(IdentityNotAuthorized):
        closed.check_login(ALICE, Role.USER, ())


def test_bad_entries_stop_the_server_naming_them(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match=r"\[authz\] pilot: 're:\(' is not a regular"):
        RoleRules(AuthzSettings(pilot=("re:(",)))
    with pytest.raises(OperatorError, match="empty entry"):
        RoleRules(AuthzSettings(user=("",)))
    config = tmp_path / "pilotage.toml"
    config.write_text('[authz]\npilots = ["x"]\n')
    with pytest.raises(OperatorError, match="unknown key 'pilots'"):
        load_settings(config, env={})
    config.write_text('[authz]\npilot = ["re:^/O=Example/.*$", "fqan:/vo/Role=pilot"]\n')
    settings = load_settings(config, env={"PILOTAGE_AUTHZ_ADMIN": "root,/O=Example/CN=Admin"})
    assert settings.authz.pilot == ("re:^/O=Example/.*$", "fqan:/vo/Role=pilot")
    assert settings.authz.admin == ("root", "/O=Example/CN=Admin")
