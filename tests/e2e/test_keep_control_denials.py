"""A site that denies a job's owner (pilotage-exec 203), as root with the real switch
(setuid) and real agents as ``pilot`` (issue 10; seed 000 §4.7; docs/pilot.md, "Keeping
control"):

- Alice is banned at site A (its switch's policy bans her DN) but not at site B: the job
  is denied once at A, goes back to IDLE with ``ExcludedSites = site-a`` and no attempt
  counted, is never given to A's pilot again while that pilot keeps asking (the banning
  switch's audit shows one denial), and runs at B as ``alice``.
- Banned at both, with no third site in the pool: HELD at once when no site is left
  (``max_denials`` is 3, not reached), code 14, with both sites' denials; the count's
  own rule is tested against both stores in tests/queue/test_denials.py.

A pilot of site B must be in the pool when A denies, or no site is left and the job is
held at once; it is registered by hand (a slot of B busy elsewhere) until B's agent starts.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pilot.switched_pool import ALICE, AgentPool, switch_site, trust_pool
from pilotage.queue.jobad import load_ad
from pilotage.store.tables import job_events, jobs, pilots
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow

BANNED = f"The DN '{ALICE}' is banned."


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the store's side runs on both in tests/queue/test_denials.py."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


def banning_switch(site: Site, pool: AgentPool) -> str:
    """A second switch whose site policy bans Alice's DN; its ``--switch`` value."""
    site.install("banning", "setuid", allow_limited="true")
    trust_pool(site, "banning", pool.pool, pool.token.read_text())
    policy = site.root / "policy-banning.toml"
    text = policy.read_text().replace('dns = ["', f'dns = ["{ALICE}", "', 1)
    policy.write_text(text)
    return f"sudo -n -C 5 {site.installs['banning']}"


def place_holder(pool: Pool, site_name: str) -> None:
    """A pilot of ``site_name`` in the pool, registered by hand, that asks for nothing."""
    tls = ssl.create_default_context(cafile=str(pool.state.ca_cert))
    token = pool.token("pilots", "pilot")
    with httpx.Client(base_url=pool.url, verify=tls, timeout=60) as http:
        body = {
            "v": 1, "name": f"holder-{site_name}", "site": site_name, "host": "holder.example",
            "lifetime_s": 3600, "attrs": {}, "cpus": 1, "memory_mb": 64, "disk_mb": 10,
            "gpus": 0,
        }  # fmt: skip
        answer = http.post(
            "/pilot/v1/pilots", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 201, answer.text


def rows(pool: Pool, job: str) -> tuple[Any, list[Any], list[Any]]:
    """The job's row, its events, and the pilots (id, site, last seen)."""
    cluster, proc = (int(n) for n in job.split("."))
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(jobs).where(jobs.c.cluster_id == cluster, jobs.c.proc_id == proc)
            ).one()
            events = conn.execute(
                sa.select(job_events).where(job_events.c.job_id == row.id).order_by(job_events.c.id)
            ).all()
            seen = conn.execute(sa.select(pilots.c.id, pilots.c.site, pilots.c.last_seen_at)).all()
    finally:
        engine.dispose()
    return row, list(events), list(seen)


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()}")
        time.sleep(0.2)


def denied_at_a(pool: AgentPool, job: str, banning: str) -> str:
    """Start A's agent; wait until it has denied the job and asked again for a while.
    Returns A's pilot id."""
    pool.start_agent(
        "--site", "site-a", "--switch", banning, "--workdir", str(pool.home / "work-a"),
        idle_timeout_s=120,
    )  # fmt: skip

    def denied() -> bool:
        row = rows(pool.pool, job)[0]
        return row.state in ("IDLE", "HELD") and "ExcludedSites" in row.ad

    wait_for(denied, "the denial at site A", pool.log)
    _row, events, seen = rows(pool.pool, job)
    (pilot_a,) = [p.id for p in seen if p.site == "site-a"]
    denial_at = events[-1].at

    # A keeps asking for work (every 0.5 s): give it several chances to get the job back.
    def asked_again() -> bool:
        return any(
            p.id == pilot_a and p.last_seen_at > denial_at + 3 for p in rows(pool.pool, job)[2]
        )

    wait_for(asked_again, "site A's pilot asking again", pool.log)
    return pilot_a


def test_a_job_denied_at_one_site_runs_at_another_and_never_returns_to_the_first(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool(lease_s="300"))
    try:
        banning = banning_switch(site, pool)
        job = pool.submit("alice", ALICE, "id -un")
        place_holder(pool.pool, "site-b")
        pilot_a = denied_at_a(pool, job, banning)
        row, events, _seen = rows(pool.pool, job)
        assert (row.state, row.attempts) == ("IDLE", 0), pool.log.read_text()
        assert load_ad(row.ad).eval("ExcludedSites") == ["site-a"], row.ad
        assert "denied at site site-a" in events[-1].reason
        assert BANNED in events[-1].reason

        pool.start_agent("--site", "site-b", "--workdir", str(pool.home / "work-b"))
        done = pool.wait([job])[job]
        text = pool.log.read_text()
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), text
        assert pool.output(job, "alice")["out.txt"] == b"alice\n"
        _row, events, seen = rows(pool.pool, job)
        claimed_by = [e.pilot_id for e in events if e.to_state == "RUNNING"]
        (pilot_b,) = [p.id for p in seen if p.site == "site-b" and not p.id.startswith("holder")
                      and p.id in claimed_by]  # fmt: skip
        assert claimed_by == [pilot_a, pilot_b], events
        # The site's authorization answered once for Alice: no try-and-fail loop.
        refusals = [r for r in site.audit("banning") if r.get("exit") == 203]
        assert len(refusals) == 1, refusals
    finally:
        pool.kill_agents()


def test_a_job_denied_at_every_site_is_held_when_none_is_left_with_each_denial(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool(lease_s="300", max_denials="3"))
    try:
        banning = banning_switch(site, pool)
        job = pool.submit("alice", ALICE, "id -un")
        place_holder(pool.pool, "site-b")
        denied_at_a(pool, job, banning)
        pool.start_agent(
            "--site", "site-b", "--switch", banning, "--workdir", str(pool.home / "work-b")
        )
        held = pool.wait([job])[job]
        text = pool.log.read_text()
        assert (held["state"], held["hold_code"]) == ("HELD", 14), text
        reason = held["hold_reason"]
        assert reason.startswith("no other site is left; pilotage-exec refused"), reason
        assert f"site-a: pilotage-exec refused (203): Authorization denied: {BANNED}" in reason
        assert f"site-b: pilotage-exec refused (203): Authorization denied: {BANNED}" in reason
        assert held["attempts"] == 0
    finally:
        pool.kill_agents()
