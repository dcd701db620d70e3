"""The idle-job index: grouping into autoclusters, churn, re-clustering."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from pilotage.errors import BadInput
from pilotage.matchmaking.ads import SlotAd, Submitter
from pilotage.matchmaking.autocluster import AutoclusterIndex


def test_hundred_jobs_three_shapes(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    shapes = [
        {"cpus": 1, "memory_mb": 1000},
        {"cpus": 2, "memory_mb": 4000},
        {"cpus": 1, "memory_mb": 1000, "requirements": 'OpSys == "LINUX"'},
    ]
    for i in range(100):
        owner = ("alice", "bob")[i % 2]
        index.add(i, make_job(owner, cluster_id=i // 10, proc_id=i % 10, qdate=i, **shapes[i % 3]))
    assert len(index) == 100
    assert index.autocluster_count() == 3
    assert len({index.autocluster_of(i) for i in range(100)}) == 3
    # Owner is not significant: both users share the autoclusters, each with own queues.
    assert set(index.submitters()) == {Submitter("alice"), Submitter("bob")}
    assert len(list(index.queues_of(Submitter("alice")))) == 3


def test_attributes_read_by_requirements_are_significant(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    req = "TARGET.Site == MY.WantSite"
    index.add(1, make_job(requirements=req, attrs={"WantSite": '"A"', "Colour": '"red"'}))
    index.add(2, make_job(requirements=req, attrs={"WantSite": '"B"', "Colour": '"red"'}))
    index.add(3, make_job(requirements=req, attrs={"WantSite": '"A"', "Colour": '"blue"'}))
    assert index.autocluster_of(1) == index.autocluster_of(3) != index.autocluster_of(2)
    assert index.autocluster_count() == 2


def test_indirect_references_are_followed(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    req = "TARGET.Memory >= MY.Need"
    index.add(1, make_job(requirements=req, attrs={"Need": "Base * 2", "Base": "1000"}))
    index.add(2, make_job(requirements=req, attrs={"Need": "Base * 2", "Base": "3000"}))
    assert index.autocluster_count() == 2


def test_start_expression_makes_job_attribute_significant(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    index = AutoclusterIndex()
    for i in range(20):
        index.add(i, make_job(proc_id=i, attrs={"Project": f'"p{i % 4}"'}))
    assert index.autocluster_count() == 1
    assert not index.observe_start(SlotAd.from_classad(make_slot(start="true")))
    assert index.observe_start(SlotAd.from_classad(make_slot(start='TARGET.Project == "p1"')))
    assert "project" in index.significant_attrs
    assert index.autocluster_count() == 4
    assert len(index) == 20
    # Jobs added after the re-clustering land in the right autoclusters too.
    index.add(100, make_job(proc_id=100, attrs={"Project": '"p1"'}))
    assert index.autocluster_of(100) == index.autocluster_of(1)
    # Seeing the same START again costs nothing.
    assert not index.observe_start(SlotAd.from_classad(make_slot(start='TARGET.Project == "p1"')))


def test_per_job_attribute_in_requirements(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    for i in range(5):
        index.add(i, make_job(proc_id=i, requirements="MY.ProcId < 3"))
    assert index.autocluster_count() == 5  # each job is its own shape for matching


def test_remove_and_readd(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    index.add(1, make_job())
    assert index.remove(1) and not index.remove(1)
    assert len(index) == 0 and index.autocluster_count() == 0
    assert list(index.submitters()) == []
    index.add(1, make_job(cpus=2))
    index.add(1, make_job(cpus=4))  # re-adding replaces
    assert len(index) == 1
    request = index.request_of(1)
    assert request is not None and request.cpus == 4


def test_bad_job_refused(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    ad = make_job()
    ad["RequestMemory"] = "lots"
    with pytest.raises(BadInput, match="RequestMemory"):
        index.add(1, ad)
    del ad["Owner"]
    with pytest.raises(BadInput, match="Owner"):
        index.add(1, ad)
    assert len(index) == 0


def test_churn_keeps_order_and_counts(make_job: Callable[..., Any]) -> None:
    """Random adds and removes: the index always yields exactly the live jobs, in order."""
    rng = random.Random(7)
    index = AutoclusterIndex()
    live: dict[int, tuple[int, int, int]] = {}  # job id -> ordering key
    next_id = 0
    for step in range(3000):
        if live and rng.random() < 0.45:
            job_id = rng.choice(sorted(live))
            assert index.remove(job_id)
            del live[job_id]
        else:
            next_id += 1
            prio = rng.choice([0, 0, 0, 5])
            shape = rng.randrange(6)
            index.add(
                next_id,
                make_job(
                    cluster_id=next_id,
                    qdate=step,
                    prio=prio,
                    cpus=1 + shape % 3,
                    memory_mb=1000 * (1 + shape // 3),
                ),
            )
            live[next_id] = (-prio, step, next_id)
        if step % 250 == 0:
            everything = index.best_for(Submitter("alice"), len(live) + 1, lambda ac: True)
            assert everything == sorted(live, key=live.__getitem__)
    assert len(index) == len(live)
    assert index.autocluster_count() == len({index.autocluster_of(j) for j in live})


def test_reclustering_keeps_autoclusters_that_do_not_split(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    index = AutoclusterIndex()
    for i in range(30):
        project = f'"p{i % 3}"'
        index.add(i, make_job(proc_id=i, cpus=1 + i % 3, attrs={"Project": project}))
    before = {i: index.autocluster_of(i) for i in range(30)}
    assert index.observe_start(SlotAd.from_classad(make_slot(start="TARGET.Project != 1")))
    assert {i: index.autocluster_of(i) for i in range(30)} == before


def test_best_jobs_visit_only_the_queues_that_matter(make_job: Callable[..., Any]) -> None:
    index = AutoclusterIndex()
    for shape in range(100):  # 100 autoclusters of one submitter; shape 0 was submitted first
        for k in range(5):
            job_id = shape * 5 + k
            index.add(job_id, make_job(cluster_id=shape, proc_id=k, qdate=job_id, cpus=1 + shape))
    asked: list[int] = []

    def matches(ac: Any) -> bool:
        asked.append(ac.id)
        return ac.cpus != 2  # shape 1 does not match

    assert index.best_for(Submitter("alice"), 8, matches) == [0, 1, 2, 3, 4, 10, 11, 12]
    assert len(asked) == 3  # shapes 0, 1 (refused) and 2; the other 97 are never asked
    # Claiming the best jobs moves the queues: the order follows.
    for job_id in (0, 1, 2, 3, 4, 10):
        index.remove(job_id)
    assert index.best_for(Submitter("alice"), 3, lambda ac: True) == [5, 6, 7]
    index.add(999, make_job(cluster_id=50, proc_id=9, qdate=999, cpus=51, prio=3))
    assert index.best_for(Submitter("alice"), 2, lambda ac: True) == [999, 5]
