"""Node faults and the bypass rule, as root with the real switch (setuid) and the agent as
``pilot`` (tests/pilot/switched_pool.py; docs/pilot.md, "Switch exit codes").

- A work path the job's owner cannot search is the node's fault: the job goes back to
  IDLE at once with no attempt counted, and the pilot takes no more jobs and leaves,
  saying why (its exit reason, which the collector shows).
- A broken switch installation (202) at a site whose bypass answer is ``no``: the job
  never runs as the pilot account; it goes back uncounted and the pilot leaves.
- The same at a site that answers ``yes``: the job runs as the pilot account, and its
  history and ad say it ran without identity switching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.store.tables import jobs, pilots
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the store's side is tested on both in tests/queue/test_vacate.py."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


@pytest.fixture
def agent_pool(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgentPool]:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool(lease_s="300"))
    try:
        yield pool
    finally:
        pool.kill_agents()


def stored(pool: Pool) -> tuple[dict[str, Any], list[Any]]:
    """The jobs by id (state, attempts, ad) and every pilot's state and exit reason."""
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(jobs)).all()
            left = conn.execute(sa.select(pilots.c.state, pilots.c.exit_reason)).all()
    finally:
        engine.dispose()
    return {f"{r.cluster_id}.{r.proc_id}": r for r in rows}, list(left)


def events(pool: AgentPool, job: str) -> list[dict[str, Any]]:
    with pool.x509.https(pool.pool.token("alice", "user")) as http:
        found: list[dict[str, Any]] = http.get(f"/api/v1/jobs/{job}/events").json()
    return found


def test_a_work_path_the_owner_cannot_search_gives_the_job_back_and_stops_the_pilot(
    agent_pool: AgentPool,
) -> None:
    pool = agent_pool
    job = pool.submit("alice", ALICE, "id -un")
    pool.home.chmod(0o700)  # the agent's work directory sits below it: alice cannot pass
    agent = pool.start_agent()
    assert agent.wait(timeout=120) == 1, pool.log.read_text()
    text = pool.log.read_text()
    assert "this node cannot run jobs" in text, text
    rows, left = stored(pool.pool)
    assert (rows[job].state, rows[job].attempts) == ("IDLE", 0), text
    assert [(state, reason.startswith("node fault: ")) for state, reason in left] == [
        ("exited", True)
    ], left
    back = events(pool, job)[-1]
    assert (back["from"], back["to"]) == ("RUNNING", "IDLE")
    assert "(node fault)" in back["reason"]


def break_switch(site: Site) -> None:
    """A config file others may write: the switch refuses to run (202, not passing)."""
    (site.root / "exec-setuid.toml").chmod(0o666)


def test_after_a_202_a_job_never_runs_as_the_pilot_where_the_site_says_no(
    agent_pool: AgentPool, site: Site
) -> None:
    pool = agent_pool
    job = pool.submit("alice", ALICE, "id -un")
    break_switch(site)
    agent = pool.start_agent("--bypass-on-error", "no")
    assert agent.wait(timeout=120) == 1, pool.log.read_text()
    text = pool.log.read_text()
    rows, left = stored(pool.pool)
    assert (rows[job].state, rows[job].attempts) == ("IDLE", 0), text
    assert "PilotageRanWithoutSwitch" not in rows[job].ad
    assert "writable by group or others" in left[0].exit_reason, left
    assert "as the pilot account" not in text


def test_after_a_202_a_site_that_says_yes_runs_the_job_as_the_pilot_and_its_history_says_so(
    agent_pool: AgentPool, site: Site
) -> None:
    pool = agent_pool
    job = pool.submit("alice", ALICE, "id -un")
    break_switch(site)
    agent = pool.start_agent("--bypass-on-error", "yes")
    done = pool.wait([job])[job]
    assert agent.wait(timeout=120) == 1, pool.log.read_text()
    text = pool.log.read_text()
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), text
    assert pool.output(job, "alice")["out.txt"] == b"pilot\n"
    ended = events(pool, job)[-1]
    assert ended["trigger"] == "exit"
    assert "ran as the pilot account without identity switching" in ended["reason"]
    assert "writable by group or others" in ended["reason"]
    rows, _left = stored(pool.pool)
    assert "PilotageRanWithoutSwitch = true" in rows[job].ad


def test_a_site_that_requires_setuid_never_gets_a_job_run_by_another_switch_type(
    agent_pool: AgentPool,
) -> None:
    pool = agent_pool
    job = pool.submit("alice", ALICE, "id -un")
    # As start-up validation writes them: the site's answer and the type found on the node.
    agent = pool.start_agent(
        "--attr", 'PolicySetuid="require"', "--attr", 'PolicyLogOnly="allow"',
        "--attr", 'PilotageSwitch="log-only"',
    )  # fmt: skip
    assert agent.wait(timeout=60) == 1, pool.log.read_text()
    assert "the site requires setuid mode but this node's switch is 'log-only'" in (
        pool.log.read_text()
    )
    rows, left = stored(pool.pool)
    assert (rows[job].state, rows[job].attempts) == ("IDLE", 0)
    assert left == []  # it never joined the pool
