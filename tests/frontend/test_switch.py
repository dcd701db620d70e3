"""The pilots per entry: the VO's mode and switch types against the site's policy (seed 002).

One test per rule of ``pilotage.frontend.switch``; the whole of seed 002's table is in
``test_seed002.py``.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pilotage.factory.entries import parse_config
from pilotage.factory.sitepolicy import Answers
from pilotage.frontend.switch import PilotMode, VoSwitchMode, decide, switch_for

R, OPT, N = VoSwitchMode.REQUIRED, VoSwitchMode.OPTIONAL, VoSwitchMode.NEVER
ALL = ("setuid", "log-only", "namespace")
OPEN = Answers("yes", "allow", "allow", "yes")  # allows everything, demands nothing


def answers(**changes: str) -> Answers:
    return Answers(**{**OPEN.as_dict(), **changes})


def label(vo: VoSwitchMode, site: Answers, installed: str | None, accepted: Any = ALL) -> str:
    decision = decide(vo, accepted, site, installed)
    assert decision.reason
    assert decision.usable is (decision.mode is not None)
    return decision.label()


def test_no_multi_user_pilots_means_single_user_pilots_or_none_for_a_required_vo() -> None:
    site = answers(multi_user="no")
    assert label(OPT, site, "setuid") == "single-user"
    assert label(N, site, None) == "single-user"
    assert label(R, site, "setuid") == "none"


def test_setuid_require_never_gets_log_only_or_namespace() -> None:
    site = answers(setuid="require", log_only="allow")
    assert label(R, site, "setuid") == "required:setuid"
    assert label(R, site, "log-only") == "none"
    assert label(R, site, "namespace") == "none"
    assert label(OPT, site, "log-only") == "single-user"


def test_an_optional_vo_gets_required_pilots_where_the_site_requires_the_switch() -> None:
    assert label(OPT, answers(setuid="require"), "setuid") == "required:setuid"
    every = "setuid,log-only,namespace"
    assert label(OPT, answers(log_only="require"), "log-only") == f"required:{every}"
    assert label(OPT, answers(bypass_on_error="no"), "setuid") == f"required:{every}"
    assert label(OPT, OPEN, "setuid") == f"optional:{every}"


def test_a_site_requiring_the_switch_without_a_usable_one_gets_single_user_pilots() -> None:
    assert label(OPT, answers(bypass_on_error="no"), None) == "single-user"
    assert label(N, answers(bypass_on_error="no"), "setuid") == "single-user"
    assert label(R, answers(bypass_on_error="no"), None) == "none"


def test_the_vo_mode_where_the_site_demands_nothing() -> None:
    assert label(R, OPEN, None) == "none"
    assert label(OPT, OPEN, None) == "never"
    assert label(N, OPEN, "setuid") == "never"
    assert label(R, OPEN, "namespace") == "required:setuid,log-only,namespace"


def test_the_vo_accepts_its_types_in_its_order() -> None:
    assert label(R, OPEN, "log-only", ["setuid"]) == "none"
    assert label(OPT, OPEN, "log-only", ["setuid"]) == "never"
    assert label(R, OPEN, "log-only", ["log-only", "setuid"]) == "required:log-only,setuid"
    assert label(OPT, answers(bypass_on_error="no"), "log-only", ["setuid"]) == "single-user"


def test_a_mode_the_site_does_not_allow_is_not_usable() -> None:
    assert label(R, answers(setuid="no"), "setuid") == "none"
    assert label(R, answers(log_only="no"), "log-only") == "none"
    assert label(R, answers(log_only="no"), "namespace") == "none"
    assert label(R, answers(setuid="no", log_only="require"), "log-only") == (
        "required:log-only,namespace"
    )


def _ad(policy: dict[str, Any], switch: str = "setuid") -> dict[str, object]:
    entry = {"name": "e", "attrs": {"site": "S", "switch": switch}, "policy": policy}
    return parse_config({"entry": [entry]}).entry[0].ad(datetime.date(2026, 6, 1))


def test_switch_for_reads_the_entry_ad_and_the_vo_s_own_answers() -> None:
    policy: dict[str, Any] = {
        "multi_user": "yes",
        "setuid": "allow",
        "log_only": "unknown",
        "bypass_on_error": "yes",
        "vo": {"cms": {"setuid": "require"}, "alice": {"multi_user": "no"}},
    }
    ad = _ad(policy)
    assert switch_for(OPT, ad, ALL).label() == "optional:setuid"
    assert switch_for(OPT, ad, ALL, "cms").label() == "required:setuid"
    assert switch_for(OPT, ad, ALL, "alice").mode is PilotMode.SINGLE_USER
    assert switch_for(OPT, ad, ALL, "atlas").label() == "optional:setuid"


def test_an_entry_without_answers_is_read_strictly() -> None:
    ad = _ad({})
    assert (ad["PolicyMultiUser"], ad["PolicySetuid"], ad["PolicyBypassOnError"]) == (
        "no",
        "no",
        "no",
    )
    assert switch_for(OPT, ad, ALL).mode is PilotMode.SINGLE_USER
    assert switch_for(OPT, {}, ALL).mode is PilotMode.SINGLE_USER


@pytest.mark.parametrize("value", ["YES", "maybe", 1, None, True])
def test_an_odd_ad_value_counts_as_no(value: object) -> None:
    ad = {"PolicyMultiUser": value, "PolicySetuid": "allow", "PolicyBypassOnError": "yes"}
    assert switch_for(OPT, ad, ALL).mode is PilotMode.SINGLE_USER
