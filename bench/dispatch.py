"""Benchmark of dispatch through the real server: job starts and completions per second.

Starts a real ``pilotage server`` subprocess (:class:`pilotage.testing.Pool`) on SQLite or
on a throwaway PostgreSQL cluster, submits ``--jobs`` jobs through the user API (clusters
of at most 100,000 jobs, no input sandbox), then runs ``--pilots`` simulated pilots as
asyncio tasks. Each pilot speaks the pilot protocol over HTTPS (HTTP/1.1 keep-alive, the
server certificate checked against the pool CA, a pilot token): it registers, asks for
work, and reports each job as finished at once with ``next`` set, so one round trip
ends a job and claims the next, until the server has nothing left for it. The jobs never
run: this measures the server's claim and report path, not an agent.

Figures: starts and completions per second over the steady state (the middle 80 % of
the events, so the ramp-up and the tail of the last pilots do not count), latency
percentiles per kind of call as the clients see them, and the CPU the server, the
clients and everything else on the machine used in the steady state. The clients share
the machine with the server, and on a shared machine throughput figures compare only
between runs where "everything else" is small. ``--client-procs`` spreads the pilots
over several processes; ``--profile DIR`` records the server with py-spy (``--gil``:
where the GIL is held) while pilots run. Each run checks afterwards that every job
completed, after exactly one claim, with its three events.

Ends with one ``BENCH <name> <value> <unit>`` line per figure (medians over
``--repeat`` runs). Figures recorded in docs/benchmarks.md (section "Dispatch").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from sqlalchemy.pool import NullPool

from pilotage.testing import Pool, create_database, postgres_cluster

CLUSTER_MAX = 100_000
#: The slot every simulated pilot offers: one core, so one job at a time.
FREE = {"cpus": 1, "memory_mb": 2000, "disk_mb": 10000, "gpus": 0}
#: Fraction of the events cut at each end of the run for the steady-state rates.
TRIM = 0.10


@dataclass
class Record:
    """What the pilots of one client process saw (monotonic timestamps, seconds)."""

    started: list[float] = field(default_factory=list)
    completed: list[float] = field(default_factory=list)
    latency_s: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Record) -> None:
        self.started += other.started
        self.completed += other.completed
        for kind, values in other.latency_s.items():
            self.latency_s.setdefault(kind, []).extend(values)
        self.errors += other.errors


# --- the simulated pilots -------------------------------------------------------------


async def _call(
    http: httpx.AsyncClient, rec: Record, kind: str, path: str, body: dict[str, Any]
) -> Any:
    t0 = time.monotonic()
    response = await http.post(path, json=body)
    rec.latency_s.setdefault(kind, []).append(time.monotonic() - t0)
    if response.status_code >= 400:
        raise RuntimeError(f"{kind} {path}: {response.status_code} {response.text[:200]}")
    return response.json() if response.content else None


async def _pilot(
    index: int, url: str, tls: ssl.SSLContext, token: str, rec: Record, gate: asyncio.Event
) -> None:
    work = {"v": 1, "free": FREE, "time_left_s": 86400}
    async with httpx.AsyncClient(
        base_url=url,
        verify=tls,
        http1=True,
        http2=False,
        headers={"Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=httpx.Timeout(120.0),
    ) as http:
        registered = await _call(
            http,
            rec,
            "register",
            "/pilot/v1/pilots",
            {
                "v": 1,
                "name": f"bench-{os.getpid()}-{index}",
                "site": "bench",
                "host": f"wn{index:04d}.bench",
                "cpus": FREE["cpus"],
                "memory_mb": FREE["memory_mb"],
                "disk_mb": FREE["disk_mb"],
                "lifetime_s": 86400,
                "attrs": {"OpSys": '"LINUX"', "Arch": '"X86_64"'},
            },
        )
        pilot_id = registered["pilot_id"]
        # Every later call proves the registration's secret (docs/pilot-protocol.md).
        http.headers["X-Pilotage-Pilot-Secret"] = registered["pilot_secret"]
        await gate.wait()  # every pilot is registered and connected: dispatch starts now
        answer = await _call(http, rec, "claim", f"/pilot/v1/pilots/{pilot_id}/claims", work)
        while answer["claim"] is not None:
            rec.started.append(time.monotonic())
            claim_id = answer["claim"]["claim_id"]
            report = {"v": 1, "exit_code": 0, "wall_s": 0.0, "cpu_s": 0.0, "next": work}
            answer = await _call(http, rec, "report", f"/pilot/v1/claims/{claim_id}/result", report)
            rec.completed.append(time.monotonic())
        await _call(http, rec, "exit", f"/pilot/v1/pilots/{pilot_id}/exit", {"v": 1})


async def _pilots(count: int, first: int, url: str, ca: str, token: str) -> Record:
    rec = Record()
    tls = ssl.create_default_context(cafile=ca)
    gate = asyncio.Event()
    tasks = [
        asyncio.create_task(_pilot(first + i, url, tls, token, rec, gate)) for i in range(count)
    ]
    # Register first (sequentially enough not to count against dispatch), then go.
    while len(rec.latency_s.get("register", ())) < count and not any(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    gate.set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            rec.errors.append(repr(outcome))
    return rec


def _client_process(
    count: int, first: int, url: str, ca: str, token: str, start_at: float, out: Any
) -> None:
    """One client process: wait for the common start time, run its pilots, send back."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    time.sleep(max(0.0, start_at - time.time()))
    out.send(asyncio.run(_pilots(count, first, url, ca, token)))
    out.close()


class CpuSampler:
    """Samples, every ``interval_s``, the CPU seconds used so far by the server, by the
    client processes and by the whole machine, so the steady state can be cut out."""

    def __init__(self, server_pid: int, interval_s: float = 0.1) -> None:
        self.server_pid = server_pid
        self.client_pids: list[int] = []
        self.samples: list[tuple[float, float, float, float]] = []
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            clients = 0.0
            for pid in list(self.client_pids):
                with contextlib.suppress(OSError):
                    clients += cpu_s(pid)
            sample = (time.monotonic(), cpu_s(self.server_pid), clients, machine_busy_s())
            self.samples.append(sample)

    def cores(self, start: float, end: float) -> tuple[float, float, float]:
        """Cores used by the server, the clients and everything else between two times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return (float("nan"),) * 3
        (t0, server0, clients0, busy0), (t1, server1, clients1, busy1) = inside[0], inside[-1]
        server, clients = server1 - server0, clients1 - clients0
        return (
            server / (t1 - t0),
            clients / (t1 - t0),
            (busy1 - busy0 - server - clients) / (t1 - t0),
        )


def run_pilots(
    pool: Pool, token: str, pilots: int, procs: int, sampler: CpuSampler | None = None
) -> Record:
    """Run ``pilots`` simulated pilots spread over ``procs`` client processes."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0  # time for the spawned interpreters to import
    children = []
    share, extra = divmod(pilots, procs)
    first = 0
    for p in range(procs):
        count = share + (1 if p < extra else 0)
        receiver, sender = ctx.Pipe(duplex=False)
        args = (count, first, pool.url, str(pool.state.ca_cert), token, start_at, sender)
        process = ctx.Process(target=_client_process, args=args, name=f"pilots-{p}")
        process.start()
        sender.close()
        if sampler is not None and process.pid is not None:
            sampler.client_pids.append(process.pid)
        children.append((process, receiver))
        first += count
    rec = Record()
    for process, receiver in children:
        rec.merge(receiver.recv())
        process.join()
    return rec


# --- the server and its database ------------------------------------------------------


def submit(pool: Pool, jobs: int) -> float:
    """Submit ``jobs`` jobs as the user ``bench`` over TLS; return the seconds it took."""
    spec = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
    t0 = time.monotonic()
    with pool.remote(pool.token("bench", "user")) as client:
        left = jobs
        while left > 0:
            size = min(left, CLUSTER_MAX)
            cluster = client.call("POST", "/api/v1/clusters")["cluster_id"]
            client.call(
                "POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [spec] * size}
            )
            left -= size
    return time.monotonic() - t0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process), /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def check_queue(pool: Pool, jobs: int) -> str | None:
    """Every job COMPLETED, once, with one claim and start/finish events; else the problem."""
    with pool.admin() as client:
        rows = client.call("GET", "/api/v1/jobs", params={"owner": "bench"})
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    if states != {"COMPLETED": jobs}:
        return f"job states after the run: {states}"
    retried = sum(1 for row in rows if row["attempts"] != 1)
    if retried:
        return f"{retried} jobs were claimed more than once"
    return None


def count_events(db_url: str) -> int:
    engine = sqlalchemy.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("select count(*) from job_events").scalar() or 0)
    finally:
        engine.dispose()


@contextlib.contextmanager
def profiler(pid: int, out: Path | None) -> Iterator[None]:
    """Record ``pid`` with py-spy (collapsed stacks and a flame graph) when ``out`` is set."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--rate", "200", "--gil", "--nonblocking"]
    process = subprocess.Popen(
        [*command, "--format", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


# --- figures --------------------------------------------------------------------------


def steady_window(stamps: list[float]) -> tuple[float, float]:
    """The first and last time of the middle of the run (``TRIM`` cut at each end)."""
    stamps = sorted(stamps)
    cut = int(len(stamps) * TRIM)
    return stamps[cut], stamps[len(stamps) - cut - 1]


def steady_rate(stamps: list[float]) -> float:
    """Events per second over the middle of the run (``TRIM`` cut at each end)."""
    start, end = steady_window(stamps)
    count = sum(1 for t in stamps if start <= t <= end)
    if count < 2 or end <= start:
        return float("nan")
    return (count - 1) / (end - start)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def one_run(db: str, pg_server: str | None, args: argparse.Namespace, run: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-bench-"))
    if pg_server is None:
        db_url = f"sqlite:///{root / 'pilotage.db'}"
    else:
        db_url = _fresh_pg_database(pg_server, run)
    settings = {"lease_s": "600", "reap_interval_s": "2"}
    pool = Pool(root, db_url, settings=settings)
    try:
        pool.start()
        assert pool.server is not None
        submit_s = submit(pool, args.jobs)
        token = pool.token("benchpilots", "pilot")
        out = None if args.profile is None else args.profile / f"server-{db}-{run}.txt"
        with CpuSampler(pool.server.pid) as sampler, profiler(pool.server.pid, out):
            rec = run_pilots(pool, token, args.pilots, args.client_procs, sampler)
        problem = check_queue(pool, args.jobs)
        events = count_events(db_url)
        if events != 3 * args.jobs:
            problem = problem or f"{events} job events, expected {3 * args.jobs}"
        if rec.errors:
            problem = problem or f"{len(rec.errors)} pilots failed; first: {rec.errors[0]}"
    finally:
        pool.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if problem:
        raise SystemExit(f"{db}: the run is not valid: {problem}")
    completed = steady_rate(rec.completed)
    server, clients, others = sampler.cores(*steady_window(rec.completed))
    figures = {
        "submitted_per_s": args.jobs / submit_s,
        "started_per_s": steady_rate(rec.started),
        "completed_per_s": completed,
        "overall_completed_per_s": len(rec.completed) / (max(rec.completed) - min(rec.started)),
        "server_cpu_ms_per_job": 1000 * server / completed,
        "client_cpu_ms_per_job": 1000 * clients / completed,
        "server_cpu_share": server,
        "client_cpu_share": clients,
        # Cores busy with anything else in the steady state (PostgreSQL, the kernel's
        # loopback work, other users of the machine): runs compare only when it is small.
        "others_cpu_share": max(0.0, others),
    }
    for kind in ("register", "claim", "report"):
        lat = rec.latency_s.get(kind, [])
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            figures[f"{kind}_{name}_ms"] = 1000 * percentile(lat, q)
    print(
        f"  run {run}: {figures['completed_per_s']:.0f} completed/s, "
        f"{figures['started_per_s']:.0f} started/s (steady), "
        f"{figures['overall_completed_per_s']:.0f}/s overall; report p50 "
        f"{figures['report_p50_ms']:.1f} ms p99 {figures['report_p99_ms']:.1f} ms; "
        f"CPU: server {figures['server_cpu_share']:.2f} cores "
        f"({figures['server_cpu_ms_per_job']:.2f} ms/job), clients "
        f"{figures['client_cpu_share']:.2f} ({figures['client_cpu_ms_per_job']:.2f} ms/job), "
        f"everything else {figures['others_cpu_share']:.2f}; "
        f"submit {figures['submitted_per_s']:.0f} jobs/s",
        flush=True,
    )
    return figures


UNITS = {"_per_s": "jobs/s", "_ms": "ms", "_ms_per_job": "ms/job", "_share": "cores"}


def bench(db: str, args: argparse.Namespace) -> dict[str, float]:
    print(f"{db}: {args.jobs} jobs, {args.pilots} pilots, {args.client_procs} client process(es)")
    runs = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(postgres_cluster()) if db == "postgres" else None
        for run in range(1, args.repeat + 1):
            runs.append(one_run(db, server, args, run))
    return {name: statistics.median(r[name] for r in runs) for name in runs[0]}


def _fresh_pg_database(server: str, run: int) -> str:
    return create_database(server, f"bench_{run}_{os.getpid()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to dispatch (2000)")
    parser.add_argument("--pilots", type=int, default=50, help="simulated pilots (50)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per database; medians")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="client processes the pilots share (1)"
    )
    parser.add_argument("--profile", type=Path, help="record the server with py-spy into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the pool directories")
    args = parser.parse_args()
    if args.jobs < 10 or args.pilots < 1 or args.client_procs < 1 or args.repeat < 1:
        parser.error("need --jobs >= 10 and positive --pilots, --client-procs, --repeat")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    results = {db: bench(db, args) for db in dbs}
    print()
    for db, figures in results.items():
        for name, value in figures.items():
            unit = next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")
            shown = (
                f"{value:.0f}"
                if value >= 100
                else f"{value:.1f}"
                if value >= 10
                else f"{value:.2f}"
            )
            print(f"BENCH dispatch_{db}_{name} {shown} {unit}")


if __name__ == "__main__":
    main()
