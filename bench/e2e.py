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

With ``--replicas 1,2`` (PostgreSQL) each run is made with one server, then with two on
the one database: the agents are given every server's URL (half of them list the first
server first, half the second: they use the first and fail over), the jobs are
submitted half to each server, and the CPU per job is that of all the servers together.
``--profile DIR`` records the servers and the agents with py-spy during the timed part
(raw stacks, one file per process; it costs CPU: not for the timed figures).

Each run checks afterwards that every job completed exactly once. Ends with one
``BENCH <name> <value> <unit>`` line per figure; recorded in docs/benchmarks.md
(section "End to end"). ``--jobs 200 --repeat 1`` runs in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from dispatch import _fresh_pg_database, cpu_s, machine_busy_s, percentile
from sqlalchemy.pool import NullPool

from pilotage.factory.backends.local import PilotLaunch
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
    """The agents and their lasting helpers (the reaper), not the jobs: the processes
    below each agent that are there before the timed part."""
    assert pool.backend is not None
    agents = {p.pid for p in pool.backend.processes.values() if p.poll() is None}
    helpers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in agents:
            helpers.append(int(stat.parent.name))
    return [*agents, *helpers]


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds of those of ``pids`` still alive."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_s(pid)
    return total


@contextlib.contextmanager
def _profiled(pids: dict[str, int], out: Path | None) -> Iterator[None]:
    """py-spy on each of ``pids`` (name: pid) into ``out/NAME.txt``, when ``out`` is set."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--rate", "250", "--gil", "--nonblocking", "--format", "raw"]
    spies = [
        subprocess.Popen(
            [*command, "--pid", str(pid), "-o", str(out / f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for spy_process in spies:
            spy_process.send_signal(signal.SIGINT)
        for spy_process in spies:
            spy_process.wait(60)


def _start_pilots(pools: list[Pool], args: argparse.Namespace) -> int:
    """``--pilots`` agents sharing ``--slots`` cores, each knowing every server (in turn
    orders); the cores they offer in all."""
    first = pools[0]
    backend = first.pilots(0)
    urls = [p.url for p in pools]
    per_pilot = max(1, args.slots // args.pilots)
    for i in range(args.pilots):
        turn = i % len(urls)
        launch = PilotLaunch(
            server_url=",".join(urls[turn:] + urls[:turn]),
            ca=first.state.ca_cert,
            token_file=first.token_file("pilots", "pilot"),
            cpus=per_pilot,
            memory_mb=1024 * per_pilot,
        )
        backend.submit(f"pilot-{i}", launch)
    return int(per_pilot * args.pilots)


def pilotage_run(
    db: str, pg_server: str | None, replicas: int, args: argparse.Namespace, run: int
) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-e2e-"))
    db_url = (
        f"sqlite:///{root / 'pilotage.db'}"
        if pg_server is None
        else _fresh_pg_database(pg_server, run * 10 + replicas)
    )
    pool = Pool(root, db_url, settings={"lease_s": "600"})
    pools = [pool]
    engine = _engine(db_url)
    label = db if replicas == 1 else f"{db}_{replicas}replicas"
    try:
        pool.start()
        for i in range(1, replicas):
            pools.append(pool.replica(root / f"replica-{i}"))
            pools[-1].start()
        servers = [p.server.pid for p in pools if p.server is not None]
        _wait_slots(pool, _start_pilots(pools, args))
        token = pool.token("bench", "user")
        # Idle-pool latency first: one job at a time.
        for i in range(args.latency_jobs):
            _submit(pool, token, 1)
            _wait(engine, i + 1, 120)
        done_before = args.latency_jobs
        agents = _agent_pids(pool)
        spied = {f"server-{i}": pid for i, pid in enumerate(servers)}
        spied.update({f"agent-{i}": pid for i, pid in enumerate(agents[: args.pilots])})
        out = args.profile / f"{label}-{run}" if args.profile else None
        with _profiled(spied, out):
            server_cpu0 = _cpu_of(servers)
            machine0 = machine_busy_s()
            agent_cpu0 = _cpu_of(agents)
            t0 = time.monotonic()
            shares = [args.jobs // replicas + (i < args.jobs % replicas) for i in range(replicas)]
            submits = [
                threading.Thread(target=_submit, args=(p, token, share))
                for p, share in zip(pools, shares, strict=True)
            ]
            for thread in submits:
                thread.start()
            for thread in submits:
                thread.join()
            _wait(engine, done_before + args.jobs, 60 + args.jobs)
            elapsed = time.monotonic() - t0
            server_cpu = _cpu_of(servers) - server_cpu0
            machine = machine_busy_s() - machine0
            agent_cpu = _cpu_of(agents) - agent_cpu0
        with engine.connect() as conn:
            first_start, last_end, first_qdate = conn.execute(
                sqlalchemy.text(
                    "SELECT min(c.created_at), max(j.completed_at), min(j.qdate) "
                    "FROM jobs j JOIN claims c "
                    "ON c.job_id = j.id WHERE j.id > (SELECT min(id) FROM jobs) + :n - 1"
                ),
                {"n": args.latency_jobs},
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
        for replica in pools[1:]:
            replica.stop()
        pool.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if twice:
        raise SystemExit(f"{label}: {twice} jobs were claimed more than once")
    rate = args.jobs / (last_end - first_start)
    figures = {
        "jobs_per_s": rate,
        "wall_jobs_per_s": args.jobs / elapsed,
        # From the main submit's queue date to its first job's claim.
        "first_start_ms": 1000 * (first_start - first_qdate),
        "server_cpu_ms_per_job": 1000 * server_cpu / args.jobs,
        "agent_cpu_ms_per_job": 1000 * agent_cpu / args.jobs,
        # Every process of the machine (PostgreSQL, the jobs, the kernel, this bench...).
        "machine_cpu_ms_per_job": 1000 * machine / args.jobs,
        "start_p50_ms": 1000 * percentile(waits, 0.5) if waits else float("nan"),
        "start_p99_ms": 1000 * percentile(waits, 0.99) if waits else float("nan"),
    }
    print(
        f"  {label} run {run}: {rate:.1f} jobs/s ({figures['wall_jobs_per_s']:.1f} from submit); "
        f"CPU per job: machine {figures['machine_cpu_ms_per_job']:.2f} ms, "
        f"server {figures['server_cpu_ms_per_job']:.2f} ms, agents "
        f"{figures['agent_cpu_ms_per_job']:.2f} ms; idle-pool submit-to-start p50 "
        f"{figures['start_p50_ms']:.0f} ms, p99 {figures['start_p99_ms']:.0f} ms; first start "
        f"{figures['first_start_ms']:.0f} ms after the submit",
        flush=True,
    )
    return figures


def spawn_baseline_ms(count: int = 500) -> float:
    """CPU of this process per ``/bin/true`` started and reaped as the agent starts a job
    (``subprocess.Popen`` in a new session, fds closed, then ``wait4``): fork/exec's own
    cost, what "beyond fork/exec" leaves out of the agents' CPU per job."""
    before = os.times()
    for _ in range(count):
        child = subprocess.Popen(
            ["/bin/true"], cwd="/tmp", env={}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        os.wait4(child.pid, 0)
        child.returncode = 0
    after = os.times()
    return 1000 * (after.user + after.system - before.user - before.system) / count


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
    parser.add_argument(
        "--replicas", default="1", help="PostgreSQL: servers on the one database, e.g. 1,2"
    )
    parser.add_argument("--profile", type=Path, help="record servers and agents into DIR")
    args = parser.parse_args()
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    replica_counts = [int(n) for n in args.replicas.split(",")]
    if any(n < 1 for n in replica_counts) or (replica_counts != [1] and "postgres" not in dbs):
        parser.error("--replicas: counts of 1 or more, and more than one needs --db postgres")
    systems = [
        (db, n, db if n == 1 else f"{db}_{n}replicas")
        for db in dbs
        for n in (replica_counts if db == "postgres" else [1])
    ]
    cpus = os.cpu_count() or 1
    print(
        f"{args.jobs} /bin/true jobs on {args.slots} slots ({args.pilots} pilots), "
        f"{args.repeat} runs per system, {cpus} cores",
        flush=True,
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for *_, name in systems}
    results["slurm"] = []
    loads = []
    oversubscribe = max(1, -(-args.slots // cpus))
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres_cluster()) if "postgres" in dbs else None
        slurm = (
            stack.enter_context(slurm_cluster(oversubscribe=oversubscribe, min_job_age=2))
            if args.slurm
            else None
        )
        for run in range(1, args.repeat + 1):
            for db, replicas, name in systems:
                server = pg if db == "postgres" else None
                results[name].append(pilotage_run(db, server, replicas, args, run))
            if slurm is not None:
                results["slurm"].append(slurm_run(slurm, args, run))
            loads.append(os.getloadavg()[0])
            print(f"  load average (1 min) after run {run}: {loads[-1]:.1f}", flush=True)
    lines = []
    for *_, name in systems:
        m = median(results[name])
        lines += [
            f"BENCH e2e_{name}_jobs_per_s {m['jobs_per_s']:.1f} jobs/s",
            f"BENCH e2e_{name}_server_cpu_ms_per_job {m['server_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_{name}_agent_cpu_ms_per_job {m['agent_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_{name}_machine_cpu_ms_per_job {m['machine_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_{name}_start_p50_ms {m['start_p50_ms']:.0f} ms",
            f"BENCH e2e_{name}_start_p99_ms {m['start_p99_ms']:.0f} ms",
        ]
    first = median(results[systems[0][2]])
    lines += [
        f"BENCH e2e_server_cpu_ms_per_job {first['server_cpu_ms_per_job']:.2f} ms/job",
        f"BENCH e2e_agent_cpu_ms_per_job {first['agent_cpu_ms_per_job']:.2f} ms/job",
    ]
    if results.get("sqlite") and results.get("postgres"):
        ratio = (
            median(results["postgres"])["server_cpu_ms_per_job"]
            / median(results["sqlite"])["server_cpu_ms_per_job"]
        )
        lines.append(f"BENCH e2e_postgres_vs_sqlite_server_cpu {ratio:.2f} x")
    if results["slurm"]:
        s = median(results["slurm"])
        # The ratio of medians over runs that alternated with each other.
        lines += [
            f"BENCH e2e_slurm_jobs_per_s {s['jobs_per_s']:.1f} jobs/s",
            f"BENCH e2e_slurm_daemon_cpu_ms_per_job {s['daemon_cpu_ms_per_job']:.2f} ms/job",
            f"BENCH e2e_ratio_vs_slurm {first['jobs_per_s'] / s['jobs_per_s']:.1f} x",
        ]
    spawn_ms = spawn_baseline_ms()
    lines += [
        f"BENCH e2e_spawn_baseline_cpu_ms {spawn_ms:.2f} ms/job",
        f"BENCH e2e_agent_cpu_beyond_spawn_ms_per_job "
        f"{first['agent_cpu_ms_per_job'] - spawn_ms:.2f} ms/job",
        f"BENCH e2e_load_average {statistics.median(loads):.1f} processes",
    ]
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
