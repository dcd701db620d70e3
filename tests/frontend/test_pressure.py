"""The constant-pressure algorithm: ramp-up, curbs, limits and remove-excess, without I/O."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pilotage.errors import OperatorError
from pilotage.frontend.pressure import (
    EntryState,
    Limits,
    Observation,
    PressureConfig,
    Removal,
    RemoveExcess,
    Request,
    plan,
)

WIDE = Limits(max_idle=100, max_running=1000, idle_curb=100)


def one(
    obs: Observation, cfg: PressureConfig, state: EntryState | None = None
) -> tuple[Request, EntryState]:
    states = {} if state is None else {obs.key: state}
    (request,), new = plan([obs], states, cfg)
    return request, new[obs.key]


def cycles(cfg: PressureConfig, observations: list[Observation], n: int) -> list[list[Request]]:
    """Run ``n`` cycles with the same observations; return every cycle's requests."""
    states: Mapping[tuple[str, str], EntryState] = {}
    out = []
    for _ in range(n):
        requests, states = plan(observations, states, cfg)
        out.append(requests)
    return out


def test_no_demand_no_pilots() -> None:
    request, state = one(Observation("g", "e", demand=0), PressureConfig())
    assert (request.idle_wanted, request.max_running, request.removal) == (0, 0, Removal.NONE)
    assert state == EntryState()


def test_never_one_pilot_per_job() -> None:
    cfg = PressureConfig(entry=Limits(max_idle=10, max_running=1000, idle_curb=10))
    requests = cycles(cfg, [Observation("g", "e", demand=5000)], 10)
    assert max(r.idle_wanted for (r,) in requests) == 10


def test_target_never_exceeds_demand_rounded_up() -> None:
    cfg = PressureConfig(entry=WIDE, ramp_up_min=50)
    request, _ = one(Observation("g", "e", demand=2.2), cfg)
    assert request.idle_wanted == 3


def test_ramp_up_doubles_from_the_minimum() -> None:
    cfg = PressureConfig(entry=WIDE, ramp_up_min=2, ramp_up_factor=2.0)
    requests = cycles(cfg, [Observation("g", "e", demand=1000)], 8)
    assert [r.idle_wanted for (r,) in requests] == [2, 4, 8, 16, 32, 64, 100, 100]


def test_ramp_up_factor_one_grows_by_nothing_past_the_minimum() -> None:
    cfg = PressureConfig(entry=WIDE, ramp_up_min=3, ramp_up_factor=1.0)
    requests = cycles(cfg, [Observation("g", "e", demand=1000)], 4)
    assert [r.idle_wanted for (r,) in requests] == [3, 3, 3, 3]


def test_ramp_down_is_immediate() -> None:
    cfg = PressureConfig(entry=WIDE, ramp_up_min=50)
    request, _ = one(Observation("g", "e", demand=4), cfg, EntryState(target=50))
    assert request.idle_wanted == 4


def test_curb_halves_what_lies_above_it() -> None:
    cfg = PressureConfig(
        entry=Limits(max_idle=100, max_running=1000, idle_curb=10), ramp_up_min=100
    )
    request, _ = one(Observation("g", "e", demand=30), cfg)
    assert request.idle_wanted == 10 + 20 // 2


def test_max_idle_caps_after_the_curb() -> None:
    cfg = PressureConfig(entry=Limits(max_idle=12, max_running=1000, idle_curb=10), ramp_up_min=100)
    request, _ = one(Observation("g", "e", demand=1000), cfg)
    assert request.idle_wanted == 12


def test_max_running_counts_running_pilots() -> None:
    cfg = PressureConfig(entry=Limits(max_idle=10, max_running=25, idle_curb=10), ramp_up_min=10)
    request, _ = one(Observation("g", "e", demand=100, pilots_running=20), cfg)
    assert request.idle_wanted == 5
    assert request.max_running == 25


def test_max_running_reached_wants_no_more() -> None:
    cfg = PressureConfig(entry=Limits(max_idle=10, max_running=25, idle_curb=10), ramp_up_min=10)
    request, _ = one(Observation("g", "e", demand=100, pilots_running=30), cfg)
    assert request.idle_wanted == 0
    assert request.max_running == 25


def test_per_entry_override() -> None:
    cfg = PressureConfig(
        entry=WIDE,
        entries={"small": Limits(max_idle=1, max_running=1, idle_curb=1)},
        ramp_up_min=100,
    )
    requests, _ = plan(
        [Observation("g", "small", demand=50), Observation("g", "big", demand=50)], {}, cfg
    )
    assert {r.entry: r.idle_wanted for r in requests} == {"big": 50, "small": 1}


def test_group_idle_limit_cuts_in_proportion() -> None:
    cfg = PressureConfig(
        entry=WIDE,
        groups={"g": Limits(max_idle=10, max_running=1000, idle_curb=10)},
        ramp_up_min=100,
    )
    obs = [
        Observation("g", "a", demand=30),
        Observation("g", "b", demand=10),
        Observation("h", "c", demand=40),
    ]
    requests, _ = plan(obs, {}, cfg)
    wanted = {r.entry: r.idle_wanted for r in requests}
    assert wanted["a"] + wanted["b"] == 10
    assert (wanted["a"], wanted["b"]) in {(7, 3), (8, 2)}
    assert wanted["c"] == 40  # another group, unlimited


def test_cut_gives_leftover_units_deterministically() -> None:
    cfg = PressureConfig(
        entry=WIDE, groups={"g": Limits(max_idle=2, max_running=1000, idle_curb=2)}, ramp_up_min=100
    )
    obs = [Observation("g", name, demand=5) for name in ("c", "a", "b")]
    requests, _ = plan(obs, {}, cfg)
    assert [(r.entry, r.idle_wanted) for r in requests] == [("a", 1), ("b", 1), ("c", 0)]


def test_group_running_limit_counts_running_pilots_of_the_group() -> None:
    cfg = PressureConfig(
        entry=WIDE,
        groups={"g": Limits(max_idle=100, max_running=50, idle_curb=100)},
        ramp_up_min=100,
    )
    obs = [
        Observation("g", "a", demand=20, pilots_running=30),
        Observation("g", "b", demand=20, pilots_running=10),
    ]
    requests, _ = plan(obs, {}, cfg)
    assert sum(r.idle_wanted for r in requests) == 10


def test_global_limit_applies_across_groups() -> None:
    cfg = PressureConfig(
        entry=WIDE, total=Limits(max_idle=6, max_running=1000, idle_curb=6), ramp_up_min=100
    )
    obs = [Observation("g", "a", demand=30), Observation("h", "a", demand=30)]
    requests, _ = plan(obs, {}, cfg)
    assert [r.idle_wanted for r in requests] == [3, 3]


def test_excess_with_policy_no_is_kept() -> None:
    cfg = PressureConfig(remove_excess=RemoveExcess.NO)
    request, state = one(Observation("g", "e", demand=0, pilots_idle=5), cfg)
    assert request.removal is Removal.NONE
    assert state.excess_cycles == 1


def test_excess_with_policy_idle_is_removed_at_once() -> None:
    cfg = PressureConfig(entry=WIDE, remove_excess=RemoveExcess.IDLE, ramp_up_min=100)
    request, _ = one(Observation("g", "e", demand=2, pilots_idle=5), cfg)
    assert (request.idle_wanted, request.removal, request.remove_idle) == (2, Removal.IDLE, 3)


def test_excess_with_policy_wait_is_removed_after_the_grace_cycles() -> None:
    cfg = PressureConfig(remove_excess=RemoveExcess.WAIT, remove_wait_cycles=2)
    obs = [Observation("g", "e", demand=0, pilots_idle=4)]
    requests = cycles(cfg, obs, 4)
    assert [r.removal for (r,) in requests] == [
        Removal.NONE,
        Removal.NONE,
        Removal.IDLE,
        Removal.IDLE,
    ]
    assert requests[2][0].remove_idle == 4


def test_wait_counter_resets_when_demand_returns() -> None:
    cfg = PressureConfig(entry=WIDE, remove_excess=RemoveExcess.WAIT, remove_wait_cycles=1)
    _, state = one(Observation("g", "e", demand=0, pilots_idle=4), cfg)
    assert state.excess_cycles == 1
    request, state = one(Observation("g", "e", demand=10, pilots_idle=4), cfg, state)
    assert (request.removal, state.excess_cycles) == (Removal.NONE, 0)
    request, state = one(Observation("g", "e", demand=0, pilots_idle=4), cfg, state)
    assert (request.removal, state.excess_cycles) == (Removal.NONE, 1)


def test_policy_all_retires_running_pilots_when_drained() -> None:
    cfg = PressureConfig(remove_excess=RemoveExcess.ALL)
    request, _ = one(Observation("g", "e", demand=0, pilots_idle=2, pilots_running=3), cfg)
    assert (request.removal, request.remove_idle) == (Removal.ALL, 2)
    request, _ = one(Observation("g", "e", demand=0, pilots_running=3), cfg)
    assert request.removal is Removal.ALL


def test_policy_all_only_removes_excess_idle_while_jobs_remain() -> None:
    cfg = PressureConfig(entry=WIDE, remove_excess=RemoveExcess.ALL, ramp_up_min=100)
    request, _ = one(Observation("g", "e", demand=1, pilots_idle=3, pilots_running=3), cfg)
    assert (request.removal, request.remove_idle) == (Removal.IDLE, 2)


def test_state_of_unobserved_entries_is_dropped() -> None:
    _, states = plan(
        [Observation("g", "a", demand=1)], {("g", "b"): EntryState(target=4)}, PressureConfig()
    )
    assert set(states) == {("g", "a")}


def test_requests_are_sorted_and_duplicates_refused() -> None:
    obs = [Observation("g", "b", demand=1), Observation("g", "a", demand=1)]
    requests, _ = plan(obs, {}, PressureConfig())
    assert [r.entry for r in requests] == ["a", "b"]
    with pytest.raises(ValueError, match="observed twice"):
        plan([*obs, Observation("g", "a", demand=3)], {}, PressureConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_idle": 2, "idle_curb": 3}, "idle_curb"),
        ({"max_idle": -1, "idle_curb": 0}, "negative"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(OperatorError, match=message):
        Limits(**kwargs)


def test_bad_ramp_up_is_refused() -> None:
    with pytest.raises(OperatorError, match="ramp_up"):
        PressureConfig(ramp_up_factor=0.5)


def test_ramp_up_grows_from_the_pilots_already_queued() -> None:
    cfg = PressureConfig(entry=WIDE, ramp_up_min=2, ramp_up_factor=2.0)
    request, _ = one(Observation("g", "e", demand=100, pilots_idle=10), cfg)
    assert request.idle_wanted == 20
    assert request.removal is Removal.NONE
