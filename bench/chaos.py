"""The chaos suite: faults under load, and what they cost in jobs, pilots and answers.

Each scenario starts a real pool (``pilotage server`` on SQLite or a throwaway
PostgreSQL cluster, real agents from the zipapp), submits jobs that each append a start
and an end marker (``O_APPEND``, one line each) to a shared file, injects its faults
while the jobs run, lets the pool finish, and counts:

- ``lost``: jobs neither completed nor held when the pool has gone quiet;
- ``completed_twice``: jobs with more than one completion in their history;
- ``run_twice``: jobs whose program started more than once (with the reasons the
  server recorded for the earlier claims' end: a lease that expired is the usual one);
- ``held``: jobs held (a job must never be held for a fault of the pool);
- ``pilots_lost``: pilots that exited on their own before the end (the scenario's own
  kills are not counted);
- ``http_5xx``: answers 500-599 other than 503 seen by a prober that calls the API
  throughout, plus unhandled exceptions in the server's log (503 with ``Retry-After``
  is the answer a fault is meant to get, counted apart as ``http_503``);
- ``recovery_s``: after each fault ends, the seconds until the pool completes a job
  again (the largest of the scenario's faults).

Scenarios (``--scenario``, repeatable; all by default):
``server_kill`` (SIGKILL the server 10 times, restart at once), ``server_outage`` (the
server away for 60 s with short leases), ``pilot_kill`` (kill -9 and SIGSTOP/SIGCONT
random pilots, new ones replace the killed), ``postgres_restart`` (restart PostgreSQL,
then stop it for 30 s), ``disk_full`` (the state directory on a small tmpfs, filled and
then freed; root only), ``replica_kill`` (two servers on one PostgreSQL, one killed;
pilots know both URLs). ``--quick`` runs every scenario at a small size.

Ends with ``BENCH chaos_<scenario>_<figure> <value> <unit>`` lines (figures per database
as ``chaos_<scenario>_<db>_...`` when both run). Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy
from sqlalchemy.pool import NullPool

from pilotage.factory.backends.local import PilotLaunch
from pilotage.testing import Pool, create_database, postgres_cluster, postgres_handle
from pilotage.testing_slurm import free_port

FINAL = ("COMPLETED", "HELD", "REMOVED")


@dataclass
class Size:
    jobs: int
    pilots: int
    slots: int  # per pilot
    job_s: float  # how long each job runs
    faults: int  # server kills, pilot kills
    outage_s: float
    pg_stop_s: float


FULL = Size(jobs=300, pilots=4, slots=4, job_s=2.0, faults=10, outage_s=60, pg_stop_s=30)
QUICK = Size(jobs=60, pilots=2, slots=4, job_s=1.0, faults=3, outage_s=20, pg_stop_s=10)


@dataclass
class Figures:
    lost: int = 0
    completed_twice: int = 0
    run_twice: int = 0
    held: int = 0
    pilots_lost: int = 0
    http_5xx: int = 0
    http_503: int = 0
    recovery_s: float = 0.0
    rerun_reasons: Counter[str] = field(default_factory=Counter)


class Prober(threading.Thread):
    """Calls the API every 0.2 s through the pool's TLS endpoint; counts 5xx answers."""

    def __init__(self, urls: Callable[[], list[str]], token: str, ca: Path) -> None:
        super().__init__(daemon=True)
        self.urls, self.token, self.ca = urls, token, ca
        self.statuses: Counter[int] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        tls = ssl.create_default_context(cafile=str(self.ca))
        while not self.stop.wait(0.2):
            for url in self.urls():
                try:
                    with httpx.Client(verify=tls, timeout=10) as http:
                        answer = http.get(f"{url}/api/v1/jobs?state=RUNNING", headers=headers)
                    self.statuses[answer.status_code] += 1
                except httpx.HTTPError:
                    self.statuses[0] += 1  # no answer at all: the server is away


class Chaos:
    """One pool under one scenario: its server(s), pilots, jobs and the counters."""

    def __init__(self, root: Path, db_url: str, size: Size, **settings: str) -> None:
        self.root, self.db_url, self.size = root, db_url, size
        self.port = free_port()
        defaults = {"port": str(self.port), "lease_s": "30", "heartbeat_s": "3"}
        self.pool = Pool(root, db_url, settings={**defaults, **settings})
        self.markers = root / "markers"
        self.engine = sqlalchemy.create_engine(db_url, poolclass=NullPool)
        self.killed: set[int] = set()
        self.recoveries: list[float] = []
        self.extra_urls: list[str] = []
        self.pg_server = ""
        self.prober: Prober | None = None
        self.replica: Pool | None = None

    # -- set-up --------------------------------------------------------------------

    def start(self, *, replica: bool = False) -> None:
        """Start the server (and a second one on the same database with ``replica``),
        the prober and the pilots (which then know both servers, in turn orders)."""
        self.pool.start()
        if replica:
            self.replica = self.pool.replica(self.root / "replica", port=str(free_port()))
            self.replica.start()
            self.extra_urls.append(self.replica.url)
        self.markers.touch(mode=0o666)
        os.chmod(self.root, 0o755)
        self.token = self.pool.token("chaos", "user")
        self.prober = Prober(self.urls, self.token, self.pool.state.ca_cert)
        self.prober.start()
        self.add_pilots(self.size.pilots)

    def urls(self) -> list[str]:
        return [f"https://127.0.0.1:{self.port}", *self.extra_urls]

    def add_pilots(self, count: int) -> None:
        backend = self.pool.pilots(0)
        urls = self.urls()
        for _ in range(count):
            turn = len(backend.processes) % len(urls)
            launch = PilotLaunch(
                server_url=",".join(urls[turn:] + urls[:turn]),
                ca=self.pool.state.ca_cert,
                token_file=self.pool.token_file("pilots", "pilot"),
                cpus=self.size.slots,
                memory_mb=512 * self.size.slots,
                idle_timeout_s=3600,
            )
            backend.submit(f"pilot-{len(backend.processes)}", launch)

    def submit(self) -> None:
        mark = f'echo "$1 $PILOTAGE_JOB_ID" >> {self.markers}'
        script = f"m() {{ {mark}; }}; m start; sleep {self.size.job_s}; m end"
        spec = {
            "executable": "/bin/sh",
            "transfer_executable": False,
            "arguments": ["-c", script],
            "iwd": "/tmp",
        }
        with self.pool.remote(self.token) as client:
            cluster = client.call("POST", "/api/v1/clusters")["cluster_id"]
            client.call(
                "POST",
                f"/api/v1/clusters/{cluster}/jobs",
                json={"v": 1, "jobs": [spec] * self.size.jobs},
            )

    # -- watching --------------------------------------------------------------------

    def states(self) -> Counter[str]:
        with contextlib.suppress(sqlalchemy.exc.OperationalError), self.engine.connect() as c:
            rows = c.exec_driver_sql("SELECT state, count(*) FROM jobs GROUP BY state").all()
            return Counter({state: int(n) for state, n in rows})
        return Counter()

    def completed(self) -> int:
        return self.states()["COMPLETED"]

    def wait_completed(self, at_least: int, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while self.completed() < at_least and time.monotonic() < deadline:
            time.sleep(0.2)

    def recovered_from(self, fault_end: float, timeout_s: float = 300) -> None:
        """Note how long after ``fault_end`` the pool completes a job again."""
        before = self.completed()
        states = self.states()
        if sum(states[s] for s in FINAL) >= self.size.jobs:
            return
        deadline = time.monotonic() + timeout_s
        while self.completed() <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        self.recoveries.append(time.monotonic() - fault_end)

    def wait_quiet(self, timeout_s: float) -> None:
        """Until every job is final, or nothing changed for a long while, or timeout."""
        deadline = time.monotonic() + timeout_s
        last, since = Counter[str](), time.monotonic()
        while time.monotonic() < deadline:
            states = self.states()
            if sum(states[s] for s in FINAL) >= self.size.jobs:
                return
            if states != last:
                last, since = states, time.monotonic()
            elif time.monotonic() - since > 120:
                return
            time.sleep(0.5)

    # -- faults ----------------------------------------------------------------------

    def kill_server(self) -> None:
        server = self.pool.server
        assert server is not None
        server.kill()
        server.wait()

    def start_server(self) -> None:
        self.pool.server = self.pool.start_server()

    def kill_pilot(self, sig: signal.Signals) -> int | None:
        assert self.pool.backend is not None
        alive = [p for p in self.pool.backend.processes.values() if p.poll() is None]
        if not alive:
            return None
        victim = random.choice(alive)
        os.kill(victim.pid, sig)
        if sig == signal.SIGKILL:
            self.killed.add(victim.pid)
        return victim.pid

    # -- the end ---------------------------------------------------------------------

    def figures(self) -> Figures:
        assert self.prober is not None
        self.prober.stop.set()
        self.prober.join(15)
        fig = Figures()
        states = self.states()
        fig.held = states["HELD"]
        fig.lost = self.size.jobs - states["COMPLETED"] - states["HELD"] - states["REMOVED"]
        with self.engine.connect() as c:
            fig.completed_twice = int(
                c.exec_driver_sql(
                    "SELECT count(*) FROM (SELECT job_id FROM job_events WHERE to_state = "
                    "'COMPLETED' GROUP BY job_id HAVING count(*) > 1) AS t"
                ).scalar()
                or 0
            )
            reasons = c.exec_driver_sql(
                "SELECT end_reason FROM claims WHERE job_id IN (SELECT job_id FROM claims "
                "GROUP BY job_id HAVING count(*) > 1) AND end_reason IS NOT NULL "
                "AND end_reason <> 'exit'"
            ).all()
        fig.rerun_reasons = Counter(str(reason) for (reason,) in reasons)
        starts = Counter(
            line.split()[1]
            for line in self.markers.read_text().splitlines()
            if line.startswith("start ")
        )
        fig.run_twice = sum(1 for n in starts.values() if n > 1)
        assert self.pool.backend is not None
        fig.pilots_lost = sum(
            1
            for p in self.pool.backend.processes.values()
            if p.poll() is not None and p.pid not in self.killed
        )
        codes = self.prober.statuses
        fig.http_503 = codes[503]
        fig.http_5xx = sum(n for code, n in codes.items() if 500 <= code < 600 and code != 503)
        fig.http_5xx += len(re.findall(r"Exception in ASGI application", self.pool.server_log()))
        fig.recovery_s = max(self.recoveries, default=0.0)
        return fig

    def close(self) -> None:
        if self.prober is not None:
            self.prober.stop.set()
        self.pool.stop()
        if self.replica is not None:
            self.replica.stop()
        self.engine.dispose()


# --- scenarios -------------------------------------------------------------------------


def server_kill(chaos: Chaos) -> None:
    """SIGKILL the server ``faults`` times under load, restarting it at once."""
    chaos.start()
    chaos.submit()
    for i in range(chaos.size.faults):
        chaos.wait_completed((i + 1) * chaos.size.jobs // (chaos.size.faults + 2))
        chaos.kill_server()
        chaos.start_server()
        chaos.recovered_from(time.monotonic())


def server_outage(chaos: Chaos) -> None:
    """The server away for ``outage_s``, longer than a lease and three heartbeats."""
    chaos.start()
    chaos.submit()
    chaos.wait_completed(chaos.size.jobs // 4)
    chaos.kill_server()
    time.sleep(chaos.size.outage_s)  # the fault itself: the pool must ride it out
    chaos.start_server()
    chaos.recovered_from(time.monotonic())


def pilot_kill(chaos: Chaos) -> None:
    """kill -9 random pilots (the factory's replacements join), SIGSTOP/SIGCONT others."""
    chaos.start()
    chaos.submit()
    for i in range(chaos.size.faults):
        chaos.wait_completed((i + 1) * chaos.size.jobs // (chaos.size.faults + 2))
        if chaos.kill_pilot(signal.SIGKILL) is not None:
            chaos.add_pilots(1)
        stopped = chaos.kill_pilot(signal.SIGSTOP)
        time.sleep(chaos.size.job_s * 2)  # the fault: a pilot frozen for a while
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        chaos.recovered_from(time.monotonic())


def postgres_restart(chaos: Chaos) -> None:
    """Restart PostgreSQL under load, then stop it for ``pg_stop_s``."""
    cluster = postgres_handle(chaos.pg_server)
    chaos.start()
    chaos.submit()
    chaos.wait_completed(chaos.size.jobs // 4)
    cluster.restart()
    chaos.recovered_from(time.monotonic())
    chaos.wait_completed(chaos.size.jobs // 2)
    cluster.stop()
    time.sleep(chaos.size.pg_stop_s)  # the fault: the database away
    cluster.start()
    chaos.recovered_from(time.monotonic())


def disk_full(chaos: Chaos) -> None:
    """Fill the state directory's file system (a small tmpfs), then free it."""
    chaos.start()
    chaos.submit()
    chaos.wait_completed(chaos.size.jobs // 4)
    filler = chaos.root / "state" / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 20))
            out.flush()
    time.sleep(chaos.size.job_s * 5)  # the fault: no space left while jobs end
    filler.unlink()
    chaos.recovered_from(time.monotonic())


def replica_kill(chaos: Chaos) -> None:
    """Two servers on one PostgreSQL; the pilots know both; one is killed for good."""
    chaos.start(replica=True)
    chaos.submit()
    chaos.wait_completed(chaos.size.jobs // 3)
    chaos.kill_server()
    assert chaos.replica is not None
    chaos.port = int(chaos.replica.url.rsplit(":", 1)[1])  # the prober asks the survivor
    chaos.extra_urls.clear()
    chaos.recovered_from(time.monotonic())


class NotYet(RuntimeError):
    """A scenario whose subject is not built yet: reported, not run."""


SCENARIOS: dict[str, tuple[Callable[[Chaos], None], tuple[str, ...], dict[str, str]]] = {
    # name: (run, the databases it applies to, server settings)
    "server_kill": (server_kill, ("sqlite", "postgres"), {}),
    "server_outage": (server_outage, ("sqlite", "postgres"), {"lease_s": "10", "heartbeat_s": "2"}),
    "pilot_kill": (pilot_kill, ("sqlite", "postgres"), {"lease_s": "10", "heartbeat_s": "2"}),
    "postgres_restart": (postgres_restart, ("postgres",), {}),
    "disk_full": (disk_full, ("sqlite",), {}),
    "replica_kill": (replica_kill, ("postgres",), {}),
}


@contextlib.contextmanager
def tmpfs(where: Path, size_mb: int) -> Iterator[Path]:
    """A small tmpfs of its own at ``where`` (root only), unmounted at the end."""
    where.mkdir(mode=0o755)
    options = f"size={size_mb}m,mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def run_scenario(name: str, db: str, pg_server: str | None, size: Size, run: int) -> Figures:
    scenario, _dbs, settings = SCENARIOS[name]
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix=f"pilotage-chaos-{name}-"))
        stack.callback(shutil.rmtree, root, True)
        if name == "disk_full":
            if os.geteuid() != 0:
                raise NotYet("needs root to mount a small tmpfs")
            stack.enter_context(tmpfs(root / "state", 64))
        db_url = f"sqlite:///{root / 'state' / 'pilotage.db'}"
        if db == "postgres":
            assert pg_server is not None
            db_url = create_database(pg_server, f"chaos_{name}_{run}_{os.getpid()}")
        chaos = Chaos(root, db_url, size, **settings)
        chaos.pg_server = pg_server or ""
        stack.callback(chaos.close)
        t0 = time.monotonic()
        scenario(chaos)
        chaos.wait_quiet(120 + size.jobs * size.job_s)
        figures = chaos.figures()
        print(
            f"  {name} on {db}: {json.dumps({k: v for k, v in vars(figures).items()})} "
            f"in {time.monotonic() - t0:.0f} s",
            flush=True,
        )
        return figures


FIGURES = (
    ("lost", "jobs"),
    ("completed_twice", "jobs"),
    ("run_twice", "jobs"),
    ("held", "jobs"),
    ("pilots_lost", "pilots"),
    ("http_5xx", "answers"),
    ("http_503", "answers"),
    ("recovery_s", "s"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every scenario, small")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--jobs", type=int, help="jobs per scenario")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.jobs:
        size = Size(**{**vars(size), "jobs": args.jobs})
    names = args.scenario or list(SCENARIOS)
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    lines: list[str] = []
    failed = 0
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres_cluster()) if "postgres" in dbs else None
        for name in names:
            for db in [d for d in dbs if d in SCENARIOS[name][1]]:
                label = f"chaos_{name}" if len(dbs) == 1 else f"chaos_{name}_{db}"
                try:
                    figures = run_scenario(name, db, pg, size, 1)
                except NotYet as exc:
                    print(f"  {name} on {db}: not run: {exc}", flush=True)
                    continue
                for figure, unit in FIGURES:
                    value = getattr(figures, figure)
                    shown = f"{value:.1f}" if isinstance(value, float) else str(value)
                    lines.append(f"BENCH {label}_{figure} {shown} {unit}")
                bad = figures.lost + figures.completed_twice + figures.pilots_lost
                failed += bool(bad + figures.http_5xx + figures.held)
    print("\n".join(lines), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
