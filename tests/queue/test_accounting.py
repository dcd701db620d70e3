"""Accounting groups are the pool's word: a job names one only where the pool maps it."""

from __future__ import annotations

import pytest

from pilotage.errors import Denied
from pilotage.queue.jobad import check_accounting
from pilotage.queue.spec import JobSpec

GROUPS = {"group_physics": ("alice", "bob"), "group_open": ("*",)}


def spec(**fields: str) -> JobSpec:
    return JobSpec(executable="/bin/true", **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"accounting_group": "group_physics"},
        {"accounting_group": "group_open"},
        {"accounting_group": "group_physics", "accounting_group_user": "alice"},
    ],
)
def test_mapped_groups_are_accepted(fields: dict[str, str]) -> None:
    check_accounting(spec(**fields), "alice", GROUPS)


@pytest.mark.parametrize(
    ("owner", "fields", "named"),
    [
        ("carol", {"accounting_group": "group_physics"}, "carol may not use"),
        ("alice", {"accounting_group": "group_secret"}, "not one this pool maps"),
        ("alice", {"accounting_group_user": "bob"}, "is not you"),
    ],
)
def test_unmapped_groups_and_other_users_are_denied(
    owner: str, fields: dict[str, str], named: str
) -> None:
    with pytest.raises(Denied, match=named):
        check_accounting(spec(**fields), owner, GROUPS)


def test_with_no_mapping_no_group_is_allowed() -> None:
    with pytest.raises(Denied, match="not one this pool maps"):
        check_accounting(spec(accounting_group="group_physics"), "alice", {})
