"""A site's answers as an entry writes them, and their effective meaning (seed 002)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pilotage.errors import OperatorError
from pilotage.factory.entries import parse_config
from pilotage.factory.sitepolicy import Answers, SitePolicy

DAY = datetime.date(2026, 6, 1)


def policy(**answers: Any) -> SitePolicy:
    entry = {"name": "e", "attrs": {"site": "S"}, "policy": answers}
    return parse_config({"entry": [entry]}).entry[0].policy


def test_plain_answers_mean_what_they_say() -> None:
    p = policy(multi_user="yes", setuid="require", log_only="allow", bypass_on_error="yes")
    assert p.answers(DAY) == Answers("yes", "require", "allow", "yes")


def test_an_unanswered_question_is_never_permissive() -> None:
    assert policy().answers(DAY) == Answers("no", "no", "no", "no")
    assert policy(multi_user="unknown", bypass_on_error="unknown").answers(DAY).multi_user == "no"


def test_depends_means_no_until_the_operator_confirms_it() -> None:
    cond = {"answer": "depends", "condition": "compliant experiments"}
    assert policy(multi_user=cond).answers(DAY).multi_user == "no"
    assert policy(multi_user="depends").answers(DAY).multi_user == "no"
    confirmed = policy(multi_user={**cond, "confirmed": True})
    assert confirmed.answers(DAY).multi_user == "yes"


def test_a_condition_holds_back_a_permissive_answer_but_never_a_demand() -> None:
    assert policy(setuid={"answer": "allow", "condition": "if imposed"}).answers(DAY).setuid == "no"
    confirmed = {"answer": "allow", "condition": "if imposed", "confirmed": True}
    assert policy(setuid=confirmed).answers(DAY).setuid == "allow"
    demand = {"answer": "require", "condition": "jails or VMs"}
    assert policy(setuid=demand).answers(DAY).setuid == "require"


def test_a_policy_due_to_change_turns_strict_on_its_date() -> None:
    p = policy(setuid={"answer": "allow", "becomes": "require", "on": datetime.date(2026, 6, 1)})
    assert p.answers(datetime.date(2026, 5, 31)).setuid == "allow"
    assert p.answers(DAY).setuid == "require"
    b = policy(bypass_on_error={"answer": "yes", "becomes": "no", "on": datetime.date(2027, 1, 1)})
    assert b.answers(DAY).bypass_on_error == "yes"
    assert b.answers(datetime.date(2027, 1, 1)).bypass_on_error == "no"


def test_per_vo_answers_override_the_site_s() -> None:
    p = policy(
        multi_user="yes",
        log_only="unknown",
        vo={"alice": {"log_only": "allow", "bypass_on_error": "yes"}},
    )
    assert p.answers(DAY).log_only == "no"
    assert p.answers(DAY, "alice") == Answers("yes", "no", "allow", "yes")
    assert p.answers(DAY, "cms") == p.answers(DAY)
    ad = p.ad(DAY)
    assert ad["PolicyLogOnly"] == "no"
    assert Answers.from_ad(ad, "alice").log_only == "allow"
    assert Answers.from_ad(ad, "cms").log_only == "no"


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"setuid": "maybe"}, "entry 'e': policy.setuid: Input should be"),
        ({"multi_user": "allow"}, "entry 'e': policy.multi_user: Input should be"),
        (
            {"setuid": {"answer": "require", "becomes": "allow", "on": DAY}},
            "'becomes = \"allow\"' is not stricter than 'require'",
        ),
        (
            {"bypass_on_error": {"answer": "no", "becomes": "yes", "on": DAY}},
            "'becomes = \"yes\"' is not stricter than 'no'",
        ),
        ({"setuid": {"answer": "allow", "becomes": "require"}}, "'becomes' and 'on' go together"),
        ({"setuid": {"answer": "allow", "when": "later"}}, "policy.setuid.when: unknown key"),
        ({"vo": {"bad name": {}}}, "policy.vo.bad name"),
        ({"vo": {"cms": {"setuid": "perhaps"}}}, "policy.vo.cms.setuid.answer: Input should be"),
    ],
)
def test_bad_answers_are_refused_naming_the_key(answers: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError, match=r"^entries: ") as caught:
        policy(**answers)
    assert message in caught.value.message
