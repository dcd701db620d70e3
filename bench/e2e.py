"""End-to-end throughput with real agents and real jobs, side by side with Slurm.

A real ``pilotage server`` (SQLite or a throwaway PostgreSQL cluster), real agents (the
zipapp, started by the local backend with ``--pilots`` pilots sharing ``--slots`` cores
between them), and ``--jobs`` real ``/bin/true`` jobs submitted in one cluster once every
pilot has registered. With ``--slurm`` the same workload (an array of ``/bin/true`` jobs
on the same number of slots) goes through a throwaway one-node Slurm cluster in the same
run; the systems alternate, run by run, so a change in the machine's load hits both.

Figures, per system (medians over ``--repeat`` runs):
- completed jobs per second, from the first start to the last completion;
- CPU per job: the server and the agents apart (their own user + system time, read
  from /proc; the jobs' own CPU is not counted), and slurmctld + slurmd for Slurm;
- submit-to-start latency p50/p99 on an idle pool: ``--latency-jobs`` jobs submitted
  one by one, each after the previous one finished (from the job's queue date to its
  claim).

Each run checks afterwards that every job completed exactly once. Ends with one
``BENCH <name> <value> <unit>`` line per figure; recorded in docs/benchmarks.md
(section "End to end"). ``--jobs 200 --repeat 1`` runs in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy
from dispatch import _fresh_pg_database, cpu_s, percentile
from sqlalchemy.pool import NullPool

from pilotage.testing import Pool, postgres_cluster
from pilotage.testing_slurm import Slurm, slurm_cluster

TRUE = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}


def _engine(db_url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(db_url, poolclass=NullPool)


def _completed(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql("SELECT count(*) FROM jobs WHERE state = 'COMPLETED'").scalar()
            or 0
        )


def _wait(engine: sqlalchemy.Engine, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _completed(engine) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {_completed(engine)} of {count} jobs completed in time")
        time.sleep(0.05)


def _submit(pool: Pool, token: str, jobs: int) -> None:
    with pool.remote(token) as client:
        cluster = client.call("POST", "/api/v1/clusters")["cluster_id"]
        client.call(
            "POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [TRUE] * jobs}
        )


def _wait_slots(pool: Pool, slots: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with pool.admin() as client:
        while True:
            slots_now = client.call("GET", "/api/v1/slots")["slots"]
            cores = sum(int(s.get("cpus", 0)) for s in slots_now)
            if cores >= slots:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"pilots offer {cores} of {slots} cores after {timeout_s} s")
            time.sleep(0.1)


def _agent_pids(pool: Pool) -> list[int]:
    assert pool.backend is not None
    return [p.pid for p in pool.backend.processes.values() if p.poll() is None]


def pilotage_run(
    db: str, pg_server: str | None, args: argparse.Namespace, run: int
) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-e2e-"))
    db_url = (
        f"sqlite:///{root / 'pilotage.db'}"
        if pg_server is None
        else _fresh_pg_database(pg_server, run)
    )
    pool = Pool(root, db_url, settings={"lease_s": "600"})
    engine = _engine(db_url)
    try:
        pool.start()
        assert pool.server is not None
        per_pilot = max(1, args.slots // args.pilots)
        pool.pilots(args.pilots, cpus=per_pilot, memory_mb=1024 * per_pilot)
        _wait_slots(pool, per_pilot * args.pilots)
        token = pool.token("bench", "user")
        # Idle-pool latency first: one job at a time.
        for i in range(args.latency_jobs):
            _submit(pool, token, 1)
            _wait(engine, i + 1, 120)
        done_before = args.latency_jobs
        agents = _agent_pids(pool)
        server_cpu0 = cpu_s(pool.server.pid)
        agent_cpu0 = sum(cpu_s(pid) for pid in agents)
        t0 = time.monotonic()
        _submit(pool, token, args.jobs)
        _wait(engine, done_before + args.jobs, 60 + args.jobs)
        elapsed = time.monotonic() - t0
        server_cpu = cpu_s(pool.server.pid) - server_cpu0
        agent_cpu = sum(cpu_s(pid) for pid in agents) - agent_cpu0
        with engine.connect() as conn:
            first_start, last_end = conn.execute(
                sqlalchemy.text(
                    "SELECT min(c.created_at), max(j.completed_at) FROM jobs j JOIN claims c "
                    "ON c.job_id = j.id WHERE j.id > (SELECT max(id) FROM jobs) - :n"
                ),
                {"n": args.jobs},
            ).one()
            waits = [
                float(w)
                for (w,) in conn.execute(
                    sqlalchemy.text(
                        "SELECT min(c.created_at) - j.qdate FROM jobs j JOIN claims c "
                        "ON c.job_id = j.id WHERE j.id <= (SELECT min(id) FROM jobs) + :n - 1 "
                        "GROUP BY j.id, j.qdate"
                    ),
                    {"n": args.latency_jobs},
                )
            ]
            twice = conn.exec_driver_sql(
                "SELECT count(*) FROM (SELECT job_id FROM claims GROUP BY job_id "
                "HAVING count(*) > 1) AS t"
            ).scalar()
    finally:
        engine.dispose()
        pool.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if twice:
        raise SystemExit(f"{db}: {twice} jobs were claimed more than once")
    rate = args.jobs / (last_end - first_start)
    figures = {
        "jobs_per_s": rate,
        "wall_jobs_per_s": args.jobs / elapsed,
        "server_cpu_ms_per_job": 1000 * server_cpu / args.jobs,
        "agent_cpu_ms_per_job": 1000 * agent_cpu / args.jobs,
        "start_p50_ms": 1000 * percentile(waits, 0.5) if waits else float("nan"),
        "start_p99_ms": 1000 * percentile(waits, 0.99) if waits else float("nan"),
    }
    print(
        f"  {db} run {run}: {rate:.1f} jobs/s ({figures['wall_jobs_per_s']:.1f} from submit); "
        f"CPU per job: server {figures['server_cpu_ms_per_job']:.2f} ms, agents "
        f"{figures['agent_cpu_ms_per_job']:.2f} ms; idle-pool submit-to-start p50 "
        f"{figures['start_p50_ms']:.0f} ms, p99 {figures['start_p99_ms']:.0f} ms",
        flush=True,
    )
    return figures


def _squeue_count(slurm: Slurm) -> int:
    out = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i"],
        env=slurm.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return len(out.stdout.split())


def _daemon_cpu(slurm: Slurm) -> float:
    return sum(
        cpu_s(int((slurm.base / f"{name}.pid").read_text())) for name in ("slurmctld", "slurmd")
    )


def slurm_run(slurm: Slurm, args: argparse.Namespace, run: int) -> dict[str, float]:
    logs = Path(tempfile.mkdtemp(prefix="pilotage-e2e-slurm-"))
    try:
        cpu0 = _daemon_cpu(slurm)
        t0 = time.monotonic()
        left, first = args.jobs, 0
        while left > 0:  # arrays of at most 1000 tasks (Slurm's default MaxArraySize)
            size = min(left, 1000)
            subprocess.run(
                ["sbatch", "--quiet", f"--array=0-{size - 1}", "--ntasks=1", "--cpus-per-task=1",
                 "--mem=16", f"--output={logs}/%A_%a.out", "--wrap=/bin/true"],
                env=slurm.env(), check=True, capture_output=True,
            )  # fmt: skip
            left -= size
            first += size
        deadline = time.monotonic() + 120 + 2 * args.jobs
        while _squeue_count(slurm) > 0:
            if time.monotonic() > deadline:
                raise SystemExit("Slurm did not finish the jobs in time")
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        cpu = _daemon_cpu(slurm) - cpu0
        outputs = len(list(logs.iterdir()))
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    if outputs != args.jobs:
        raise SystemExit(f"Slurm: {outputs} job outputs, expected {args.jobs}")
    figures = {"jobs_per_s": args.jobs / elapsed, "daemon_cpu_ms_per_job": 1000 * cpu / args.jobs}
    print(
        f"  slurm run {run}: {figures['jobs_per_s']:.1f} jobs/s; slurmctld + slurmd CPU "
        f"{figures['daemon_cpu_ms_per_job']:.2f} ms per job",
        flush=True,
    )
    return figures


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(r[name] for r in runs) for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per run (1000)")
    parser.add_argument("--slots", type=int, default=16, help="slots (cores) in all (16)")
    parser.add_argument("--pilots", type=int, default=2, help="pilots sharing them (2)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--slurm", action="store_true", help="run Slurm alongside")
    parser.add_argument("--repeat", type=int, default=3, help="runs per system; medians")
    parser.add_argument("--latency-jobs", type=int, default=20, help="jobs for latency (20)")
    parser.add_argument("--keep", action="store_true", help="keep the pool directories")
    args = parser.parse_args()
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    cpus = os.cpu_count() or 1
    print(
        f"{args.jobs} /bin/true jobs on {args.slots} slots ({args.pilots} pilots), "
        f"{args.repeat} runs per system, {cpus} cores",
        flush=True,
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in [*dbs, "slurm"]}
    oversubscribe = max(1, -(-args.slots // cpus))
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres_cluster()) if "postgres" in dbs else None
        slurm = (
            stack.enter_context(slurm_cluster(oversubscribe=oversubscribe, min_job_age=2))
            if args.slurm
            else None
        )
        for run in range(1, args.repeat + 1):
            for db in dbs:
                results[db].append(pilotage_run(db, pg if db == "postgres" else None, args, run))
            if slurm is not None:
                results["slurm"].append(slurm_run(slurm, args, run))
    lines = []
    for db in dbs:
        m = median(results[db])
        lines += [
            f"BENCH e2e_{db}_jobs_per_s {m['jobs_per_s']:.1f} jobs/s",
            f"BENCH e2e_{db}_server_cpu_ms_per_job {m['server_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_{db}_agent_cpu_ms_per_job {m['agent_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_{db}_start_p50_ms {m['start_p50_ms']:.0f} ms",
            f"BENCH e2e_{db}_start_p99_ms {m['start_p99_ms']:.0f} ms",
        ]
    first = median(results[dbs[0]])
    lines += [
        f"BENCH e2e_server_cpu_ms_per_job {first['server_cpu_ms_per_job']:.2f} ms/job",
        f"BENCH e2e_agent_cpu_ms_per_job {first['agent_cpu_ms_per_job']:.2f} ms/job",
    ]
    if results["slurm"]:
        s = median(results["slurm"])
        # The ratio of medians over runs that alternated with each other.
        lines += [
            f"BENCH e2e_slurm_jobs_per_s {s['jobs_per_s']:.1f} jobs/s",
            f"BENCH e2e_slurm_daemon_cpu_ms_per_job {s['daemon_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_ratio_vs_slurm {first['jobs_per_s'] / s['jobs_per_s']:.1f} x",
        ]
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
