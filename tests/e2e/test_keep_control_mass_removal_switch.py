"""Mass removal with the switch, as the switch and the site's authorization service see it
(seed 000 §4.6; queue/stoppace.py; docs/pilot.md, "Keeping control").

As root: a real ``pilotage site-authz serve`` on 127.0.0.1 keeping its decision log; the
real switch (setuid) asking it at every call (``[authz] kind = "remote"``, and
``cache_ttl_s = 0``: no answer from the switch's cache, the worst case for the site); two
real agents as ``pilot`` at one site (tests/pilot/switched_pool.py) running Alice's 200
jobs through that switch. Alice removes them all in one call. With
``stop_rate_per_site_s = 0.25`` (and 0.3 s per pilot):

- every call of the switch was one decision of the service (no cache): as many decisions
  as invocations, each a permit as ``alice``;
- at the switch (its audit, stamped to the second): one ``--signal TERM`` per job, each
  an authorization; they span at least 199 x 0.25 s (less 2 s: the stamps' second and a
  late call), and no 10 s hold more than 50: 40 turns, 2 for the window's edges, and 8
  for the two seconds before it, as a call may land up to two seconds after its turn on a
  loaded node (sudo and Python starting, the service answering);
- at the service (its decision log, stamped to the millisecond): the removal's
  decisions, K per job (the TERM, the KILL of the job's stragglers once it has ended, its
  clean-up as its owner), span as long, and no 10 s hold more than K x 46;
- no process of any job is left, and every claim's directory is gone.

Measured on this project's 2-core test machine, with other suites running (load average
up to 34): the 200 TERMs spanned 68 s, at most 37 in 10 s at the switch and 107
decisions in 10 s at the service (K = 3). Without the pacing (both rates 0) under the
same load, 187 TERMs came within 21 s, 151 of them in 10 s, the service took 211
decisions in 10 s and, swamped, did not answer 107 calls within the switch's 10 s
timeout (13 TERMs and 94 KILLs not delivered, the switch answering 202): the documents'
denial of service. Fewer jobs with ``PILOTAGE_TEST_MASS_REMOVAL_JOBS``
(a quick look); without the switch: tests/e2e/test_keep_control_mass_removal.py.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import pwd
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site, trust_pool
from pilotage.siteauthz.testing import Service, ca_for_service
from pilotage.testing import Pool
from switch.switch_site import Site

PER_SITE_S = 0.25
JOBS = int(os.environ.get("PILOTAGE_TEST_MASS_REMOVAL_JOBS", "200"))
#: Switch invocations that passed authorization each write one of these records (a
#: KILL's ``end``, a lingering run's ``exit`` and a session's ``leave`` come with one).
INVOKED = ("exec", "signal", "refresh", "enter")
#: The width of the sliding windows in which calls are counted, in whole seconds.
WINDOW_S = 10
#: How late a call may land after its turn on a loaded node (sudo and Python starting,
#: the service answering; two seconds were seen with two test suites on 2 cores): a
#: window may also hold the turns of the two seconds before it.
LATE_S = 2.0
#: The most TERMs in any window: its turns, 2 for its edges, and the late ones (50).
MOST = round((WINDOW_S + LATE_S) / PER_SITE_S) + 2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180 + 5 * JOBS)]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the pacing lives in the server process, not in the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


@pytest.fixture
def service(site: Site) -> Iterator[Service]:
    """The site's authorization service, with the policy of the site's first switch (the
    pool's pilot accepted once the test's pool trusts it), not yet started."""
    directory = site.root / "authz"
    directory.mkdir()
    the_service = Service(
        site.root / "policy-service.toml", ca_for_service(directory), directory, decisions=True
    )
    yield the_service
    the_service.stop()


def remote_switch(site: Site, pool: AgentPool, service: Service) -> str:
    """Start the service; install a switch asking it at each call; its ``--switch``."""
    shutil.copyfile(site.root / "policy-setuid.toml", service.policy)  # trusts the pool
    service.start()
    authz = (
        f'[authz]\nkind = "remote"\nurl = "{service.url}"\n'
        f'ca_file = "{service.ca_file}"\ntimeout_s = 10\n'
    )
    site.install("remote", "setuid", allow_limited="true", cache_ttl_s="0", authz=authz)
    trust_pool(site, "remote", pool.pool, pool.token.read_text())
    return f"sudo -n -C 5 {site.installs['remote']}"


def audit(site: Site) -> list[dict[str, Any]]:
    """The remote switch's audit records so far (none before its first call)."""
    return site.audit("remote") if (site.root / "audit-remote" / "audit.jsonl").exists() else []


def sleeping(uid: int, nap: str) -> list[int]:
    """The live ``sleep NAP`` processes of ``uid`` (this test's jobs' children: another
    run of the suite on the machine runs the same test as the same account)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() != f"sleep\0{nap}\0".encode():
                    continue
            if "\nState:\tZ" in Path(f"/proc/{name}/status").read_text():
                continue
        except OSError:
            continue
        found.append(int(name))
    return found


def claim_dirs(pool: AgentPool) -> list[str]:
    """The claims' directories left in the agents' work directories."""
    return [
        f"{work.name}/{entry.name}"
        for work in (pool.home / "work-a", pool.home / "work-b")
        for entry in os.scandir(work)
        if entry.is_dir(follow_symlinks=False)
    ]


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()[-6000:]}")
        time.sleep(0.5)


def second(record: dict[str, Any]) -> float:
    """The switch's stamp (``2026-12-02T18:20:00Z``) as a POSIX time."""
    return float(calendar.timegm(time.strptime(str(record["time"]), "%Y-%m-%dT%H:%M:%SZ")))


def instant(record: dict[str, Any]) -> float:
    """The service's stamp (``2026-12-02T18:20:00.123Z``) as a POSIX time."""
    return dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()


def most_within(times: list[float], width_s: float) -> int:
    """The most of ``times`` in any ``[t, t + width_s)``."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= width_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_removing_200_running_switched_jobs_reaches_the_switch_and_the_service_at_the_sites_rate(
    site: Site, service: Service, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    nap = f"1000.{secrets.randbelow(10**6):06d}"  # the jobs' sleep, this run's own
    pool = AgentPool.create(
        site,
        make_pool(lease_s="300", stop_rate_per_site_s=str(PER_SITE_S), stop_rate_per_pilot_s="0.3"),
    )
    try:
        switch = remote_switch(site, pool, service)
        jobs = [
            pool.submit(
                "alice",
                ALICE,
                f"trap 'exit 0' TERM; sleep {nap} & wait",
                request_memory_mb=1,
                request_disk_mb=1,
            )
            for _ in range(JOBS)
        ]
        half = str(JOBS // 2 + 1)
        for name in ("a", "b"):
            pool.start_agent(
                "--cpus", half, "--workdir", str(pool.home / f"work-{name}"),
                "--switch", switch, idle_timeout_s=600,
            )  # fmt: skip

        def all_running() -> bool:
            states = [j["state"] for j in pool.pool.wait_jobs(jobs, ("RUNNING", "IDLE"))]
            started = sum(1 for r in audit(site) if r.get("event") == "exec" and r.get("family"))
            return states.count("RUNNING") == JOBS and started == JOBS

        wait_for(all_running, f"{JOBS} switched jobs running", pool.log, timeout=60 + 10 * JOBS)
        calls_before, decided_before = len(audit(site)), len(service.decisions())
        with pool.x509.https(pool.pool.token("alice", "user")) as http:
            ids = [job.split(".")[0] for job in jobs]
            answer = http.post("/api/v1/jobs/actions", json={"action": "remove", "ids": ids})
            assert answer.status_code == 200, answer.text

        def terms() -> list[dict[str, Any]]:
            return [
                r for r in audit(site)[calls_before:]
                if r.get("event") == "signal" and r.get("signal") == "SIGTERM"
            ]  # fmt: skip

        wait_for(lambda: len(terms()) >= JOBS, "every job signalled", pool.log, timeout=900)
        alice = pwd.getpwnam("alice").pw_uid
        wait_for(lambda: not sleeping(alice, nap), "every job's end", pool.log, timeout=600)
        # Each claim's directory goes once its last switch call (the clean-up) is done.
        wait_for(lambda: not claim_dirs(pool), "every job cleaned up", pool.log, timeout=600)

        # Every call of the switch asked the service (no cache): one decision each.
        records = audit(site)
        decided = service.decisions()
        assert len(decided) == sum(r.get("event") in INVOKED for r in records)
        assert all(d["permit"] and d["account"] == "alice" for d in decided), decided[:3]

        # At the switch: one TERM per job, at the site's rate.
        signalled = terms()
        assert len({r["family"] for r in signalled}) == JOBS, signalled
        at_switch = sorted(second(r) for r in signalled)
        assert at_switch[-1] - at_switch[0] >= (JOBS - 1) * PER_SITE_S - 2, at_switch
        assert most_within(at_switch, WINDOW_S) <= MOST, at_switch

        # At the service: the removal's decisions, K per job, spread alike.
        removal = [instant(d) for d in decided[decided_before:]]
        per_job = math.ceil(len(removal) / JOBS)
        assert per_job <= 4, len(removal)  # TERM, KILL of stragglers, clean-up (a late KILL)
        assert max(removal) - min(removal) >= (JOBS - 1) * PER_SITE_S - 1, sorted(removal)
        assert most_within(removal, WINDOW_S) <= per_job * MOST, (per_job, sorted(removal))
        print(
            f"{JOBS} removed: TERMs over {at_switch[-1] - at_switch[0]:.0f} s, at most "
            f"{most_within(at_switch, WINDOW_S)} in {WINDOW_S} s (limit {MOST}); the service "
            f"{len(removal)} decisions over {max(removal) - min(removal):.1f} s, at most "
            f"{most_within(removal, WINDOW_S)} in {WINDOW_S} s (limit {per_job * MOST})"
        )
    finally:
        pool.kill_agents()  # their reapers kill what is left, through the switch
        deadline = time.monotonic() + 120
        while sleeping(pwd.getpwnam("alice").pw_uid, nap) and time.monotonic() < deadline:
            time.sleep(0.5)  # the site (and its switch) must outlive the reapers' calls
