"""One frontend cycle at scale: match idle autoclusters to entries, then plan pressure.

A synthetic but plausible pool: entries of several shapes (cpus, memory, wall time,
GPUs, CVMFS, OS) at many sites, and autoclusters of idle jobs with a mix of requests and
``Requirements`` (none, CVMFS, OS, GPUs, site white lists of a few sites). One cycle is
:meth:`pilotage.frontend.matching.Matcher.demand` plus
:func:`pilotage.frontend.pressure.plan` over every (group, entry) with demand or pilots.

*cold* is a cycle with a fresh matcher (a frontend that just started); *warm* is the next
cycle of the same matcher (its memo of evaluations kept, as in steady state). Each is
the median of ``--repeat`` runs.

    .venv/bin/python bench/frontend.py [--entries 300] [--jobs 100000] [--autoclusters 1000]

Prints ``BENCH <name> <value> <unit>`` lines at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Mapping

from pilotage.frontend.matching import JobGroup, Matcher
from pilotage.frontend.pressure import (
    EntryState,
    Limits,
    Observation,
    PressureConfig,
    RemoveExcess,
    plan,
)

GROUPS = ("production", "analysis", "test")


def make_entries(count: int, rng: random.Random) -> dict[str, dict[str, object]]:
    """Entry ads as :meth:`pilotage.factory.entries.Entry.ad` makes them."""
    entries: dict[str, dict[str, object]] = {}
    for i in range(count):
        cpus = rng.choice((1, 4, 8, 8, 16, 32))
        gpus = rng.choice((0,) * 9 + (2,))
        entries[f"entry-{i:04d}"] = {
            "EntryName": f"entry-{i:04d}",
            "Site": f"SITE_{i // 3:03d}",
            "Cpus": cpus,
            "Memory": cpus * rng.choice((2000, 2000, 4000)),
            "Disk": cpus * 20000,
            "GPUs": gpus,
            "TimeToLive": rng.choice((7200, 86400, 86400, 172800)),
            "OpSys": "LINUX",
            "OpSysMajorVer": rng.choice((8, 9, 9)),
            "Arch": "X86_64",
            "HasCvmfs": rng.random() < 0.7,
            "HasSwitch": rng.random() < 0.6,
            "SwitchMode": "setuid",
            "PolicyMultiUser": "yes",
        }
    return entries


def make_groups(count: int, jobs: int, sites: int, rng: random.Random) -> list[JobGroup]:
    """``count`` autoclusters holding ``jobs`` idle jobs in all (a long-tailed mix)."""
    white_lists = [
        ",".join(f"SITE_{rng.randrange(sites):03d}" for _ in range(rng.randint(1, 6)))
        for _ in range(40)
    ]
    templates = [
        "true",
        "HasCvmfs =?= true",
        'OpSys == "LINUX" && OpSysMajorVer >= 9',
        "HasCvmfs =?= true && OpSysMajorVer == 9",
        "GPUs >= 1",
        "HasSwitch =?= true",
        *[f'stringListMember(Site, "{w}")' for w in white_lists],
        *[f'HasCvmfs =?= true && stringListMember(Site, "{w}")' for w in white_lists[:10]],
    ]
    weights = [rng.paretovariate(1.2) for _ in range(count)]
    scale = jobs / sum(weights)
    idle = [max(1, int(w * scale)) for w in weights]
    idle[0] += jobs - sum(idle)
    groups = []
    for i in range(count):
        cpus = rng.choice((1, 1, 1, 2, 4, 8))
        groups.append(
            JobGroup(
                id=i,
                idle=max(1, idle[i]),
                cpus=cpus,
                memory_mb=cpus * rng.choice((1000, 1500, 2000, 3000)),
                disk_mb=rng.choice((1000, 5000, 10000)),
                gpus=1 if rng.random() < 0.03 else 0,
                max_wall_time_s=rng.choice((1800, 3600, 7200, 36000)),
                requirements=rng.choice(templates),
                attrs={"RequestCpus": cpus},
                group=rng.choice(GROUPS),
            )
        )
    return groups


def cycle(
    matcher: Matcher,
    groups: list[JobGroup],
    entries: Mapping[str, Mapping[str, object]],
    states: Mapping[tuple[str, str], EntryState],
    config: PressureConfig,
) -> tuple[float, float, int]:
    """One cycle; (match seconds, plan seconds, requests with idle pilots wanted)."""
    start = time.perf_counter()
    demand = matcher.demand(groups, entries)
    matched = time.perf_counter()
    observations = [Observation(g, e, d) for (g, e), d in demand.items()]
    requests, _ = plan(observations, states, config)
    planned = time.perf_counter()
    return matched - start, planned - matched, sum(1 for r in requests if r.idle_wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--autoclusters", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    entries = make_entries(args.entries, rng)
    groups = make_groups(args.autoclusters, args.jobs, (args.entries + 2) // 3, rng)
    config = PressureConfig(
        entry=Limits(max_idle=20, max_running=500, idle_curb=10),
        groups={g: Limits(max_idle=1000, max_running=20000, idle_curb=1000) for g in GROUPS},
        total=Limits(max_idle=2000, max_running=50000, idle_curb=2000),
        remove_excess=RemoveExcess.WAIT,
    )
    states: dict[tuple[str, str], EntryState] = {}
    cold: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    wanted = 0
    for _ in range(args.repeat):
        matcher = Matcher()
        match_s, plan_s, wanted = cycle(matcher, groups, entries, states, config)
        cold.append((match_s, plan_s))
        match_s, plan_s, wanted = cycle(matcher, groups, entries, states, config)
        warm.append((match_s, plan_s))
    print(
        f"{args.entries} entries, {sum(g.idle for g in groups)} idle jobs in "
        f"{len(groups)} autoclusters; {wanted} (group, entry) requests want pilots"
    )
    for name, runs in (("cold", cold), ("warm", warm)):
        total = statistics.median(m + p for m, p in runs)
        match = statistics.median(m for m, _ in runs)
        pressure = statistics.median(p for _, p in runs)
        print(f"BENCH frontend_cycle_{name} {total:.3f} s")
        print(f"BENCH frontend_match_{name} {match:.3f} s")
        print(f"BENCH frontend_pressure_{name} {pressure:.3f} s")


if __name__ == "__main__":
    main()
