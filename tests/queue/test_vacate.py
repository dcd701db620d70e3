"""Giving a claim back (``POST /pilot/v1/claims/{id}/vacate``) against a real pool on SQLite
and PostgreSQL: the job is IDLE at once, a node's fault costs it no attempt, the pilot is
kept from it for ``exclude_s`` while others get it, a late vacate changes nothing, and
the route asks for the pilot's own secret like every claim route. Also the server's half
of single-user pilots (the owner clause once the first claim fixed it) and of a job run
without the switch (its ad and its history)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pilotage.api.wire import PILOT_SECRET_HEADER
from pilotage.store.tables import claims, jobs
from pilotage.testing import Pool

FREE = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}
WORK = {"v": 1, "free": FREE, "time_left_s": 3000}


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    return make_pool(lease_s="300")


@pytest.fixture
def https(pool: Pool) -> Iterator[Callable[[str | None], httpx.Client]]:
    opened: list[httpx.Client] = []

    def open_client(token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        tls = ssl.create_default_context(cafile=pool.state.ca_cert)
        client = httpx.Client(base_url=pool.url, verify=tls, headers=headers, timeout=60)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


class Pilot:
    """A registered pilot, call by call, with its own secret."""

    def __init__(self, http: httpx.Client, name: str, **attrs: str) -> None:
        self.http = http
        body = {
            "v": 1, "name": name, "site": "test-site", "host": f"{name}.example.org",
            "lifetime_s": 3600, "attrs": attrs, **FREE,
        }  # fmt: skip
        answer = http.post("/pilot/v1/pilots", json=body)
        assert answer.status_code == 201, answer.text
        self.id: str = answer.json()["pilot_id"]
        self.secret: str = answer.json()["pilot_secret"]

    def post(self, path: str, body: dict[str, Any], secret: str | None = "own") -> httpx.Response:
        sent = self.secret if secret == "own" else secret
        headers = {} if sent is None else {PILOT_SECRET_HEADER: sent}
        return self.http.post(path, json=body, headers=headers)

    def claim(self) -> dict[str, Any] | None:
        answer = self.post(f"/pilot/v1/pilots/{self.id}/claims", WORK)
        assert answer.status_code == 200, answer.text
        claim: dict[str, Any] | None = answer.json()["claim"]
        return claim

    def vacate(self, claim_id: str, **body: Any) -> httpx.Response:
        return self.post(f"/pilot/v1/claims/{claim_id}/vacate", {"v": 1, **body})


def submit(http: httpx.Client, count: int = 1) -> list[str]:
    cluster = http.post("/api/v1/clusters").json()["cluster_id"]
    job = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
    answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job] * count})
    assert answer.status_code == 201, answer.text
    return [f"{cluster}.{n}" for n in range(count)]


def job_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = http.get("/api/v1/jobs", params={"id": job_id})
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()[0]
    return view


def stored(pool: Pool) -> list[Any]:
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [
                *conn.execute(sa.select(claims).order_by(claims.c.id)).all(),
                *conn.execute(sa.select(jobs).order_by(jobs.c.id)).all(),
            ]
    finally:
        engine.dispose()


def test_a_node_fault_gives_the_job_back_at_once_without_counting_it(
    pool: Pool, https: Callable[[str | None], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    (job_id,) = submit(alice)
    token = pool.token("pilots", "pilot")
    first, second = Pilot(https(token), "first"), Pilot(https(token), "second")
    claim = first.claim()
    assert claim is not None and claim["job_id"] == job_id
    assert job_of(alice, job_id)["attempts"] == 1

    reason = "pilotage-exec: The directory /scratch is not searchable by alice"
    answer = first.vacate(claim["claim_id"], reason=reason, node_fault=True, exclude_s=600)
    assert answer.status_code == 200, answer.text
    assert answer.json()["job_state"] == "IDLE"
    view = job_of(alice, job_id)
    assert (view["state"], view["attempts"], view["pilot"]) == ("IDLE", 0, None)
    events = alice.get(f"/api/v1/jobs/{job_id}/events").json()
    last = events[-1]
    assert (last["from"], last["to"], last["trigger"]) == ("RUNNING", "IDLE", "released_by_pilot")
    assert "(node fault)" in last["reason"] and reason in last["reason"]

    # The pilot that gave it back does not get it again; another pilot does.
    assert first.claim() is None
    again = second.claim()
    assert again is not None and again["job_id"] == job_id

    # A late vacate of the ended claim changes nothing.
    before = stored(pool)
    late = first.vacate(claim["claim_id"], reason="late", node_fault=True)
    assert late.status_code == 409, late.text
    assert "no longer live" in late.json()["message"]
    assert stored(pool) == before


def test_a_vacate_that_is_not_a_node_fault_counts_and_the_last_attempt_holds(
    pool: Pool, https: Callable[[str | None], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    (job_id,) = submit(alice)
    pilot = Pilot(https(pool.token("pilots", "pilot")), "counting")
    claim = pilot.claim()
    assert claim is not None
    answer = pilot.vacate(claim["claim_id"], reason="the pilot is leaving")
    assert answer.status_code == 200, answer.text
    assert job_of(alice, job_id)["attempts"] == 1  # counted
    # Up to max_attempts (5 by default): the fifth counted one holds the job.
    for _ in range(4):
        claim = pilot.claim()
        assert claim is not None
        state = pilot.vacate(claim["claim_id"], reason="again").json()["job_state"]
    assert state == "HELD"
    view = job_of(alice, job_id)
    assert view["hold_code"] == 20 and "given back 5 times" in view["hold_reason"]


def test_vacate_needs_the_pilots_own_secret_and_a_good_body(
    pool: Pool, https: Callable[[str | None], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    submit(alice)
    token = pool.token("pilots", "pilot")
    owner, other = Pilot(https(token), "owner"), Pilot(https(token), "other")
    claim = owner.claim()
    assert claim is not None
    path = f"/pilot/v1/claims/{claim['claim_id']}/vacate"
    body = {"v": 1, "reason": "x", "node_fault": True}
    before = stored(pool)

    missing = owner.post(path, body, secret=None)
    assert missing.status_code == 401, missing.text
    wrong = owner.post(path, body, secret=other.secret)
    assert wrong.status_code == 403, wrong.text
    assert "secret does not match" in wrong.json()["message"]
    as_user = alice.post(path, json=body, headers={PILOT_SECRET_HEADER: owner.secret})
    assert as_user.status_code == 403, as_user.text
    for bad, word in (
        ({"v": 1, "reason": ""}, "reason"),
        ({"v": 1, "reason": "x", "exclude_s": -1}, "exclude_s"),
        ({"v": 1, "reason": "x", "exclude_s": 10**9}, "exclude_s"),
        ({"v": 1, "reason": "x", "counted": False}, "counted"),
        ({"v": 2, "reason": "x"}, "version"),
    ):
        answer = owner.post(path, bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert word in answer.text, (bad, answer.text)
    unknown = owner.vacate("c-nosuchclaim", reason="x")
    assert unknown.status_code == 404, unknown.text
    assert stored(pool) == before


def test_a_single_user_pilot_gets_only_its_first_owners_jobs(
    pool: Pool, https: Callable[[str | None], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    bob = https(pool.token("bob", "user"))
    alice_jobs = submit(alice, 2)
    bob_jobs = submit(bob, 2)
    token = pool.token("pilots", "pilot")
    single = Pilot(https(token), "single", PilotageSingleUser="true")
    got = []
    while (claim := single.claim()) is not None:
        got.append(claim)
        result = single.post(
            f"/pilot/v1/claims/{claim['claim_id']}/result", {"v": 1, "exit_code": 0}
        )
        assert result.status_code == 200, result.text
    owners = {c["owner"] for c in got}
    assert len(owners) == 1 and len(got) == 2, got
    theirs = alice_jobs if owners == {"alice"} else bob_jobs
    assert sorted(c["job_id"] for c in got) == sorted(theirs)
    # A multi-user pilot takes the other owner's jobs.
    multi = Pilot(https(token), "multi")
    rest = [multi.claim(), multi.claim()]
    assert {c["owner"] for c in rest if c is not None} == {"alice", "bob"} - owners


def test_a_job_run_without_the_switch_says_so_in_its_ad_and_history(
    pool: Pool, https: Callable[[str | None], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    (job_id,) = submit(alice)
    pilot = Pilot(https(pool.token("pilots", "pilot")), "bypassing")
    claim = pilot.claim()
    assert claim is not None
    why = "pilotage-exec failed on this node (202 The site authorization service is overloaded)"
    body = {"v": 1, "exit_code": 0, "without_switch": why}
    answer = pilot.post(f"/pilot/v1/claims/{claim['claim_id']}/result", body)
    assert answer.status_code == 200, answer.text
    assert job_of(alice, job_id)["state"] == "COMPLETED"
    last = alice.get(f"/api/v1/jobs/{job_id}/events").json()[-1]
    assert last["trigger"] == "exit"
    assert "ran as the pilot account without identity switching" in last["reason"]
    assert why in last["reason"]
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ad = conn.execute(sa.select(jobs.c.ad)).scalar_one()
    finally:
        engine.dispose()
    assert "PilotageRanWithoutSwitch = true" in ad
