"""The policy engine, pure: bans, rules in order, grid-mapfile, pool leases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pilotage.sitepolicy.leases import expand_pool
from pilotage.sitepolicy.policy import Policy, PolicyError, Subject

ALICE = Subject("x509", "/O=Example/CN=Alice", "/O=Example/CN=CA")
CAROL = Subject("token", "carol", "https://pool.example", ("/cms", "/cms/analysis"))


def policy(tmp_path: Path, gridmap: str = "", **raw: object) -> Policy:
    return Policy({"gridmapdir": str(tmp_path / "gridmapdir"), **raw}, gridmap)


def test_dn_and_grid_mapfile(tmp_path: Path) -> None:
    engine = policy(tmp_path, '"/O=Example/CN=Bob" bob\n# comment\n"/cms" .cms\n',
                    map=[{"dn": ALICE.subject, "account": "alice"}],
                    pools={"cms": "cms001..cms003"})  # fmt: skip
    assert engine.decide(ALICE).account == "alice"
    assert engine.decide(Subject("x509", "/O=Example/CN=Bob", "")).account == "bob"
    assert engine.decide(CAROL).account == "cms001"


def test_first_rule_in_file_order_wins(tmp_path: Path) -> None:
    engine = policy(tmp_path, map=[
        {"group": "/cms/*", "account": "cmsuser"},
        {"dn": ALICE.subject, "account": "alice"},
    ])  # fmt: skip
    alice_in_cms = ALICE._replace(groups=("/cms/prod",))
    assert engine.decide(alice_in_cms).account == "cmsuser"
    assert engine.decide(ALICE).account == "alice"


@pytest.mark.parametrize(
    ("ban", "who", "reason"),
    [
        ({"dns": [ALICE.subject]}, ALICE, "The DN '/O=Example/CN=Alice' is banned."),
        ({"subjects": ["https://pool.example carol"]}, CAROL,
         "The token subject 'carol' of https://pool.example is banned."),
        ({"issuers": ["https://pool.example"]}, CAROL,
         "The issuer 'https://pool.example' is banned."),
        ({"groups": ["/cms/analysis"]}, CAROL, "The group '/cms/analysis' is banned."),
    ],
)  # fmt: skip
def test_bans(tmp_path: Path, ban: dict[str, list[str]], who: Subject, reason: str) -> None:
    engine = policy(tmp_path, ban=ban, map=[{"issuer": who.issuer, "account": "x"},
                                            {"dn": ALICE.subject, "account": "alice"}])  # fmt: skip
    decision = engine.decide(who)
    assert (decision.permit, decision.reason, decision.error) == (False, reason, False)


def test_a_banned_pilot_denies_the_user(tmp_path: Path) -> None:
    engine = policy(tmp_path, ban={"dns": ["/O=Example/CN=Pilot"]},
                    map=[{"dn": ALICE.subject, "account": "alice"}])  # fmt: skip
    pilot = Subject("x509", "/O=Example/CN=Pilot", "")
    assert engine.decide(ALICE, pilot).reason == "The DN '/O=Example/CN=Pilot' is banned."


def test_pilot_rules(tmp_path: Path) -> None:
    engine = policy(tmp_path, require_pilot=True, pilots=["/O=Example/CN=Pilot"],
                    map=[{"dn": ALICE.subject, "account": "alice"}])  # fmt: skip
    assert engine.decide(ALICE).reason == "This site requires the pilot credential as well."
    stranger = Subject("x509", "/O=Example/CN=Stranger", "")
    assert "is not an accepted pilot" in engine.decide(ALICE, stranger).reason
    assert engine.decide(ALICE, Subject("x509", "/O=Example/CN=Pilot", "")).permit


def test_pool_leases_are_stable_and_exclusive(tmp_path: Path) -> None:
    engine = policy(tmp_path, map=[{"group": "/cms", "pool": "cms"}],
                    pools={"cms": "cms001..cms002"})  # fmt: skip
    people = [CAROL._replace(subject=name) for name in ("carol", "dave", "erin")]
    first = [engine.decide(who) for who in people]
    assert [d.account for d in first] == ["cms001", "cms002", ""]
    assert first[2].error and "No pool account is free" in first[2].reason
    # A second engine on the same gridmapdir (another node, a restart) sees the same leases.
    again = policy(
        tmp_path, map=[{"group": "/cms", "pool": "cms"}], pools={"cms": "cms001..cms002"}
    )
    assert again.decide(people[1]).account == "cms002"
    links = [name for name in os.listdir(tmp_path / "gridmapdir") if name.startswith("%")]
    assert len(links) == 2


def test_no_mapping(tmp_path: Path) -> None:
    assert policy(tmp_path).decide(ALICE).reason == "No mapping rule matches '/O=Example/CN=Alice'."


def test_malformed_policies(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not defined in"):
        policy(tmp_path, map=[{"group": "/cms", "pool": "nope"}])
    with pytest.raises(PolicyError, match="needs one of"):
        policy(tmp_path, map=[{"dn": "x"}])
    with pytest.raises(PolicyError, match="grid-mapfile line 1"):
        policy(tmp_path, "not a line\n")
    with pytest.raises(ValueError, match="is not a range"):
        expand_pool("cms001..atlas002")
    bad = tmp_path / "bad.toml"
    bad.write_text("map = [")
    with pytest.raises(PolicyError, match="cannot be read"):
        Policy.from_file(str(bad))
