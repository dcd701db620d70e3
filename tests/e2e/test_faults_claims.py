"""The server's side of riding through faults, spoken over HTTPS as an agent does: a claim
whose answer was lost is freed by the next complete heartbeat, uncounted; a pilot the
server declared lost registers again and keeps the claims that are still its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa
from e2e_callers import FREE, ProtocolPilot, submit_api
from sqlalchemy.pool import NullPool

from pilotage.api.wire import PILOT_SECRET_HEADER
from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]


def _job(pool: Pool, cluster: int) -> dict[str, Any]:
    with pool.admin() as admin:
        (job,) = admin.call("GET", "/api/v1/jobs", params={"id": str(cluster)})
    return dict(job)


def _events(pool: Pool, cluster: int) -> list[dict[str, Any]]:
    with pool.admin() as admin:
        events: list[dict[str, Any]] = admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
    return events


def _sql(pool: Pool, statement: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def _beat(pilot: ProtocolPilot, claims: list[str], held: list[str] | None) -> httpx.Response:
    body: dict[str, Any] = {"v": 1, "claims": claims}
    if held is not None:
        body["held"] = held
    return pilot.post(f"/pilot/v1/pilots/{pilot.id}/heartbeat", json=body)


def test_a_claim_whose_answer_was_lost_is_freed_at_once_and_not_counted(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    pool = make_pool(lease_s="600")  # without the fix the job would wait ten minutes
    with pool.admin() as admin:
        cluster = submit_api(admin, 1)
    pilot = ProtocolPilot(clients(pool, pool.token("lost-answers", "pilot")), "a")
    other = ProtocolPilot(clients(pool, pool.token("lost-answers", "pilot")), "b")
    lost = pilot.ask()  # the answer "never arrives": the pilot does not hold it
    assert lost is not None
    assert _job(pool, cluster)["state"] == "RUNNING"

    # A heartbeat that does not say it lists everything (an agent that was asking for
    # work meanwhile, or an older agent) frees nothing; nor does another pilot's list.
    assert _beat(pilot, [], None).status_code == 200
    assert _beat(other, [], []).status_code == 200
    assert _job(pool, cluster)["state"] == "RUNNING"

    # The complete list lacks the claim: its job is IDLE again now, the attempt undone.
    answer = _beat(pilot, [], [])
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked"] == []
    job = _job(pool, cluster)
    assert job["state"] == "IDLE" and job["attempts"] == 0
    last = _events(pool, cluster)[-1]
    assert last["trigger"] == "released_by_pilot"
    assert f"claim {lost['claim_id']} is not held by pilot {pilot.id}" in last["reason"]
    ended = _sql(pool, "select end_reason from claims where id = :c", c=lost["claim_id"])
    assert ended == [("not_held_by_pilot",)]

    # Asked again, it runs once: a held claim is kept by a complete list, and completes.
    again = pilot.ask()
    assert again is not None and again["job_id"] == f"{cluster}.0"
    assert _beat(pilot, [again["claim_id"]], [again["claim_id"]]).status_code == 200
    assert _job(pool, cluster)["state"] == "RUNNING"
    assert pilot.report(again["claim_id"]).status_code == 200
    job = _job(pool, cluster)
    assert job["state"] == "COMPLETED" and job["attempts"] == 1
    assert [e["trigger"] for e in _events(pool, cluster)].count("exit") == 1


def test_a_lost_pilot_registers_again_and_keeps_the_claims_still_its_own(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    pool = make_pool(lease_s="600")
    with pool.admin() as admin:
        kept, freed = submit_api(admin, 1), submit_api(admin, 1)
    token = pool.token("rejoining", "pilot")
    http = clients(pool, token)
    pilot = ProtocolPilot(http, "rejoining", cpus=2, memory_mb=2048)
    registration = {
        "v": 1, "name": "rejoining", "site": "test-site", "host": "wn.example.org",
        "lifetime_s": 3600, "cpus": 2, "memory_mb": 2048, "disk_mb": 1000, "gpus": 0,
    }  # fmt: skip
    work = {"v": 1, "free": {**FREE, "cpus": 2, "memory_mb": 2048}, "time_left_s": 3000}
    claims = [
        pilot.post(f"/pilot/v1/pilots/{pilot.id}/claims", json=work).json()["claim"]
        for _ in range(2)
    ]
    by_job = {c["job_id"]: c["claim_id"] for c in claims}
    held = by_job[f"{kept}.0"]
    # The reaper's verdict on a silent pilot (it runs every few seconds; written here so
    # the test does not wait for the silence to last).
    _sql(pool, "update pilots set state = 'lost', exit_reason = 'no heartbeat' where id = :p",
         p=pilot.id)  # fmt: skip
    refused = _beat(pilot, [held], [held])
    assert refused.status_code == 409 and "lost" in refused.json()["message"]

    # Registering again, naming the pilot it was (its secret in the usual header) and
    # what it still holds: the same pilot, the held claim resumed, the other one freed.
    body = {**registration, "resume": {"pilot_id": pilot.id, "claims": [held, "c-unknown"]}}
    answer = pilot.post("/pilot/v1/pilots", json=body)
    assert answer.status_code == 201, answer.text
    again = answer.json()
    assert again["pilot_id"] == pilot.id and again["resumed"] == [held]
    assert _sql(pool, "select state from pilots where id = :p", p=pilot.id) == [("active",)]
    assert _job(pool, freed)["state"] == "IDLE" and _job(pool, freed)["attempts"] == 0
    assert _beat(pilot, [held], [held]).json()["renewed"].keys() == {held}
    assert pilot.report(held).status_code == 200
    assert _job(pool, kept)["state"] == "COMPLETED"

    # Naming a pilot without its secret registers a new one, resuming nothing.
    stranger = clients(pool, token)
    stranger.headers[PILOT_SECRET_HEADER] = "not-the-secret"
    answer = stranger.post("/pilot/v1/pilots", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["pilot_id"] != pilot.id and answer.json()["resumed"] == []
    # A pilot that left is not taken back either.
    assert pilot.post(f"/pilot/v1/pilots/{pilot.id}/exit", json={"v": 1, "reason": "done"})
    answer = pilot.post("/pilot/v1/pilots", json={**body, "resume": {"pilot_id": pilot.id}})
    assert answer.status_code == 201 and answer.json()["pilot_id"] != pilot.id
    # A malformed resume is refused and registers nothing.
    count = _sql(pool, "select count(*) from pilots")
    bad = pilot.post("/pilot/v1/pilots", json={**body, "resume": {"pilot_id": ""}})
    assert bad.status_code == 422 and set(bad.json()) == {"error", "message"}
    assert _sql(pool, "select count(*) from pilots") == count
