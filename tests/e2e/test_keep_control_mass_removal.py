"""Removing many running jobs at once never signals them all at once (seed 000 §4.6;
queue/stoppace.py; docs/pilot.md, "Keeping control").

Two real agents of one site, 100 one-cpu slots each, run 200 jobs (a shell that records
the moment it gets SIGTERM, waiting on a ``sleep``); the owner removes all 200 in one
call. With ``stop_rate_per_site_s = 0.1`` (one stop order per 0.1 s for the whole site)
and ``stop_rate_per_pilot_s = 0.15``, no second of the removal sees more than 10 jobs
signalled (one more for a turn that lands on a second's edge), and the removal takes
at least 19.9 s. Without the switch here; the switch's side in
tests/e2e/test_keep_control_mass_removal_switch.py.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pilotage.pilot.zipapp import build_zipapp
from pilotage.testing import Pool

pytestmark = pytest.mark.slow

JOBS = 200
PER_SITE_S = 0.1


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the pacing lives in the server process, not in the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for agent in started:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def trapping_jobs(count: int, stops: Path) -> list[dict[str, object]]:
    """Jobs that append the time they got SIGTERM to ``stops``, then exit."""
    script = f"trap 'date +%s.%N >> {stops}; exit 0' TERM; sleep 1000 & wait"
    job = {
        "executable": "/bin/sh", "arguments": ["-c", script], "transfer_executable": False,
        "iwd": "/tmp", "request_memory_mb": 1, "request_disk_mb": 1,
    }  # fmt: skip
    return [job] * count


def per_second(times: list[float]) -> int:
    """The most stops within any one second."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def wait_for(check: Callable[[], bool], what: str, logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            text = "\n".join(p.read_text()[-4000:] for p in logs if p.exists())
            pytest.fail(f"{what} did not happen within {timeout} s\n{text}")
        time.sleep(0.2)


def test_removing_200_running_jobs_signals_them_at_the_sites_rate(
    make_pool: Callable[..., Pool],
    tmp_path: Path,
    agents: list[subprocess.Popen[bytes]],
) -> None:
    pool = make_pool(
        lease_s="300", stop_rate_per_site_s=str(PER_SITE_S), stop_rate_per_pilot_s="0.15"
    )
    stops = tmp_path / "stops"
    stops.touch()
    tls = ssl.create_default_context(cafile=str(pool.state.ca_cert))
    headers = {"Authorization": f"Bearer {pool.token('alice', 'user')}"}
    with httpx.Client(base_url=pool.url, verify=tls, headers=headers, timeout=120) as alice:
        cluster = alice.post("/api/v1/clusters").json()["cluster_id"]
        body = {"v": 1, "jobs": trapping_jobs(JOBS, stops)}
        assert alice.post(f"/api/v1/clusters/{cluster}/jobs", json=body).status_code == 201

        pyz = build_zipapp(tmp_path / "agent.pyz")
        token = pool.token_file("pilots", "pilot")
        logs = [tmp_path / f"agent-{n}.log" for n in range(2)]
        for n, log in enumerate(logs):
            command = [
                sys.executable, "-I", "-S", str(pyz), "--server", pool.url,
                "--ca", str(pool.state.ca_cert), "--token", str(token),
                "--workdir", str(tmp_path / f"work-{n}"), "--cpus", "100", "--memory", "1000",
                "--disk", "1000", "--site", "site-a", "--idle-timeout", "600",
            ]  # fmt: skip
            with log.open("wb") as out:
                agents.append(subprocess.Popen(command, stderr=out, env={"PATH": "/usr/bin:/bin"}))

        def running() -> bool:
            listed = alice.get("/api/v1/jobs", params={"id": str(cluster)}).json()
            return sum(j["state"] == "RUNNING" for j in listed) == JOBS

        wait_for(running, f"{JOBS} jobs running", logs, timeout=300)
        # Every job has its trap set once it runs its sleep: the agents' logs say started.
        wait_for(
            lambda: sum(p.read_text().count(": started pid ") for p in logs) == JOBS,
            "every job started", logs, timeout=120,
        )  # fmt: skip
        answer = alice.post(
            "/api/v1/jobs/actions", json={"action": "remove", "ids": [str(cluster)]}
        )
        assert answer.status_code == 200, answer.text

        def all_stopped() -> bool:
            return len(stops.read_text().split()) == JOBS

        wait_for(all_stopped, f"{JOBS} jobs stopped", logs, timeout=300)
    times = [float(t) for t in stops.read_text().split()]
    assert per_second(times) <= 1 / PER_SITE_S + 1, sorted(times)
    assert max(times) - min(times) >= (JOBS - 1) * PER_SITE_S - 0.5, sorted(times)
