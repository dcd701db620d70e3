"""The frontend's matching: which entries admit which jobs, and demand in pilots."""

from __future__ import annotations

import pytest

from pilotage.factory.entries import parse_config
from pilotage.frontend.matching import JobGroup, Matcher


def ads(*entries: dict[str, object]) -> dict[str, dict[str, object]]:
    config = parse_config({"entry": list(entries)})
    return {e.name: e.ad() for e in config.entry}


ENTRIES = ads(
    {
        "name": "big",
        "attrs": {"site": "A", "cpus": 8, "memory_mb": 16000, "extra": {"HasCvmfs": True}},
    },
    {"name": "small", "attrs": {"site": "B", "cpus": 1, "memory_mb": 2000}},
    {"name": "short", "attrs": {"site": "C", "cpus": 4, "memory_mb": 8000, "max_walltime_s": 600}},
)


def test_demand_is_shared_among_matching_entries_in_pilots() -> None:
    demand = Matcher().demand(
        [JobGroup(1, idle=30, cpus=1, memory_mb=1000, max_wall_time_s=300)], ENTRIES
    )
    # 10 jobs each; big fits 8 per pilot, small 1, short 4.
    assert demand == pytest.approx(
        {("main", "big"): 10 / 8, ("main", "small"): 10.0, ("main", "short"): 10 / 4}
    )


def test_resources_and_walltime_exclude_entries() -> None:
    demand = Matcher().demand(
        [JobGroup(1, idle=4, cpus=2, memory_mb=4000, max_wall_time_s=3600)], ENTRIES
    )
    assert set(demand) == {("main", "big")}


def test_requirements_read_entry_attributes() -> None:
    groups = [
        JobGroup(1, idle=5, requirements="HasCvmfs =?= true"),
        JobGroup(2, idle=6, requirements='Site == "B" || Site == "C"', max_wall_time_s=60),
        JobGroup(3, idle=7, requirements='stringListMember(Site, "C")', max_wall_time_s=60),
    ]
    demand = Matcher().demand(groups, ENTRIES)
    assert demand[("main", "big")] == pytest.approx(5 / 8)
    assert demand[("main", "small")] == pytest.approx(3.0)
    assert demand[("main", "short")] == pytest.approx((3 + 7) / 4)


def test_requirements_read_the_jobs_own_attributes() -> None:
    groups = [
        JobGroup(
            1, idle=2, requirements="Memory >= 4 * RequestMemory", attrs={"RequestMemory": 3000}
        ),
    ]
    demand = Matcher().demand(groups, ENTRIES)
    assert set(demand) == {("main", "big")}


def test_no_idle_jobs_no_demand_and_groups_apart() -> None:
    groups = [
        JobGroup(1, idle=0),
        JobGroup(2, idle=1, group="cms", requirements='Site == "B"'),
        JobGroup(3, idle=1, group="atlas", requirements='Site == "B"'),
    ]
    assert Matcher().demand(groups, ENTRIES) == {("cms", "small"): 1.0, ("atlas", "small"): 1.0}


def test_memo_does_not_mix_different_entry_values() -> None:
    matcher = Matcher()
    group = JobGroup(1, idle=1, requirements='Site == "A"')
    assert set(matcher.demand([group], ENTRIES)) == {("main", "big")}
    moved = ads({"name": "big", "attrs": {"site": "Z", "cpus": 8, "memory_mb": 16000}})
    assert matcher.demand([group], moved) == {}
