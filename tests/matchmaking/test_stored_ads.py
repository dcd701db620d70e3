"""Reading stored ads into the index, each shape parsed once, gives the index that parsing
every ad gives: the same autoclusters, order, submitters and requests. A big submit is
taken in by :meth:`MatchService.follow`, a dispatch's sync takes one slice."""

from __future__ import annotations

import classad2

from pilotage.matchmaking.ads import MatchConfig
from pilotage.matchmaking.autocluster import AutoclusterIndex
from pilotage.matchmaking.service import (
    FOLLOW_SLICE,
    RELOAD_CHUNK,
    MatchService,
    MatchSettings,
)
from pilotage.matchmaking.stored_ads import StoredAds
from pilotage.queue import jobs as queue
from pilotage.queue.history import Actor
from pilotage.queue.jobad import build_job_ad, load_ad
from pilotage.queue.spec import JobSpec
from pilotage.store.engine import Store


def _ads() -> list[tuple[int, str]]:
    ads = []
    job_id = 0
    plain = JobSpec(executable="/bin/true", request_memory_mb=100)
    for proc in range(50):  # one shape: parsed once
        job_id += 1
        ads.append(
            (job_id, build_job_ad(plain, cluster_id=1, proc_id=proc, owner="alice", qdate=10))
        )
    for proc in range(6):  # arguments differ (ignored), a per-job +Index and JobPrio do not
        job_id += 1
        spec = JobSpec(
            executable="/bin/true",
            arguments=[str(proc)],
            attrs={"Index": str(proc % 2)},
            priority=-proc,
        )
        ads.append((job_id, build_job_ad(spec, cluster_id=2, proc_id=proc, owner="bob", qdate=11)))
    for proc in range(3):  # a request that reads ProcId: each job read the long way
        job_id += 1
        ad = load_ad(build_job_ad(plain, cluster_id=3, proc_id=proc, owner="carol", qdate=12))
        ad["RequestMemory"] = classad2.ExprTree("100 + 50 * ProcId")
        ads.append((job_id, str(ad)))
    job_id += 1  # a ClusterId that is no plain count: the long way
    ad = load_ad(build_job_ad(plain, cluster_id=4, proc_id=0, owner="carol", qdate=13))
    ad["ClusterId"] = classad2.ExprTree("2 + 2")
    ads.append((job_id, str(ad)))
    return ads


def test_stored_ads_give_the_index_parsing_gives() -> None:
    config = MatchConfig()
    parsed, stored = AutoclusterIndex(config), AutoclusterIndex(config)
    reader = StoredAds(config)
    ads = _ads()
    for job_id, text in ads:
        parsed.add(job_id, load_ad(text))
        reader.add(stored, job_id, text)
    assert len(stored) == len(parsed) == len(ads)
    assert stored.autocluster_count() == parsed.autocluster_count()
    for job_id, _ in ads:
        a, b = parsed._jobs[job_id], stored._jobs[job_id]
        assert (a.neg_prio, a.qdate, a.cluster_id, a.proc_id) == (
            b.neg_prio, b.qdate, b.cluster_id, b.proc_id,
        )  # fmt: skip
        assert stored.submitter_of(job_id) == parsed.submitter_of(job_id)
        assert stored.request_of(job_id) == parsed.request_of(job_id)
        assert a.queue.autocluster.key == b.queue.autocluster.key
    assert [stored.request_of(i) for i in (57, 58, 59)] == [
        parsed.request_of(i) for i in (57, 58, 59)
    ]
    assert stored.request_of(59).memory_mb == 200  # type: ignore[union-attr]
    # 50 + 2 shapes read from their first ad; the 4 long-way jobs parsed each.
    assert reader.parsed == 1 + 2 + 3 + 1


def test_removed_and_added_again() -> None:
    config = MatchConfig()
    index = AutoclusterIndex(config)
    reader = StoredAds(config)
    for job_id, text in _ads()[:10]:
        reader.add(index, job_id, text)
    assert index.remove(3)
    reader.add(index, 3, _ads()[2][1])
    reader.add(index, 4, _ads()[3][1])  # the same id again replaces its entry
    assert len(index) == 10


def test_follow_takes_a_big_submit_in_and_sync_a_slice(store: Store) -> None:
    count = RELOAD_CHUNK + FOLLOW_SLICE + 7
    service = MatchService(MatchSettings(full_sync_s=3600))
    with store.read() as conn:
        service.repair(conn, now=100.0)
    actor = Actor("alice")
    with store.write() as conn:
        cluster = queue.open_cluster(conn, actor, 101.0)
        queue.commit_cluster(conn, cluster, actor, [JobSpec(executable="x")] * count, 101.0)
    with store.read() as conn:
        service.sync(conn)  # before a dispatch: one slice, not the whole submit
    assert len(service.index) == FOLLOW_SLICE
    with store.read() as conn:
        service.follow(conn)
    assert len(service.index) == count
    with store.write() as conn:
        queue.act(conn, actor, "hold", [queue.JobRef(cluster, 3)], reason=None, now=102.0)
    with store.read() as conn:
        service.follow(conn)
    assert len(service.index) == count - 1 and 4 not in service.index  # ids start at 1
    again = MatchService(MatchSettings(full_sync_s=3600))  # as a server that starts
    with store.read() as conn:
        again.restore(conn)
        again.repair(conn, now=103.0)  # read a chunk at a time
    assert len(again.index) == count - 1 and 4 not in again.index
