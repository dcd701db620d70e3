"""A switch that keeps answering 202 (issue 10; seed 000 §4.5; docs/pilot.md, "Keeping
control"):

- As root with the real switch (setuid) whose site authorization service is unreachable
  (a remote service on a closed port: every call is a passing 202) and a real agent as
  ``pilot`` with ``--switch-retry retries=2``: the switch's audit shows the first call and
  two retries, then the job is IDLE at once with no attempt counted, and that pilot,
  still asking for work, never takes it again.
- A pilot of an entry that gives a claim back that way is reported against its entry
  (``switch_transient``); the real frontend, against a real server, asks for no pilots
  at an entry with ``transient_reports`` such reports in its window, and again once they
  have aged out.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pilot.switched_pool import ALICE, AgentPool, switch_site, trust_pool
from pilotage.api.wire import PILOT_SECRET_HEADER
from pilotage.frontend.service import Frontend
from pilotage.frontend.settings import FrontendConfig, FrontendSettings
from pilotage.store.tables import job_events, jobs, pilots
from pilotage.testing import Pool
from switch.switch_site import Site


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the store's side of vacate runs on both in tests/queue."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def rows(pool: Pool) -> tuple[Any, list[Any], list[Any]]:
    """The (only) job's row, its events, and the pilots (id, last seen)."""
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(jobs)).one()
            events = conn.execute(sa.select(job_events).order_by(job_events.c.id)).all()
            seen = conn.execute(sa.select(pilots.c.id, pilots.c.last_seen_at)).all()
    finally:
        engine.dispose()
    return row, list(events), list(seen)


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_switch_answering_202_is_retried_then_the_job_is_idle_uncounted_and_kept_from_the_pilot(
    require_service: Callable[[str, str], NoReturn],
    make_pool: Callable[..., Pool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with switch_site(require_service) as site:
        monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
        pool = AgentPool.create(site, make_pool(lease_s="300"))
        try:
            run_flaky_site(site, pool)
        finally:
            pool.kill_agents()


def run_flaky_site(site: Site, pool: AgentPool) -> None:
    authz = (
        f'[authz]\nkind = "remote"\nurl = "https://localhost:{closed_port()}/v1/decision"\n'
        "timeout_s = 1\n"
    )
    site.install("flaky", "setuid", allow_limited="true", authz=authz)
    trust_pool(site, "flaky", pool.pool, pool.token.read_text())
    job = pool.submit("alice", ALICE, "id -un")
    pool.start_agent(
        "--switch", f"sudo -n -C 5 {site.installs['flaky']}",
        "--switch-retry", "retries=2", "--switch-retry", "base_s=0.2",
        "--switch-retry", "exclude_s=600", idle_timeout_s=120,
    )  # fmt: skip

    def given_back() -> bool:
        _row, events, _seen = rows(pool.pool)
        return any(e.from_state == "RUNNING" and e.to_state == "IDLE" for e in events)

    wait_for(given_back, "the give-back", pool.log)
    row, events, seen = rows(pool.pool)
    text = pool.log.read_text()
    assert (row.state, row.attempts) == ("IDLE", 0), text
    back = events[-1]
    assert "(node fault)" in back.reason and "(after 2 retries)" in back.reason, back.reason
    assert "unreachable" in back.reason
    (pilot_id,) = [p.id for p in seen]

    # The pilot keeps asking (every 0.5 s) and never gets the job back.
    def asked_again() -> bool:
        return any(p.last_seen_at > back.at + 3 for p in rows(pool.pool)[2])

    wait_for(asked_again, "the pilot asking again", pool.log)
    row, events, _seen = rows(pool.pool)
    assert row.state == "IDLE", pool.log.read_text()
    assert [e.pilot_id for e in events if e.to_state == "RUNNING"] == [pilot_id]
    calls = [r for r in site.audit("flaky") if r.get("exit") == 202]
    assert len(calls) == 3, calls  # the first call and two retries, no more
    assert text.count("retry 1 in") == 1 and text.count("retry 2 in") == 1, text
    assert job == f"{row.cluster_id}.{row.proc_id}"


# --- the entry's health, seen by the frontend --------------------------------------------

AD = {"Site": "SITE_A", "Cpus": 4, "Memory": 8192, "Disk": 10000, "OpSys": "LINUX"}


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    return make_pool(lease_s="300")


@pytest.fixture
def remote(pool: Pool) -> Iterator[Callable[[str], Any]]:
    opened: list[Any] = []

    def open_client(token: str) -> Any:
        client = pool.remote(token)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def give_back_after_202(pool: Pool, entry_token: str, remote: Callable[[str], Any], n: int) -> None:
    """A pilot of the entry claims a job and gives it back as after repeated 202s."""
    pilot = remote(entry_token)
    body = {
        "name": f"pilot-{n}", "site": "SITE_A", "host": f"node{n}", "cpus": 1,
        "memory_mb": 512, "disk_mb": 100, "lifetime_s": 600, "attrs": {"EntryName": '"alpha"'},
    }  # fmt: skip
    registered = pilot.call("POST", "/pilot/v1/pilots", json=body)
    secret = {PILOT_SECRET_HEADER: registered["pilot_secret"]}
    work = {"free": {"cpus": 1, "memory_mb": 512, "disk_mb": 100, "gpus": 0}, "time_left_s": 500}
    claim = pilot.call(
        "POST", f"/pilot/v1/pilots/{registered['pilot_id']}/claims", json=work, headers=secret
    )["claim"]
    assert claim is not None
    vacate = {
        "reason": "pilotage-exec refused (202): The site authorization service is unreachable",
        "node_fault": True, "exclude_s": 600, "refusal": "transient",
    }  # fmt: skip
    answer = pilot.call(
        "POST", f"/pilot/v1/claims/{claim['claim_id']}/vacate", json=vacate, headers=secret
    )
    assert answer["job_state"] == "IDLE"


def test_an_entry_whose_pilots_report_202s_gets_no_pilots_while_it_lasts(
    pool: Pool, remote: Callable[[str], Any]
) -> None:
    factory = remote(pool.token("factory-1", "factory"))
    frontend_client = remote(pool.token("vo-frontend", "frontend"))
    factory.call(
        "PUT", "/api/v1/entries/alpha",
        json={"ad": AD, "pilots": {"idle": 0, "running": 0, "held": 0}},
    )  # fmt: skip
    alice = remote(pool.token("alice", "user"))
    cluster = alice.call("POST", "/api/v1/clusters")["cluster_id"]
    job = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
    alice.call("POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job] * 4})

    now = [time.time()]
    settings = FrontendSettings(name="vo-frontend", transient_reports=2, transient_window_s=120)
    frontend = Frontend(FrontendConfig(frontend=settings), frontend_client, clock=lambda: now[0])
    (before,) = frontend.cycle()
    assert before.entry == "alpha" and before.idle_wanted > 0, before

    minted = frontend_client.call(
        "POST", "/api/v1/pilot-tokens", json={"entry": "alpha", "lifetime_s": 600}
    )
    give_back_after_202(pool, minted["token"], remote, 1)
    (one,) = frontend.cycle()
    assert one.idle_wanted > 0, one  # one report is not yet a pattern
    give_back_after_202(pool, minted["token"], remote, 2)
    reports = frontend_client.call("GET", "/api/v1/validation-reports", params={"entry": "alpha"})
    assert [(r["reason"], r["ok"]) for r in reports] == [("switch_transient", False)] * 2
    assert "unreachable" in reports[0]["message"]

    (paused,) = frontend.cycle()
    assert (paused.idle_wanted, paused.demand) == (0, 0.0), paused
    # The reports age out of the window; the entry ad, advertised again, is still fresh.
    # (The server stamped the reports with its own clock, however long the test took.)
    factory.call(
        "PUT", "/api/v1/entries/alpha",
        json={"ad": AD, "pilots": {"idle": 0, "running": 0, "held": 0}},
    )  # fmt: skip
    now[0] = time.time() + 121
    (again,) = frontend.cycle()
    assert again.idle_wanted > 0, again
