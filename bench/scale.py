"""A very large queue: a million idle jobs in ten thousand autoclusters, on a real server.

Starts a real ``pilotage server`` (SQLite or a throwaway PostgreSQL cluster), submits
``--jobs`` idle jobs through the user API in clusters of at most 100,000, spread over
``--autoclusters`` distinct shapes (memory request and requirements), then measures:

- the submit rate (jobs per second, through the API, commit included);
- the server's resident memory once every job is in (``VmRSS``; its peak ``VmHWM``);
- dispatch decisions: ``--claims`` simulated pilots' requests for work, one after
  another, each answered with a claim; the first one's time apart (it finds the index
  as the submit left it), then the round trip's p50 and p99 (the decision with its HTTP
  call: an upper bound of the decision alone);
- ``pilotage q``: the per-batch summary a user sees first; ``q --json``, every job
  streamed (its output to a file); ``q -nobatch``, every job a page at a time: each
  timed as a command (wall, and the server's CPU seconds, which a busy machine inflates
  less), the median of ``--repeat`` runs;
- the server's resident memory once all that is done, and its peak;
- the restart: the server SIGTERMed and started again, until it answers, and until it
  answers a pilot's request for work with a claim (the matchmaker's index rebuilt from
  the database while the server answers), and its memory then;
- the dispatch decision alone: the matchmaker built in the bench's own process from the
  pool's database (how long that takes), then ``--claims`` decisions timed in-process,
  without HTTP or the claim's transaction: the p50 and p99 the target is about.

Ends with ``BENCH scale_* <value> <unit>`` lines; figures in docs/benchmarks.md
(section "Scale"). ``--jobs 50000 --autoclusters 500`` runs in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from dispatch import _fresh_pg_database, percentile

from pilotage.matchmaking.service import MatchService, MatchSettings
from pilotage.queue.jobad import slot_ad
from pilotage.store.engine import Store
from pilotage.testing import Pool, postgres_cluster

CLUSTER_MAX = 100_000
FREE = {"cpus": 1, "memory_mb": 1 << 20, "disk_mb": 1 << 20, "gpus": 0}


def _rss_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def _cpu_s(pid: int) -> float:
    """The process's CPU time so far (user and system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def submit(pool: Pool, jobs: int, shapes: int) -> float:
    """Submit ``jobs`` jobs over ``shapes`` autoclusters; return jobs per second."""
    t0 = time.monotonic()
    with pool.remote(pool.token("scale", "user")) as client:
        # A commit of 100,000 jobs may take longer than a user's minute on a busy machine.
        client._http.timeout = httpx.Timeout(1800.0)
        done = 0
        while done < jobs:
            size = min(jobs - done, CLUSTER_MAX)
            specs = [
                {
                    "executable": "/bin/true",
                    "transfer_executable": False,
                    "iwd": "/tmp",
                    "request_memory_mb": 64 + (done + i) % shapes,
                }
                for i in range(size)
            ]
            cluster = client.call("POST", "/api/v1/clusters")["cluster_id"]
            client.call("POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": specs})
            done += size
    return jobs / (time.monotonic() - t0)


def _pilot(pool: Pool, token: str) -> tuple[httpx.Client, str]:
    http = httpx.Client(
        base_url=pool.url,
        verify=ssl.create_default_context(cafile=str(pool.state.ca_cert)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    body = {
        "v": 1,
        "name": f"scale-{os.getpid()}",
        "site": "scale",
        "host": "wn0001.scale",
        "cpus": 1,
        "memory_mb": FREE["memory_mb"],
        "disk_mb": FREE["disk_mb"],
        "lifetime_s": 86400,
        "attrs": {"OpSys": '"LINUX"', "Arch": '"X86_64"'},
    }
    answer = http.post("/pilot/v1/pilots", json=body)
    answer.raise_for_status()
    registered = answer.json()
    http.headers["X-Pilotage-Pilot-Secret"] = registered["pilot_secret"]
    return http, registered["pilot_id"]


def claim_latencies(pool: Pool, claims: int) -> list[float]:
    """One pilot asks for work, reports the job done at once, asks again; each ask timed."""
    http, pilot = _pilot(pool, pool.token("scale-pilots", "pilot"))
    work = {"v": 1, "free": FREE, "time_left_s": 86400}
    out = []
    try:
        for _ in range(claims):
            t0 = time.monotonic()
            answer = http.post(f"/pilot/v1/pilots/{pilot}/claims", json=work)
            out.append(time.monotonic() - t0)
            claim = answer.json()["claim"]
            if claim is None:
                raise SystemExit(f"no claim: {answer.text[:300]}")
            http.post(
                f"/pilot/v1/claims/{claim['claim_id']}/result",
                json={"v": 1, "exit_code": 0, "wall_s": 0.0, "cpu_s": 0.0},
            ).raise_for_status()
    finally:
        http.close()
    return out


def decision_latencies(db_url: str, count: int) -> tuple[float, list[float]]:
    """The matchmaker's decision alone, in this process on the pool's database: the index
    built from it (how long), then ``count`` decisions for a 1-cpu slot (its candidates,
    the first one taken), each timed without the HTTP call and the claim's transaction."""
    store = Store(db_url)
    service = MatchService(MatchSettings(full_sync_s=1e9))
    t0 = time.monotonic()
    with store.read() as conn:
        service.restore(conn)
        service.repair(conn, time.time())
    built = time.monotonic() - t0
    attrs = {
        "Cpus": 1, "Memory": FREE["memory_mb"], "Disk": FREE["disk_mb"], "GPUs": 0,
        "TimeToLive": 86400, "OpSys": "LINUX", "Arch": "X86_64", "Site": "scale",
    }  # fmt: skip
    slot = slot_ad(attrs, "true")
    out = []
    for _ in range(count):
        now = time.time()
        t = time.perf_counter()
        found = service.candidates(slot, now)
        service.claimed(found[0], 1, now)
        out.append(time.perf_counter() - t)
    store.dispose()
    return built, out


def command_seconds(pool: Pool, args: list[str], out: Path) -> tuple[float, float, int]:
    """Run ``pilotage ARGS`` with its output to ``out``: (wall s, server CPU s, bytes)."""
    assert pool.server is not None
    cpu0 = _cpu_s(pool.server.pid)
    t0 = time.monotonic()
    with out.open("wb") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "pilotage.cli", *args],
            env=pool.env(),
            stdout=sink,
            stderr=subprocess.PIPE,
            timeout=3600,
        )
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"pilotage {' '.join(args)} failed: {done.stderr[-500:]!r}")
    return wall, _cpu_s(pool.server.pid) - cpu0, out.stat().st_size


def median_of(repeat: int, run: Callable[[], tuple[float, float, int]]) -> tuple[float, float]:
    """The median wall and server CPU seconds of ``repeat`` runs."""
    runs = [run() for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def restart_seconds(pool: Pool) -> tuple[float, float]:
    """SIGTERM the server and start it again: (until it answers, until a pilot's request
    for work gets a claim: the matchmaker's index rebuilt from the database)."""
    assert pool.server is not None
    pool.server.terminate()
    pool.server.wait(300)
    t0 = time.monotonic()
    pool.server = pool.start_server()
    answers = time.monotonic() - t0
    http, pilot = _pilot(pool, pool.token("scale-pilots", "pilot"))
    work = {"v": 1, "free": FREE, "time_left_s": 86400}
    try:
        while http.post(f"/pilot/v1/pilots/{pilot}/claims", json=work).json()["claim"] is None:
            if time.monotonic() - t0 > 1800:
                raise SystemExit("no claim 30 minutes after the restart")
            time.sleep(0.1)  # a bench's poll, not a test's synchronisation
    finally:
        http.close()
    return answers, time.monotonic() - t0


def listing_figures(pool: Pool, root: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """``q`` (batches), ``q --json`` and ``q -nobatch``: median wall and server CPU s."""
    out = root / "q.out"
    figures = {}
    for name, args in (
        ("q_summary", ["q", "--owner", "scale"]),
        ("q_json", ["q", "--owner", "scale", "--json"]),
        ("q_nobatch", ["q", "--owner", "scale", "-nobatch"]),
    ):

        def run(args: list[str] = args) -> tuple[float, float, int]:
            return command_seconds(pool, args, out)

        figures[name] = median_of(repeat, run)
        print(f"{name}: {figures[name][0]:.2f} s ({out.stat().st_size} bytes)", flush=True)
    out.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--autoclusters", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=500, help="timed requests for work")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each q (median)")
    parser.add_argument("--keep", action="store_true", help="keep the pool directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pilotage-scale-"))
    with contextlib.ExitStack() as stack:
        if args.db == "postgres":
            db_url = _fresh_pg_database(stack.enter_context(postgres_cluster()), 1)
        else:
            db_url = f"sqlite:///{root / 'pilotage.db'}"
        pool = Pool(root, db_url, settings={"lease_s": "3600", "match_full_sync_s": "3600"})
        if not args.keep:
            stack.callback(shutil.rmtree, root, True)
        stack.callback(pool.stop)
        pool.start()
        assert pool.server is not None
        rate = submit(pool, args.jobs, args.autoclusters)
        submitted_rss, _ = _rss_mb(pool.server.pid)
        print(f"submitted {args.jobs} jobs at {rate:.0f} jobs/s", flush=True)
        (first,) = claim_latencies(pool, 1)
        latencies = claim_latencies(pool, args.claims)
        print(f"first claim {first:.2f} s; server RSS {submitted_rss:.0f} MiB", flush=True)
        p50, p99 = (1000 * percentile(latencies, q) for q in (0.5, 0.99))
        print(f"dispatch p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
        figures = listing_figures(pool, root, args.repeat)
        rss, peak = _rss_mb(pool.server.pid)
        print(f"server RSS {rss:.0f} MiB (peak {peak:.0f})", flush=True)
        answers_s, restart_s = restart_seconds(pool)
        restarted_rss, _ = _rss_mb(pool.server.pid)
        built_s, decisions = decision_latencies(db_url, args.claims)
        d50, d99 = (1000 * percentile(decisions, q) for q in (0.5, 0.99))
        print(f"decision alone p50 {d50:.3f} ms, p99 {d99:.3f} ms", flush=True)
    lines = [
        f"BENCH scale_submit_jobs_per_s {rate:.0f} jobs/s",
        f"BENCH scale_server_rss_after_submit_mb {submitted_rss:.0f} MiB",
        f"BENCH scale_server_rss_mb {rss:.0f} MiB",
        f"BENCH scale_server_peak_rss_mb {peak:.0f} MiB",
        f"BENCH scale_first_claim_ms {1000 * first:.1f} ms",
        f"BENCH scale_dispatch_p50_ms {p50:.2f} ms",
        f"BENCH scale_dispatch_p99_ms {p99:.2f} ms",
        *(
            f"BENCH scale_{name}_{kind} {value:.2f} s"
            for name, (wall, cpu) in figures.items()
            for kind, value in (("s", wall), ("server_cpu_s", cpu))
        ),
        f"BENCH scale_decision_p50_ms {d50:.3f} ms",
        f"BENCH scale_decision_p99_ms {d99:.3f} ms",
        f"BENCH scale_index_build_s {built_s:.1f} s",
        f"BENCH scale_restart_answers_s {answers_s:.1f} s",
        f"BENCH scale_restart_s {restart_s:.1f} s",
        f"BENCH scale_server_rss_restarted_mb {restarted_rss:.0f} MiB",
        # How busy the machine was: the wall times above are longer on a busy one.
        f"BENCH scale_load_average {os.getloadavg()[1]:.1f} processes",
    ]
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
