"""Benchmark of Rank in the matchmaker: dispatch decisions through ``MatchService`` when a
share of the idle jobs carry a ``Rank`` over the slot (matchmaking/rank.py).

The same queue and slots as ``bench/matchmaking.py`` (its helpers are reused), with
``--rank-fraction`` of the job shapes given ``Rank = Memory`` (a Rank that reads the
slot, so each candidate of those shapes is compared with the slots that asked lately).
Slots ask in turn; each decision is ``MatchService.candidates()`` plus the claim
(``claimed()``, which forgets the pilot's offer). Run it with ``--rank-fraction 0`` for
the same path without Rank.

Ends with ``BENCH <name> <value> <unit>`` lines. Figures recorded in docs/benchmarks.md
(section "Rank").
"""

from __future__ import annotations

import argparse
import random
import time

from matchmaking import job_ads, job_shapes, slot_ads  # bench/matchmaking.py
from pilotage.matchmaking.service import MatchService, MatchSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--autoclusters", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rank-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: thread CPU time"
    )
    args = parser.parse_args()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    rng = random.Random(args.seed)
    shapes = job_shapes(args.autoclusters, args.users, rng)
    for k, shape in enumerate(shapes):
        if k < args.rank_fraction * len(shapes):
            shape["rank"] = "Memory"
    rng.shuffle(shapes)
    slots = slot_ads(args.slots, rng)
    service = MatchService(MatchSettings(half_life_s=3600, rank_window_s=15, rank_wait_s=60))
    for job_id, ad in enumerate(job_ads(args.jobs, shapes, rng), 1):
        service.index.add(job_id, ad)

    now = 1_700_100_000.0
    times: list[float] = []
    found_nothing = 0
    start = time.perf_counter()
    for i in range(args.decisions):
        slot = slots[i % len(slots)]
        now += 0.01  # 100 requests a second: the window holds the last 1,500 slots
        t0 = clock()
        found = service.candidates(slot, now)
        if found:
            request = service.index.request_of(found[0])
            assert request is not None
            service.claimed(found[0], request.cpus, now, pilot=f"pilot{i % len(slots)}")
        else:
            found_nothing += 1
        times.append(clock() - t0)
    loop_s = sum(times) if args.clock == "cpu" else time.perf_counter() - start
    times.sort()
    p50 = times[len(times) // 2] * 1e3
    p99 = times[int(len(times) * 0.99)] * 1e3
    rate = args.decisions / loop_s
    print(
        f"{args.decisions:,} decisions, {args.rank_fraction:.0%} of shapes with Rank: "
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, {rate:,.0f}/s; {found_nothing} found "
        f"nothing; {service.ranks.waiting()} jobs waiting for a slot they rank higher"
    )
    print(f"BENCH rank_decision_p50_ms {p50:.3f} ms")
    print(f"BENCH rank_decision_p99_ms {p99:.3f} ms")
    print(f"BENCH rank_decisions_per_s {rate:.0f} decisions/s")


if __name__ == "__main__":
    main()
