"""The admin's verbs against a real pool: tokens listed and revoked (refused at once by
this server, and by another server of the pool within its refresh time), pilots drained
(running jobs finish, no new claim), resumed, killed and retired, and who submits."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_callers import ProtocolPilot, https, snapshot

from pilotage.testing import Pool

WAIT_JOB = """#!/bin/sh
# Runs until the test creates the file named by its argument.
while [ ! -e "$1" ]; do sleep 0.1; done
echo "released by $1"
"""

SUBMIT = """executable = wait.sh
arguments  = {gate}/go-$(Process)
output     = out/wait.$(Process).out
error      = out/wait.$(Process).err
request_cpus = 1
request_memory = 64MB
queue 2
"""


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _until(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    """Wait for ``check()`` to return something true; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_tokens_listed_and_revoked(
    make_pool: Callable[..., Pool], clients: Callable[..., httpx.Client]
) -> None:
    # Long leases and heartbeats: the protocol pilot stays silent, and must not be
    # declared lost while the test runs, however slowly (only tokens are under test).
    pool = make_pool(revocation_refresh_s="1", lease_s="3600", heartbeat_s="600")
    user_token = pool.token("alice", "user")
    pilot_token = pool.token("site-pilots", "pilot")
    other_url_file = pool.root / "other.url"
    pool.start_server(socket=pool.root / "other.sock", url_file=other_url_file)
    other_url = other_url_file.read_text().strip()

    listed = _json(pool.cli("token", "list", "--json"))
    mine = {t["subject"]: t for t in listed}
    assert mine["alice"]["role"] == "user" and mine["alice"]["state"] == "valid"
    assert mine["site-pilots"]["role"] == "pilot"
    table = pool.cli("token", "list")
    assert mine["alice"]["token_id"] in table.stdout and "alice" in table.stdout

    pilot = ProtocolPilot(clients(pool, pilot_token))
    assert pilot.heartbeat().status_code == 200  # its token is cached from now on
    alice_file = pool.root / "alice.token"
    alice_file.write_text(user_token + "\n")
    with https(pool, user_token) as here, https(pool, user_token, url=other_url) as there:
        assert here.get("/api/v1/whoami").status_code == 200
        assert there.get("/api/v1/whoami").status_code == 200

        # Bad input changes nothing: an unknown id, no target at all, a user's token.
        before = snapshot(pool, volatile=("pilots.last_seen_at",))
        unknown = pool.cli("token", "revoke", "no-such-token")
        assert unknown.returncode == 3 and "no token with id no-such-token" in unknown.stderr
        assert pool.cli("token", "revoke").returncode == 2
        as_user = pool.cli("--server", pool.url, "--token", str(alice_file), "token", "list")
        assert as_user.returncode == 4 and "needs admin" in as_user.stderr
        after = snapshot(pool, volatile=("pilots.last_seen_at",))
        assert {k: v for k, v in after["tables"].items() if before["tables"][k] != v} == {}

        revoked = pool.cli("token", "revoke", mine["alice"]["token_id"], "--reason", "left")
        assert revoked.returncode == 0, revoked.stderr
        assert f"token {mine['alice']['token_id']} of alice revoked" in revoked.stdout
        assert pool.cli("token", "revoke", "--subject", "site-pilots").returncode == 0

        # This server refuses them at once, cached or not.
        answer = here.get("/api/v1/whoami")
        assert answer.status_code == 401 and "was revoked" in answer.json()["message"]
        beat = pilot.heartbeat()
        assert beat.status_code == 401 and "was revoked" in beat.json()["message"]
        q = pool.cli("--server", pool.url, "--token", str(alice_file), "q")
        assert q.returncode == 4 and "was revoked by the pool's admin" in q.stderr

        # The other server within its refresh time (1 s here): wait for it.
        _until(
            "the other server to refuse the revoked token",
            lambda: there.get("/api/v1/whoami").status_code == 401,
        )
    every = {t["subject"]: t for t in _json(pool.cli("token", "list", "--all", "--json"))}
    assert every["alice"]["state"] == "revoked" and every["alice"]["revoke_reason"] == "left"
    assert _json(pool.cli("token", "list", "--json")) == []
    again = pool.cli("token", "revoke", mine["alice"]["token_id"])
    assert again.returncode == 0 and "was already revoked" in again.stdout


@pytest.fixture
def sqlite_pool() -> Iterator[Pool]:
    """One pool on SQLite with short heartbeats (pilot verbs need no second database).

    A long lease: a protocol pilot, silent between its calls, is never declared lost
    while a test runs, however slowly (that takes max(3 heartbeats, the lease)).
    """
    root = Path(tempfile.mkdtemp(prefix="pilotage-pool-"))
    pool = Pool(
        root,
        f"sqlite:///{root / 'pilotage.db'}",
        settings={"lease_s": "3600", "heartbeat_s": "1", "reap_interval_s": "0.5",
                  "retry_after_s": "0.5"},
    )  # fmt: skip
    try:
        yield pool.start()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pilots(pool: Pool, *, every: bool = False) -> dict[str, dict[str, Any]]:
    """What 'pilotage pilot list --json' prints (read through the API: quicker)."""
    with pool.admin() as client:
        return {p["pilot"]: p for p in client.call("GET", "/api/v1/pilots", params={"all": every})}


def _jobs(pool: Pool) -> dict[str, dict[str, Any]]:
    with pool.admin() as client:
        return {j["id"]: j for j in client.call("GET", "/api/v1/jobs", params={"id": ["1"]})}


def test_drain_resume_kill_retire(sqlite_pool: Pool) -> None:
    pool = sqlite_pool
    work, gate = pool.root / "work", pool.root / "gate"
    (work / "out").mkdir(parents=True)
    gate.mkdir()
    (work / "wait.sh").write_text(WAIT_JOB)
    (work / "wait.sh").chmod(0o755)
    (work / "wait.submit").write_text(SUBMIT.format(gate=gate))
    assert pool.cli("submit", "wait.submit", cwd=work).returncode == 0
    backend = pool.pilots(1, cpus=1, memory_mb=512)
    running = _until(
        "one job to run",
        lambda: [i for i, j in _jobs(pool).items() if j["state"] == "RUNNING"],
    )
    (first,) = running
    second = "1.1" if first == "1.0" else "1.0"
    (listed,) = _json(pool.cli("pilot", "list", "--json"))
    agent = listed["pilot"]
    assert (listed["state"], listed["jobs"], listed["site"]) == ("active", 1, "local")

    # Drain: the agent hears it, its running job finishes, it takes no other.
    drained = pool.cli("pilot", "drain", agent)
    assert drained.returncode == 0 and f"pilot {agent} drained" in drained.stdout
    assert _pilots(pool)[agent]["state"] == "draining"
    log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    _until("the agent to hear the drain", lambda: "no new job" in log.read_text())
    (gate / f"go-{first.split('.')[1]}").touch()
    pool.wait_jobs([first], ("COMPLETED",))
    now = _pilots(pool)[agent]
    assert (now["state"], now["jobs"]) == ("drained", 0)
    assert _jobs(pool)[second]["state"] == "IDLE"

    # The server refuses a drained pilot any claim, though a job fits it.
    token = pool.token("api-pilot", "pilot")
    with https(pool, token) as http:
        other = ProtocolPilot(http, name="api-pilot")
        assert pool.cli("pilot", "drain", other.id).returncode == 0
        answer = other.post(
            f"/pilot/v1/pilots/{other.id}/claims",
            json={"v": 1, "free": {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000},
                  "time_left_s": 3000},
        )  # fmt: skip
        assert answer.json()["claim"] is None and answer.json()["drain"] is True
        assert other.heartbeat().json()["drain"] is True

        # Retire (before it goes silent and is declared lost): no work, and the heartbeat says so.
        assert pool.cli("pilot", "retire", other.id).returncode == 0
        assert other.heartbeat().json()["retire"] is True
        assert other.ask() is None

        assert _pilots(pool)[other.id]["state"] == "retiring"

        # Resume: the agent takes the other job.
        assert pool.cli("pilot", "resume", agent).returncode == 0
        pool.wait_jobs([second], ("RUNNING",))
        assert _jobs(pool)[second]["pilot"] == agent

        # Kill: its job goes back to the queue at once and the pilot leaves.
        killed = pool.cli("pilot", "kill", agent)
        assert killed.returncode == 0 and "1 running jobs back to the queue" in killed.stdout
        assert _jobs(pool)[second]["state"] == "IDLE"
        with pool.admin() as client:
            last = client.call("GET", f"/api/v1/jobs/{second}/events")[-1]
        assert (last["from"], last["to"], last["trigger"]) == ("RUNNING", "IDLE", "pilot_killed")
        backend.processes["pilot-0"].wait(60)
        assert _pilots(pool, every=True)[agent]["state"] in ("exited", "lost")
        assert agent not in _pilots(pool)

        # Refusals change nothing.
        assert pool.cli("pilot", "drain", "p-nonexistent").returncode == 3
        gone = pool.cli("pilot", "drain", agent)
        assert gone.returncode == 6 and "has left the pool" in gone.stderr
        assert pool.cli("pilot", "kill").returncode == 2
        with https(pool, pool.token("alice", "user")) as alice:
            refused = alice.post("/api/v1/pilots/actions", json={"action": "kill", "all": True})
            assert refused.status_code == 403

    # Who submits: the pool's own user, with its jobs.
    (user,) = _json(pool.cli("admin", "users", "--json"))
    assert user["clusters"] == 1 and user["jobs"] == {"COMPLETED": 1, "IDLE": 1}
    assert pool.cli("rm", second).returncode == 0


def test_a_factory_retires_the_running_pilots_of_its_entry(sqlite_pool: Pool) -> None:
    pool = sqlite_pool
    advert = {"ad": {"Site": "SITE_A", "Cpus": 2, "Memory": 2048},
              "pilots": {"idle": 0, "running": 1, "held": 0}}  # fmt: skip
    with (
        https(pool, pool.token("factory-1", "factory")) as factory,
        https(pool, pool.token("factory-2", "factory")) as other,
        https(pool, pool.token("vo-frontend", "frontend")) as frontend,
    ):
        assert factory.put("/api/v1/entries/alpha", json=advert).status_code == 204
        minted = frontend.post("/api/v1/pilot-tokens", json={"entry": "alpha", "lifetime_s": 600})
        with https(pool, minted.json()["token"]) as http:
            pilot = ProtocolPilot(http, site="SITE_A", attrs={"EntryName": '"alpha"'})
            before = snapshot(pool, volatile=("pilots.last_seen_at",))
            assert other.post("/api/v1/entries/alpha/retirements",
                              json={"frontend": "vo-frontend"}).status_code == 403  # fmt: skip
            assert factory.post("/api/v1/entries/nowhere/retirements",
                                json={"frontend": "vo-frontend"}).status_code == 404  # fmt: skip
            assert frontend.post("/api/v1/entries/alpha/retirements",
                                 json={"frontend": "vo-frontend"}).status_code == 403  # fmt: skip
            assert snapshot(pool, volatile=("pilots.last_seen_at",)) == before
            retire = {"frontend": "vo-frontend"}
            done = factory.post("/api/v1/entries/alpha/retirements", json=retire)
            assert done.status_code == 200 and done.json()["retired"] == 1
            assert pilot.heartbeat().json()["retire"] is True
            assert pilot.ask() is None
