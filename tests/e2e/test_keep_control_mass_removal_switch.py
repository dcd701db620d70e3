"""Mass removal with the switch: as root, the real switch (setuid) and two real agents as
``pilot`` at one site (tests/pilot/switched_pool.py). Alice's running jobs are removed
in one call; the switch's audit shows the ``--signal TERM`` calls (each one an
authorization by the site's policy) at most one per ``stop_rate_per_site_s`` (0.25 s):
no second holds more than 4 of them (one more for a turn on a second's edge), and every
job is gone. 40 jobs by default, to keep the test cheap on a shared node; the issue's 200
with ``PILOTAGE_TEST_MASS_REMOVAL_JOBS=200``.
"""

from __future__ import annotations

import os
import pwd
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site

PER_SITE_S = 0.25
JOBS = int(os.environ.get("PILOTAGE_TEST_MASS_REMOVAL_JOBS", "40"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + 6 * JOBS)]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the pacing lives in the server process, not in the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


def audit(site: Site) -> list[dict[str, object]]:
    """The switch's audit records so far (none before its first call)."""
    return site.audit("setuid") if (site.root / "audit-setuid" / "audit.jsonl").exists() else []


def sleeping(uid: int) -> list[int]:
    """The live ``sleep 1000`` processes of ``uid`` (the jobs' children)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() != b"sleep\x001000\x00":
                    continue
            if "\nState:\tZ" in Path(f"/proc/{name}/status").read_text():
                continue
        except OSError:
            continue
        found.append(int(name))
    return found


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()[-6000:]}")
        time.sleep(0.5)


def test_removing_running_switched_jobs_calls_the_switch_at_the_sites_rate(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(
        site,
        make_pool(lease_s="300", stop_rate_per_site_s=str(PER_SITE_S), stop_rate_per_pilot_s="0.3"),
    )
    try:
        jobs = [
            pool.submit(
                "alice",
                ALICE,
                "trap 'exit 0' TERM; sleep 1000 & wait",
                request_memory_mb=1,
                request_disk_mb=1,
            )
            for _ in range(JOBS)
        ]
        half = str(JOBS // 2 + 1)
        for name in ("a", "b"):
            pool.start_agent(
                "--cpus", half, "--workdir", str(pool.home / f"work-{name}"), idle_timeout_s=600
            )

        def all_running() -> bool:
            states = [j["state"] for j in pool.pool.wait_jobs(jobs, ("RUNNING", "IDLE"))]
            started = sum(1 for r in audit(site) if r.get("event") == "exec" and r.get("family"))
            return states.count("RUNNING") == JOBS and started == JOBS

        wait_for(all_running, f"{JOBS} switched jobs running", pool.log, timeout=60 + 15 * JOBS)
        with pool.x509.https(pool.pool.token("alice", "user")) as http:
            ids = [job.split(".")[0] for job in jobs]
            answer = http.post("/api/v1/jobs/actions", json={"action": "remove", "ids": ids})
            assert answer.status_code == 200, answer.text

        def terms() -> list[dict[str, object]]:
            return [
                r for r in audit(site)
                if r.get("event") == "signal" and r.get("signal") == "SIGTERM"
            ]  # fmt: skip

        wait_for(lambda: len(terms()) >= JOBS, "every job signalled", pool.log, timeout=120)
        alice = pwd.getpwnam("alice").pw_uid
        wait_for(lambda: not sleeping(alice), "every job's end", pool.log, timeout=120)
        per_second = Counter(str(r["time"]) for r in terms())
        assert max(per_second.values()) <= 1 / PER_SITE_S + 1, sorted(per_second.items())
        # Spread over the whole span, not bunched: (JOBS - 1) turns of 0.25 s at least.
        assert len(per_second) >= (JOBS - 1) * PER_SITE_S - 1, sorted(per_second.items())
    finally:
        pool.kill_agents()  # their reapers kill what is left, through the switch
        deadline = time.monotonic() + 120
        while sleeping(pwd.getpwnam("alice").pw_uid) and time.monotonic() < deadline:
            time.sleep(0.5)  # the site (and its switch) must outlive the reapers' calls
