"""Single-user pilots (``--single-user``; a site that does not allow multi-user pilots,
seed 002): the real agent against the real server, two users' jobs in the queue; the
pilot runs one owner's jobs only, the other's stay IDLE for other pilots."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pilotage.pilot.zipapp import build_zipapp

from .conftest import Pool
from .test_agent_server import Agent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("agent") / "agent.pyz")


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()


@pytest.fixture
def users(pool: Pool) -> Iterator[dict[str, httpx.Client]]:
    tls = ssl.create_default_context(cafile=str(pool.state.ca_cert))
    clients = {
        name: httpx.Client(
            base_url=pool.url,
            verify=tls,
            headers={"Authorization": f"Bearer {pool.issue_token(name, 'user')}"},
            timeout=60,
        )
        for name in ("alice", "bob")
    }
    yield clients
    for client in clients.values():
        client.close()


def submit(http: httpx.Client, count: int) -> list[str]:
    cluster = http.post("/api/v1/clusters").json()["cluster_id"]
    job = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
    answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job] * count})
    assert answer.status_code == 201, answer.text
    return [f"{cluster}.{n}" for n in range(count)]


def states(http: httpx.Client, ids: list[str]) -> list[str]:
    answer = http.get("/api/v1/jobs", params={"id": ids})
    assert answer.status_code == 200, answer.text
    return [job["state"] for job in answer.json()]


def test_a_pilot_locked_to_its_first_owner_runs_only_that_owners_jobs(
    pool: Pool, users: dict[str, httpx.Client], agents: list[Agent], agent_pyz: Path
) -> None:
    ids = {"alice": submit(users["alice"], 2), "bob": submit(users["bob"], 2)}
    agent = Agent(pool, agent_pyz, "--single-user", "*", "--idle-timeout", "3")
    agents.append(agent)
    assert agent.wait(timeout=90) == 0, agent.text()
    seen = {name: states(users[name], ids[name]) for name in ids}
    ran = [name for name, got in seen.items() if got == ["COMPLETED", "COMPLETED"]]
    assert len(ran) == 1, (seen, agent.text())
    other = "bob" if ran == ["alice"] else "alice"
    assert seen[other] == ["IDLE", "IDLE"], seen


def test_a_pilot_of_a_named_owner_never_takes_another_owners_job(
    pool: Pool, users: dict[str, httpx.Client], agents: list[Agent], agent_pyz: Path
) -> None:
    alice_jobs = submit(users["alice"], 2)
    bob_jobs = submit(users["bob"], 1)
    agent = Agent(pool, agent_pyz, "--single-user", "bob", "--idle-timeout", "3")
    agents.append(agent)
    assert agent.wait(timeout=90) == 0, agent.text()
    assert states(users["bob"], bob_jobs) == ["COMPLETED"], agent.text()
    assert states(users["alice"], alice_jobs) == ["IDLE", "IDLE"]


def test_the_agent_itself_gives_back_a_claim_of_another_owner(
    pool: Pool, users: dict[str, httpx.Client], agents: list[Agent], agent_pyz: Path
) -> None:
    """Defense in depth: with the slot ad not saying single-user, the server does not lock
    the owner; the agent still runs one owner's jobs and gives the others back."""
    ids = {"alice": submit(users["alice"], 2), "bob": submit(users["bob"], 2)}
    agent = Agent(
        pool, agent_pyz, "--single-user", "*", "--attr", "PilotageSingleUser=false",
        "--idle-timeout", "3",
    )  # fmt: skip
    agents.append(agent)
    assert agent.wait(timeout=90) == 0, agent.text()
    seen = {name: states(users[name], ids[name]) for name in ids}
    ran = [name for name, got in seen.items() if got == ["COMPLETED", "COMPLETED"]]
    assert len(ran) == 1, (seen, agent.text())
    other = "bob" if ran == ["alice"] else "alice"
    assert seen[other] == ["IDLE", "IDLE"], seen
    assert f"a single-user pilot of {ran[0]} does not run a job of {other}" in agent.text()
    answer = users[other].get("/api/v1/jobs", params={"id": ids[other]}).json()
    assert [job["attempts"] for job in answer] == [0, 0]
