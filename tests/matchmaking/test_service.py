"""The matchmaker follows the database's change feed, on SQLite and PostgreSQL."""

from __future__ import annotations

from pilotage.matchmaking.ads import Submitter
from pilotage.matchmaking.service import MatchService, MatchSettings
from pilotage.queue import jobs as queue
from pilotage.queue.history import Actor
from pilotage.queue.jobad import slot_ad
from pilotage.queue.spec import JobSpec
from pilotage.store.engine import Store


def _submit(store: Store, owner: str, count: int, now: float, **spec: object) -> int:
    actor = Actor(owner)
    with store.write() as conn:
        cluster = queue.open_cluster(conn, actor, now)
        queue.commit_cluster(conn, cluster, actor, [JobSpec(executable="x", **spec)] * count, now)
    return cluster


def _slot(cpus: int = 4, memory: int = 8000) -> object:
    attrs = {"Cpus": cpus, "Memory": memory, "Disk": 100000, "GPUs": 0, "TimeToLive": 10**6}
    return slot_ad(attrs, "true")


def test_index_follows_submits_holds_and_releases(store: Store) -> None:
    service = MatchService(MatchSettings(full_sync_s=3600))
    with store.read() as conn:
        service.repair(conn, now=100.0)
    assert service.candidates(_slot(), now=100.0) == []
    _submit(store, "alice", 3, now=101.0)
    with store.read() as conn:
        service.sync(conn)
    assert len(service.candidates(_slot(), now=102.0)) == 3
    with store.write() as conn:
        queue.act(conn, Actor("alice"), "hold", [queue.JobRef(1, 0)], reason=None, now=103.0)
    with store.read() as conn:
        service.sync(conn)
    assert len(service.candidates(_slot(), now=104.0)) == 2
    with store.write() as conn:
        queue.act(conn, Actor("alice"), "release", [queue.JobRef(1, 0)], reason=None, now=105.0)
    with store.read() as conn:
        service.repair(conn, now=106.0)  # the window re-read
    assert len(service.candidates(_slot(), now=106.0)) == 3


def test_only_jobs_that_fit_are_candidates(store: Store) -> None:
    service = MatchService(MatchSettings())
    _submit(store, "alice", 2, now=1.0, request_memory_mb=16000)
    _submit(store, "bob", 2, now=2.0, request_memory_mb=100)
    with store.read() as conn:
        service.repair(conn, now=3.0)
    chosen = service.candidates(_slot(memory=8000), now=3.0)
    assert len(chosen) == 2 and all(
        service.index.submitter_of(j) == Submitter("bob") for j in chosen
    )


def test_fair_share_state_and_factors_survive_a_restart(store: Store) -> None:
    service = MatchService(MatchSettings())
    with store.write() as conn:
        service.set_factor(conn, "alice", 2.0, by="root", now=1.0)
        service.save(conn, now=1.0)
    again = MatchService(MatchSettings())
    with store.read() as conn:
        again.restore(conn)
    assert again.accountant.factor(Submitter("alice")) == 2.0
