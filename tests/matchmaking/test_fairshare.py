"""Fair share: decay, factors, persistence, group quotas, and convergence of shares."""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from pilotage.errors import BadInput, OperatorError
from pilotage.matchmaking.ads import SlotAd, Submitter
from pilotage.matchmaking.autocluster import AutoclusterIndex
from pilotage.matchmaking.fairshare import Accountant, FairShareConfig
from pilotage.matchmaking.matchmaker import Matchmaker

ALICE, BOB = Submitter("alice"), Submitter("bob")


def test_usage_halves_every_half_life() -> None:
    acc = Accountant(FairShareConfig(half_life_s=100))
    acc.charge(ALICE, 1000, at=0)
    assert acc.usage(ALICE, 100) == pytest.approx(500)
    assert acc.usage(ALICE, 300) == pytest.approx(125)


def test_running_cpus_integrate_to_steady_state() -> None:
    acc = Accountant(FairShareConfig(half_life_s=100))
    acc.adjust(ALICE, +4, at=0)
    k = math.log(2) / 100
    assert acc.usage(ALICE, 100) == pytest.approx(4 * (1 - 0.5) / k)
    # k * usage -> 4, plus a quarter (running_weight) of the 4 in use now.
    assert acc.real_priority(ALICE, 10_000) == pytest.approx(4 + 1)
    acc.adjust(ALICE, -4, at=10_000)
    assert acc.running(ALICE) == 0
    assert acc.real_priority(ALICE, 10_100) == pytest.approx(2)


def test_observe_sets_every_submitter() -> None:
    acc = Accountant()
    acc.observe({ALICE: 3, BOB: 1}, at=0)
    acc.observe({BOB: 2}, at=10)
    assert acc.running(ALICE) == 0 and acc.running(BOB) == 2
    assert acc.usage(ALICE, 10) == pytest.approx(30, rel=1e-3)


def test_time_never_runs_backwards() -> None:
    acc = Accountant(FairShareConfig(half_life_s=100))
    acc.charge(ALICE, 1000, at=100)
    acc.charge(ALICE, 0, at=50)  # late event: applied at the latest time seen
    assert acc.usage(ALICE, 100) == pytest.approx(1000)


def test_factors_and_base() -> None:
    acc = Accountant(FairShareConfig(factors={"bob": 3.0, "cms.bob": 5.0}))
    assert acc.effective_priority(ALICE, 0) == 0.5
    assert acc.effective_priority(BOB, 0) == 1.5
    assert acc.effective_priority(Submitter("bob", "cms"), 0) == 2.5
    with pytest.raises(BadInput):
        acc.set_factor("bob", 0)
    with pytest.raises(OperatorError):
        FairShareConfig(half_life_s=0)


def test_state_round_trips_through_json() -> None:
    acc = Accountant(FairShareConfig(half_life_s=100))
    acc.charge(ALICE, 1000, at=0)
    acc.adjust(Submitter("bob", "cms"), 2, at=5)
    acc.set_factor("alice", 2.0)
    again = Accountant.from_dict(json.loads(json.dumps(acc.to_dict())), acc.config)
    for who in (ALICE, Submitter("bob", "cms")):
        assert again.effective_priority(who, 50) == acc.effective_priority(who, 50)
    with pytest.raises(BadInput):
        Accountant.from_dict({"v": 1, "accounts": [{"owner": "x"}], "factors": {}})


def test_group_over_quota_only_gets_what_others_do_not_want() -> None:
    cms_a, cms_b, atlas = Submitter("a", "cms"), Submitter("b", "cms"), Submitter("c", "atlas")
    acc = Accountant(FairShareConfig(group_quotas={"cms": 10, "atlas": 10}, factors={"c": 100}))
    acc.adjust(cms_a, 6, at=0)
    acc.adjust(cms_b, 3, at=0)
    # cms runs 9 < 10: its better priority wins.
    assert acc.order([atlas, cms_a, cms_b], now=0)[0] in (cms_a, cms_b)
    acc.adjust(cms_b, 1, at=0)
    assert acc.over_quota("cms") and not acc.over_quota("atlas")
    assert acc.order([atlas, cms_a, cms_b], now=0) == [atlas, cms_b, cms_a]
    hard = Accountant(FairShareConfig(group_quotas={"cms": 10}, groups_accept_surplus=False))
    hard.adjust(cms_a, 10, at=0)
    assert hard.order([atlas, cms_a], now=0) == [atlas]


def test_group_quota_in_the_matchmaker(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    index = AutoclusterIndex()
    index.add(1, make_job("a", group="cms"))
    index.add(2, make_job("c", group="atlas", requirements='Site == "SiteB"'))
    acc = Accountant(FairShareConfig(group_quotas={"cms": 4}, factors={"c": 100}))
    mm = Matchmaker(index, acc)
    acc.adjust(Submitter("a", "cms"), 4, at=0)  # cms at quota
    assert mm.candidates(make_slot(site="SiteB"), now=0) == [2, 1]
    # atlas does not want SiteA: the over-quota group gets it.
    assert mm.candidates(make_slot(site="SiteA"), now=0) == [1]


def _simulate(
    factors: dict[str, float],
    make_job: Callable[..., Any],
    make_slot: Callable[..., Any],
    *,
    slots: int = 20,
    jobs_each: int = 1000,
) -> dict[str, float]:
    """Two users, short jobs, a pool of 1-cpu slots; cpu-seconds each used while both wait.

    Event loop: every slot that frees asks the matchmaker, claims the first candidate,
    and the job runs 80-120 s. Usage is integrated until one user has no idle job left.
    """
    rng = random.Random(3)
    acc = Accountant(FairShareConfig(half_life_s=600, factors=factors))
    index = AutoclusterIndex()
    mm = Matchmaker(index, acc)
    job_id = 0
    idle = {"alice": 0, "bob": 0}
    for i in range(jobs_each):
        for owner in ("alice", "bob"):
            job_id += 1
            index.add(job_id, make_job(owner, cluster_id=job_id, qdate=i))
            idle[owner] += 1
    slot = SlotAd.from_classad(make_slot(cpus=1, memory_mb=2000))
    used = {"alice": 0.0, "bob": 0.0}
    running = {"alice": 0, "bob": 0}
    ends: list[tuple[float, int, str]] = []
    now = 0.0
    free = list(range(slots))
    while True:
        for s in free:
            owner_job = mm.candidates(slot, now, limit=1)
            if not owner_job:
                continue
            claimed = owner_job[0]
            who = index.submitter_of(claimed)
            assert who is not None
            index.remove(claimed)
            acc.adjust(who, +1, now)
            idle[who.owner] -= 1
            running[who.owner] += 1
            heapq.heappush(ends, (now + rng.uniform(80, 120), s, who.owner))
        if min(idle.values()) == 0:
            return used
        end, s, owner = heapq.heappop(ends)
        for who in used:
            used[who] += running[who] * (end - now)
        now = end
        running[owner] -= 1
        acc.adjust(Submitter(owner), -1, now)
        free = [s]


def test_equal_factors_converge_to_equal_shares(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    used = _simulate({}, make_job, make_slot)
    assert used["alice"] / used["bob"] == pytest.approx(1.0, rel=0.05)


def test_factors_one_and_two_converge_to_two_to_one(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    used = _simulate({"alice": 1.0, "bob": 2.0}, make_job, make_slot)
    assert used["alice"] / used["bob"] == pytest.approx(2.0, rel=0.05)


def test_a_burst_of_requests_is_spread(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    """Twenty slots asking in the same second go ten and ten, not all to one user."""
    index = AutoclusterIndex()
    for i in range(40):
        index.add(i, make_job(("alice", "bob")[i % 2], proc_id=i, qdate=i))
    acc = Accountant()
    mm = Matchmaker(index, acc)
    got = {"alice": 0, "bob": 0}
    for _ in range(20):
        claimed = mm.candidates(make_slot(cpus=1), now=0, limit=1)[0]
        who = index.submitter_of(claimed)
        assert who is not None
        index.remove(claimed)
        acc.adjust(who, 1, at=0)
        got[who.owner] += 1
    assert got == {"alice": 10, "bob": 10}


def test_cached_ranking_follows_every_event() -> None:
    """The ranking cache gives the exact order, event after event (times 1 s apart)."""
    rng = random.Random(5)
    config = FairShareConfig(half_life_s=500, group_quotas={"g1": 6}, factors={"u3": 2.0})
    acc = Accountant(config)
    people = [Submitter(f"u{i}", rng.choice([None, "g1", "g2"])) for i in range(12)]
    for step in range(400):
        now = float(step // 3)  # three events per second
        who = rng.choice(people)
        event = rng.randrange(4)
        if event == 0:
            acc.charge(who, rng.uniform(0, 5000), now)
        elif event == 1:
            acc.adjust(who, rng.choice([-2, -1, 1, 2, 3]), now)
        elif event == 2 and step % 50 == 0:
            acc.set_factor(who.owner, rng.choice([0.5, 1.0, 3.0]))
        idle = rng.sample(people, rng.randrange(1, len(people)))
        exact = sorted(
            idle,
            key=lambda s: (
                acc.over_quota(s.group),
                acc.effective_priority(s, now),
                acc.running(s),
                s.name,
            ),
        )
        assert acc.order(idle, now) == exact
