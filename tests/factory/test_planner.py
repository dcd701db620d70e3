"""The factory's plan at one entry: submissions, removals, held pilots, limits, throttles."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pilotage.factory.entries import Entry, parse_config
from pilotage.factory.pilots import HeldPolicy, Pilot, PilotState, new_pilot
from pilotage.factory.planner import Wanted, plan_entry
from pilotage.frontend.pressure import Removal

POLICY = HeldPolicy(release_after_s=60, max_releases=2, remove_after_s=600)
S = PilotState


def entry(limits: dict[str, Any] | None = None, throttle: dict[str, Any] | None = None) -> Entry:
    table: dict[str, Any] = {"name": "e", "attrs": {"site": "S"}}
    table["limits"] = limits or {
        "max_idle": 100,
        "max_running": 1000,
        "max_held": 10,
        "per_frontend": {"max_idle": 100, "max_running": 1000, "max_held": 10},
    }
    table["throttle"] = throttle or {"submits_per_cycle": 100, "removals_per_cycle": 100}
    return parse_config({"entry": [table]}).entry[0]


def pilots(n: int, state: PilotState, frontend: str = "fe", since: float = 0.0) -> list[Pilot]:
    out = []
    for i in range(n):
        p = new_pilot(f"{frontend}-{state.value}-{i}", "e", str(i), at=float(i), frontend=frontend)
        out.append(replace(p, state=state, since=since))
    return out


def want(idle: int, max_running: int = 1000, frontend: str = "fe", **kw: Any) -> Wanted:
    return Wanted(frontend, "e", idle, max_running, **kw)


def test_submits_the_missing_idle_pilots() -> None:
    plan = plan_entry(entry(), [want(5)], pilots(2, S.IDLE), POLICY, now=0)
    assert plan.submit == {"fe": 3}
    assert plan.remove == [] and plan.release == []


def test_requests_for_other_entries_are_ignored() -> None:
    other = Wanted("fe", "elsewhere", 5, 100)
    assert plan_entry(entry(), [other], [], POLICY, now=0).submit == {}


def test_max_running_of_the_request_and_of_the_entry() -> None:
    plan = plan_entry(entry(), [want(10, max_running=12)], pilots(8, S.RUNNING), POLICY, now=0)
    assert plan.submit == {"fe": 4}
    limits = {
        "max_idle": 100,
        "max_running": 10,
        "max_held": 10,
        "per_frontend": {"max_running": 10},
    }
    plan = plan_entry(entry(limits), [want(10)], pilots(8, S.RUNNING), POLICY, now=0)
    assert plan.submit == {"fe": 2}


def test_per_frontend_and_entry_idle_limits() -> None:
    limits = {"max_idle": 6, "max_running": 1000, "max_held": 10, "per_frontend": {"max_idle": 4}}
    plan = plan_entry(
        entry(limits), [want(10, frontend="a"), want(10, frontend="b")], [], POLICY, 0
    )
    assert plan.submit == {"a": 3, "b": 3}
    plan = plan_entry(entry(limits), [want(10, frontend="a")], [], POLICY, 0)
    assert plan.submit == {"a": 4}


def test_throttle_is_shared_in_turn() -> None:
    e = entry(throttle={"submits_per_cycle": 5})
    plan = plan_entry(
        e, [want(10, frontend="a"), want(1, frontend="b"), want(10, frontend="c")], [], POLICY, 0
    )
    assert plan.submit == {"a": 2, "b": 1, "c": 2}


def test_no_submissions_while_at_max_held() -> None:
    limits = {"max_idle": 100, "max_running": 1000, "max_held": 10, "per_frontend": {"max_held": 2}}
    plan = plan_entry(entry(limits), [want(5)], pilots(2, S.HELD, since=0), POLICY, now=10)
    assert plan.submit == {}


def test_held_pilots_are_released_then_removed() -> None:
    held = pilots(1, S.HELD, since=0)
    assert plan_entry(entry(), [], held, POLICY, now=10).release == []
    assert plan_entry(entry(), [], held, POLICY, now=60).release == [held[0].id]
    tired = [replace(held[0], releases=2, reason="site says no")]
    plan = plan_entry(entry(), [], tired, POLICY, now=60)
    assert plan.release == []
    assert plan.remove == [(held[0].id, "held too long or too often: site says no")]


def test_held_beyond_max_held_are_removed_oldest_first() -> None:
    limits = {"max_idle": 100, "max_running": 1000, "max_held": 10, "per_frontend": {"max_held": 1}}
    held = [replace(p, since=float(i)) for i, p in enumerate(pilots(3, S.HELD))]
    plan = plan_entry(entry(limits), [], held, POLICY, now=10)
    assert [pid for pid, _ in plan.remove] == [held[0].id, held[1].id]


def test_remove_idle_takes_the_newest() -> None:
    idle = pilots(4, S.IDLE)
    plan = plan_entry(entry(), [want(0, removal=Removal.IDLE, remove_idle=2)], idle, POLICY, 0)
    assert [pid for pid, _ in plan.remove] == [idle[3].id, idle[2].id]
    assert plan.submit == {}


def test_remove_all_removes_idle_and_retires_running_of_that_frontend_only() -> None:
    mine = pilots(1, S.IDLE) + pilots(2, S.RUNNING)
    theirs = pilots(2, S.IDLE, frontend="other") + pilots(1, S.RUNNING, frontend="other")
    plan = plan_entry(entry(), [want(0, removal=Removal.ALL)], mine + theirs, POLICY, 0)
    assert [pid for pid, _ in plan.remove] == [mine[0].id]
    assert plan.retire == {"fe": [mine[1].id, mine[2].id]}


def test_a_retiring_pilot_is_removed_only_after_the_grace() -> None:
    e = entry(throttle={"removals_per_cycle": 10, "retire_grace_s": 600})
    retiring = [replace(p, retiring_since=100.0) for p in pilots(2, S.RUNNING)]
    during = plan_entry(e, [want(0, removal=Removal.ALL)], retiring, POLICY, now=699)
    assert during.remove == [] and during.retire == {}
    after = plan_entry(e, [want(0, removal=Removal.ALL)], retiring, POLICY, now=700)
    assert [pid for pid, _ in after.remove] == [p.id for p in retiring]
    assert all("after retiring" in why for _, why in after.remove)


def test_removals_are_throttled() -> None:
    e = entry(throttle={"removals_per_cycle": 2})
    plan = plan_entry(
        e, [want(0, removal=Removal.IDLE, remove_idle=5)], pilots(5, S.IDLE), POLICY, 0
    )
    assert len(plan.remove) == 2


def test_final_pilots_are_ignored() -> None:
    done = pilots(5, S.FINISHED) + pilots(5, S.FAILED)
    assert plan_entry(entry(), [want(3)], done, POLICY, 0).submit == {"fe": 3}
