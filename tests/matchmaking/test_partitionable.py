"""Partitionable slots: carving claims, giving them back, packing jobs side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pilotage.errors import Conflict
from pilotage.matchmaking.ads import Submitter, build_slot_ad
from pilotage.matchmaking.autocluster import AutoclusterIndex
from pilotage.matchmaking.fairshare import Accountant
from pilotage.matchmaking.matchmaker import Matchmaker
from pilotage.matchmaking.partitionable import Partition, Resources

PILOT = Resources(cpus=8, memory_mb=16_000, disk_mb=100_000, gpus=0)


def test_carve_and_release() -> None:
    part = Partition(PILOT)
    assert part.carve("c1", Resources(2, 4000, 1000, 0))
    assert part.free == Resources(6, 12_000, 99_000, 0)
    assert not part.carve("c2", Resources(7, 1, 1, 0))  # too many cpus: nothing changes
    assert part.free == Resources(6, 12_000, 99_000, 0)
    assert part.release("c1") == Resources(2, 4000, 1000, 0)
    assert part.free == PILOT and part.used == Resources()


def test_double_carve_and_release_refused() -> None:
    part = Partition(PILOT)
    part.carve("c1", Resources(1, 1, 1, 0))
    with pytest.raises(Conflict):
        part.carve("c1", Resources(1, 1, 1, 0))
    part.release("c1")
    with pytest.raises(Conflict):
        part.release("c1")
    assert part.free == PILOT


def test_negative_resources_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Resources(cpus=-1)


def _fill(part: Partition, mm: Matchmaker, owners: dict[int, str], now: float) -> list[int]:
    """Ask for work with the pilot's free resources until nothing more fits."""
    started: list[int] = []
    while True:
        ad = build_slot_ad(
            name="slot1@pilot", pilot_id="pilot", free=part.free, total=part.total, ttl_s=86_400
        )
        found = mm.candidates(ad, now)
        if not found:
            return started
        job_id = found[0]
        request = mm.index.request_of(job_id)
        assert request is not None and part.carve(f"claim-{job_id}", request)
        mm.index.remove(job_id)
        mm.accountant.adjust(Submitter(owners[job_id]), request.cpus, now)
        started.append(job_id)


def _pool(
    jobs: list[tuple[str, int, int]], make_job: Callable[..., Any]
) -> tuple[Matchmaker, dict[int, str]]:
    index = AutoclusterIndex()
    owners: dict[int, str] = {}
    for job_id, (owner, cpus, memory_mb) in enumerate(jobs, 1):
        index.add(
            job_id, make_job(owner, proc_id=job_id, qdate=job_id, cpus=cpus, memory_mb=memory_mb)
        )
        owners[job_id] = owner
    return Matchmaker(index, Accountant()), owners


def test_packs_four_two_cpu_jobs(make_job: Callable[..., Any]) -> None:
    mm, owners = _pool([("alice", 2, 4000)] * 10, make_job)
    part = Partition(PILOT)
    assert _fill(part, mm, owners, now=0) == [1, 2, 3, 4]
    assert part.free.cpus == 0 and len(mm.index) == 6


def test_packs_eight_one_cpu_jobs(make_job: Callable[..., Any]) -> None:
    mm, owners = _pool([("alice", 1, 2000)] * 10, make_job)
    part = Partition(PILOT)
    assert len(_fill(part, mm, owners, now=0)) == 8
    assert part.free == Resources(0, 0, PILOT.disk_mb - 8 * 100, 0)


def test_memory_bounds_packing(make_job: Callable[..., Any]) -> None:
    mm, owners = _pool([("alice", 2, 5000)] * 10, make_job)
    part = Partition(PILOT)
    assert len(_fill(part, mm, owners, now=0)) == 3  # 3 x 5000 MB of 16000; 2 cpus left idle
    assert part.free.cpus == 2


def test_mixed_users_and_shapes_side_by_side(make_job: Callable[..., Any]) -> None:
    jobs = [("alice", 2, 4000), ("bob", 1, 1000)] * 6
    mm, owners = _pool(jobs, make_job)
    part = Partition(PILOT)
    started = _fill(part, mm, owners, now=0)
    ran = {owners[j] for j in started}
    assert ran == {"alice", "bob"}
    assert part.used.cpus == 8
    assert sum(2 if owners[j] == "alice" else 1 for j in started) == 8


def test_freed_resources_return_to_the_pilot(make_job: Callable[..., Any]) -> None:
    mm, owners = _pool([("alice", 4, 4000)] * 3, make_job)
    part = Partition(PILOT)
    first = _fill(part, mm, owners, now=0)
    assert first == [1, 2] and _fill(part, mm, owners, now=1) == []
    part.release("claim-1")
    mm.accountant.adjust(Submitter("alice"), -4, 2)
    assert _fill(part, mm, owners, now=2) == [3]
