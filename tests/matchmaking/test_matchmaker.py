"""The matchmaker against a brute-force model, and its ordering rules one by one."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pilotage.matchmaking.ads import JobAd, MatchConfig, SlotAd, Submitter
from pilotage.matchmaking.autocluster import AutoclusterIndex
from pilotage.matchmaking.classads import copy_ad, parse_expr
from pilotage.matchmaking.fairshare import Accountant
from pilotage.matchmaking.matchmaker import Matchmaker


def _mm(jobs: dict[int, Any]) -> Matchmaker:
    index = AutoclusterIndex()
    for job_id, ad in jobs.items():
        index.add(job_id, ad)
    return Matchmaker(index, Accountant())


def test_job_priority_then_submission_order(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    mm = _mm(
        {
            1: make_job(cluster_id=5, proc_id=0, qdate=50),
            2: make_job(cluster_id=4, proc_id=1, qdate=40),
            3: make_job(cluster_id=4, proc_id=0, qdate=40),
            4: make_job(cluster_id=9, proc_id=0, qdate=90, prio=10, cpus=2),
        }
    )
    assert mm.candidates(make_slot(), now=0) == [4, 3, 2, 1]
    assert mm.candidates(make_slot(), now=0, limit=2) == [4, 3]


def test_wall_time_must_fit_before_the_pilot_retires(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    mm = _mm({1: make_job(wall_s=7200), 2: make_job(proc_id=1)})  # 2: default 3600 s
    assert mm.candidates(make_slot(ttl_s=7199), now=0) == [2]
    assert mm.candidates(make_slot(ttl_s=7200), now=0) == [1, 2]
    assert mm.candidates(make_slot(ttl_s=600), now=0) == []


def test_default_wall_time_is_configurable(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    index = AutoclusterIndex(MatchConfig(default_max_wall_time_s=60))
    index.add(1, make_job())
    assert Matchmaker(index, Accountant()).candidates(make_slot(ttl_s=600), now=0) == [1]


def test_slot_start_is_applied(make_job: Callable[..., Any], make_slot: Callable[..., Any]) -> None:
    mm = _mm({1: make_job("alice"), 2: make_job("bob", proc_id=1)})
    assert mm.candidates(make_slot(start='TARGET.Owner == "bob"'), now=0) == [2]
    assert mm.candidates(make_slot(start="MY.Cpus > 100"), now=0) == []


def test_resources_are_checked_without_the_clauses(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    ad = make_job(cpus=4)
    ad["Requirements"] = parse_expr("true")  # without the resource clauses, still needs 4 cpus
    mm = _mm({1: ad})
    assert mm.candidates(make_slot(cpus=2), now=0) == []
    assert mm.candidates(make_slot(cpus=4), now=0) == [1]


def test_identical_slots_reuse_cached_results(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    jobs = {i: make_job(proc_id=i, requirements=f'Site == "Site{i % 5}"') for i in range(50)}
    mm = _mm(jobs)
    mm.candidates(make_slot(site="Site1"), now=0)
    first = mm.evaluations
    for k in range(20):
        # Free resources differ, but the jobs' expressions do not read them: same cache key.
        assert mm.candidates(make_slot(f"slot{k}@p", cpus=1 + k % 8, site="Site1"), now=0)
    assert mm.evaluations == first


def test_fair_share_orders_submitters(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    mm = _mm({1: make_job("alice"), 2: make_job("bob", proc_id=1)})
    mm.accountant.charge(Submitter("alice"), 1_000_000, at=0)
    assert mm.candidates(make_slot(), now=1) == [2, 1]
    mm.accountant.set_factor("bob", 1000.0)
    assert mm.candidates(make_slot(), now=1) == [1, 2]


def _model(
    jobs: dict[int, JobAd], slot_ad: Any, accountant: Accountant, now: float, limit: int
) -> list[int]:
    """Pair by pair: symmetric ClassAd match plus the TTL check, then the ordering rules.

    A slot without START accepts every job (a pilot's choice; plain ClassAd matching
    would refuse it).
    """
    slot = SlotAd.from_classad(slot_ad)
    if slot.start is None:
        slot_ad = copy_ad(slot_ad)
        slot_ad["Requirements"] = parse_expr("true")
    by_submitter: dict[Submitter, list[JobAd]] = {}
    for job in jobs.values():
        by_submitter.setdefault(job.submitter, []).append(job)
    found: list[int] = []
    for submitter in accountant.order(by_submitter, now):
        matching = [
            j
            for j in by_submitter[submitter]
            if j.ad.symmetricMatch(slot_ad)
            and (slot.ttl_s is None or j.max_wall_time_s <= slot.ttl_s)
        ]
        matching.sort(key=lambda j: (-j.job_prio, j.qdate, j.cluster_id, j.proc_id))
        found.extend(j.job_id for j in matching)
    return found[:limit]


def test_agrees_with_pairwise_matching(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    rng = random.Random(11)
    requirements = [
        None,
        'OpSys == "LINUX"',
        'Site == "SiteB"',
        'Site != "SiteA" && HasSwitch',
        'stringListMember(Site, "SiteA,SiteC")',
        "TARGET.Memory >= 2 * MY.RequestMemory",
        "TARGET.TimeToLive > 20000 || MY.Short =?= true",
    ]
    starts = [None, "true", 'TARGET.Owner =!= "carol"', "TARGET.RequestGpus > 0 || MY.GPUs == 0",
              'TARGET.Project =?= "x" || MY.Site == "SiteC"']  # fmt: skip
    jobs: dict[int, JobAd] = {}
    index = AutoclusterIndex()
    accountant = Accountant()
    mm = Matchmaker(index, accountant)
    owners = ["alice", "bob", "carol"]
    for owner in owners:
        accountant.charge(Submitter(owner), rng.uniform(0, 50_000), at=0)
    next_id = 0
    for round_ in range(60):
        for _ in range(rng.randrange(1, 30)):
            next_id += 1
            attrs = {"Project": rng.choice(['"x"', '"y"'])}
            if rng.random() < 0.3:
                attrs["Short"] = "true"
            ad = make_job(
                rng.choice(owners),
                cluster_id=next_id // 7,
                proc_id=next_id % 7,
                qdate=next_id // 3,
                prio=rng.choice([0, 0, 1]),
                cpus=rng.choice([1, 2, 4]),
                memory_mb=rng.choice([1000, 2000, 8000]),
                gpus=rng.choice([0, 0, 0, 1]),
                wall_s=rng.choice([None, 7200, 40_000]),
                requirements=rng.choice(requirements),
                attrs=attrs,
            )
            index.add(next_id, ad)
            jobs[next_id] = JobAd.from_classad(next_id, ad, MatchConfig())
        slot_ad = make_slot(
            cpus=rng.choice([1, 2, 4, 8]),
            memory_mb=rng.choice([2000, 4000, 16_000]),
            gpus=rng.choice([0, 1]),
            ttl_s=rng.choice([3000, 10_000, 50_000]),
            site=rng.choice(["SiteA", "SiteB", "SiteC"]),
            start=rng.choice(starts),
        )
        expected = _model(jobs, slot_ad, accountant, now=round_, limit=5)
        assert mm.candidates(slot_ad, now=round_, limit=5) == expected
        if expected:  # the dispatcher claims the first one
            claimed = expected[0]
            submitter, request = index.submitter_of(claimed), index.request_of(claimed)
            assert submitter is not None and request is not None
            accountant.adjust(submitter, request.cpus, at=round_)
            del jobs[claimed]
            index.remove(claimed)


def test_ads_as_the_queue_and_collector_build_them() -> None:
    """The server's own ad builders (pilotage.queue.jobad) feed the matchmaker as they are."""
    from pilotage.queue.jobad import build_job_ad, load_ad, slot_ad
    from pilotage.queue.spec import JobSpec

    index = AutoclusterIndex()
    for proc_id in range(10):
        spec = JobSpec(
            executable="run.sh",
            arguments=[str(proc_id)],
            request_cpus=2,
            request_memory_mb=3000,
            requirements='OpSys == "LINUX"',
            attrs={"Project": '"higgs"'},
        )
        text = build_job_ad(spec, cluster_id=7, proc_id=proc_id, owner="alice", qdate=1000)
        index.add(100 + proc_id, load_ad(text))
    assert index.autocluster_count() == 1  # Arguments and GlobalJobId differ, ignored
    mm = Matchmaker(index, Accountant())

    def offer(cpus: int, memory_mb: int) -> Any:
        attrs = {"OpSys": "LINUX", "Arch": "X86_64", "Name": "n", "PilotId": "p", "Site": "s"}
        attrs.update({"Cpus": cpus, "Memory": memory_mb, "Disk": 10_000, "GPUs": 0})
        return slot_ad({**attrs, "TimeToLive": 86_400}, 'TARGET.Project == "higgs"')

    assert mm.candidates(offer(4, 8000), now=0, limit=3) == [100, 101, 102]
    assert mm.candidates(offer(1, 8000), now=0) == []
