"""Benchmark of the matchmaker's pure core: dispatch decisions against a large idle queue.

Builds an index of ``--jobs`` idle jobs in ``--autoclusters`` distinct shapes owned by
``--users`` submitters, and a pool of ``--slots`` slot ads (partitionable slots with
assorted free resources, sites, lifetimes and START expressions). Then, slot after slot,
it times one dispatch decision: ``Matchmaker.candidates()`` on the slot's ClassAd
(normalisation included) plus removing the chosen job from the index (the claim). The
fair-share bookkeeping of the claim (``Accountant.adjust``) runs outside the timed part
but inside the decisions-per-second figure.

``--pairwise`` measures plain pair-by-pair ``symmetricMatch`` instead, for comparison.

Ends with one ``BENCH <name> <value> <unit>`` line per figure. Figures recorded in
docs/benchmarks.md (section "Matchmaking").
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import time
from collections.abc import Iterator
from typing import Any

from pilotage.matchmaking.ads import build_job_ad, build_slot_ad
from pilotage.matchmaking.autocluster import AutoclusterIndex
from pilotage.matchmaking.fairshare import Accountant, FairShareConfig
from pilotage.matchmaking.matchmaker import Matchmaker
from pilotage.matchmaking.partitionable import Resources

SITES = [f"Site{i:02d}" for i in range(20)]
REQUIREMENTS = [
    None,
    'OpSys == "LINUX"',
    'OpSys == "LINUX" && Arch == "X86_64"',
    "HasSwitch",
    'SwitchMode == "setuid"',
    'stringListMember(Site, "Site00,Site01,Site02,Site03,Site04")',
    'Site != "Site19"',
    'Site == "Site07"',
    "TARGET.HasCvmfs =?= true",
    'TARGET.HasCvmfs =?= true && OpSys == "LINUX"',
]
STARTS = [None, "true", 'TARGET.Project =!= "banned"', "TARGET.RequestGpus > 0 || MY.GPUs == 0"]


def rss_mb() -> float:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def job_shapes(count: int, users: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` shapes that differ in at least one significant attribute."""
    combos = list(
        itertools.product(
            REQUIREMENTS, [1, 2, 4, 8], [1000, 2000, 4000, 8000, 12000], [3600, 7200, 21600, 43200],
            [1000, 5000],
        )
    )  # fmt: skip
    if count > len(combos):
        raise SystemExit(f"at most {len(combos)} autoclusters")
    rng.shuffle(combos)
    return [
        {
            "owner": f"user{k % users:03d}",
            "requirements": req,
            "request": Resources(cpus, memory, disk, 1 if k % 97 == 0 else 0),
            "max_wall_time_s": wall,
            "attrs": {"Project": f'"proj{k % users:03d}"'},
        }
        for k, (req, cpus, memory, wall, disk) in enumerate(combos[:count])
    ]


def job_ads(jobs: int, shapes: list[dict[str, Any]], rng: random.Random) -> Iterator[Any]:
    """Job ads, shape by shape in round robin, submitted in clusters of 100."""
    for job_id in range(1, jobs + 1):
        shape = shapes[job_id % len(shapes)]
        yield build_job_ad(
            cluster_id=1 + job_id // 100,
            proc_id=job_id % 100,
            qdate=1_700_000_000 + job_id // 10,
            job_prio=5 if rng.random() < 0.05 else 0,
            **shape,
        )


def slot_ads(count: int, rng: random.Random) -> list[Any]:
    """Partitionable slots as they ask for work: free amounts out of 8 cpus / 32 GB."""
    slots = []
    for i in range(count):
        total = Resources(8, 32_000, 200_000, 1 if i % 50 == 0 else 0)
        cpus = rng.choice([1, 2, 2, 4, 4, 8, 8, 8])
        free = Resources(cpus, cpus * 4000, 25_000 * cpus, total.gpus)
        slots.append(
            build_slot_ad(
                name=f"slot1@pilot{i}",
                pilot_id=f"pilot{i}",
                free=free,
                total=total,
                ttl_s=rng.choice([1800, 7200, 14_400, 50_000, 172_800]),
                site=rng.choice(SITES),
                start=rng.choice(STARTS),
                switch_mode=rng.choice(["setuid", "namespace"]),
                attrs={"HasCvmfs": rng.random() < 0.8},
            )
        )
    return slots


def run_pairwise(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    shapes = job_shapes(min(args.autoclusters, 200), args.users, rng)
    jobs = list(job_ads(len(shapes), shapes, rng))
    slots = slot_ads(200, rng)
    pairs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for slot in slots:
            for job in jobs:
                job.symmetricMatch(slot)
            pairs += len(jobs)
    rate = pairs / (time.perf_counter() - start)
    print(f"plain symmetricMatch: {rate:,.0f} pairs/s on one core")
    print(f"BENCH classad_symmetric_matches_per_s {rate:.0f} pairs/s")


def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    shapes = job_shapes(args.autoclusters, args.users, rng)
    slots = slot_ads(args.slots, rng)
    index = AutoclusterIndex()
    accountant = Accountant(FairShareConfig(half_life_s=3600))
    mm = Matchmaker(index, accountant)

    gc.collect()
    rss_before = rss_mb()
    add_s = 0.0
    for job_id, ad in enumerate(job_ads(args.jobs, shapes, rng), 1):
        t0 = time.perf_counter()
        index.add(job_id, ad)
        add_s += time.perf_counter() - t0
    gc.collect()
    index_mb = rss_mb() - rss_before
    print(
        f"index: {len(index):,} idle jobs in {index.autocluster_count():,} autoclusters, "
        f"{add_s / args.jobs * 1e6:.1f} us per add, ~{index_mb:.1f} MB resident"
    )

    # Each slot asks once before the timed run, as pilots would have: the timed part is
    # the steady state, and the first pass is reported apart (cold match caches).
    now = 1_700_100_000.0
    cold_start = time.perf_counter()
    for slot in slots[: args.warmup]:
        mm.candidates(slot, now)
    cold_s = time.perf_counter() - cold_start
    warm_evaluations = mm.evaluations

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    times: list[float] = []
    idle_slots = 0
    loop_start = time.perf_counter()
    for i in range(args.decisions):
        slot = slots[i % len(slots)]
        now += 0.01
        t0 = clock()
        found = mm.candidates(slot, now)
        if found:
            job_id = found[0]
            submitter = index.submitter_of(job_id)
            request = index.request_of(job_id)
            index.remove(job_id)
        times.append(clock() - t0)
        if found:
            assert submitter is not None and request is not None
            accountant.adjust(submitter, request.cpus, now)
        else:
            idle_slots += 1
    loop_s = time.perf_counter() - loop_start

    # Churn: jobs leaving idle other than by a claim (removed, held, claimed elsewhere).
    still_idle = sorted(j for j in range(1, args.jobs + 1) if j in index)
    leaving = rng.sample(still_idle, min(10_000, len(still_idle)))
    remove_start = time.perf_counter()
    for job_id in leaving:
        index.remove(job_id)
    remove_us = (time.perf_counter() - remove_start) / len(leaving) * 1e6

    times.sort()
    p50 = times[len(times) // 2] * 1e3
    p99 = times[int(len(times) * 0.99)] * 1e3
    mean = statistics.fmean(times) * 1e3
    slowest = times[-1] * 1e3
    rate = args.decisions / loop_s
    print(
        f"warm-up: {min(args.warmup, len(slots)):,} slots in {cold_s:.2f} s "
        f"({warm_evaluations:,} ClassAd evaluations)"
    )
    print(
        f"decisions: {args.decisions:,} in {loop_s:.2f} s; p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
        f"mean {mean:.3f} ms, max {slowest:.2f} ms; {idle_slots} found nothing; "
        f"{mm.evaluations - warm_evaluations:,} ClassAd evaluations; "
        f"{index.reclusters} re-clustering(s)"
    )
    print(f"churn: {remove_us:.2f} us per remove")
    print(f"BENCH matchmaking_decision_p50_ms {p50:.3f} ms")
    print(f"BENCH matchmaking_decision_p99_ms {p99:.3f} ms")
    print(f"BENCH matchmaking_decisions_per_s {rate:.0f} decisions/s")
    print(f"BENCH matchmaking_autocluster_add_us {add_s / args.jobs * 1e6:.1f} us/job")
    print(f"BENCH matchmaking_autocluster_remove_us {remove_us:.2f} us/job")
    print(f"BENCH matchmaking_index_memory_mb {index_mb:.1f} MB")
    print(f"BENCH matchmaking_index_bytes_per_job {index_mb * 2**20 / args.jobs:.0f} B/job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--autoclusters", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=0, help="slots asking before timing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time decisions by wall clock, or by this thread's CPU time (steadier on a busy host)",
    )
    parser.add_argument("--pairwise", action="store_true", help="plain symmetricMatch pairs/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of --pairwise")
    args = parser.parse_args()
    if args.pairwise:
        run_pairwise(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
