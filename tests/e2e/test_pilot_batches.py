"""The pilot protocol's long-poll and batches over HTTPS (docs/pilot-protocol.md, "Ask
for work" and "Several results in one call"): a request for work held open wakes when
jobs are submitted and brings several claims; several results go in one call, each
recorded or refused alone; bad bodies are refused and change nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
from e2e_callers import ProtocolPilot, refusal, snapshot, submit_api

from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]
FREE3 = {"cpus": 3, "memory_mb": 3072, "disk_mb": 3000, "gpus": 0}


def _jobs(pool: Pool, cluster: int) -> dict[str, str]:
    with pool.admin() as admin:
        jobs = admin.call("GET", "/api/v1/jobs", params={"id": str(cluster)})
    return {f"{j['cluster']}.{j['proc']}": j["state"] for j in jobs}


def _result(claim_id: str, **fields: Any) -> dict[str, Any]:
    return {"claim_id": claim_id, "exit_code": 0, "wall_s": 0.1, "cpu_s": 0.0, **fields}


def test_a_held_request_wakes_at_submit_and_results_go_several_to_a_call(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    # A held request looks again on its own only every ten minutes, and it is held
    # longer than the client waits (60 s): only a wake-up answers it in time.
    pool = make_pool(retry_after_s="600", work_wait_s="120", lease_s="600")
    pilot = ProtocolPilot(clients(pool, pool.token("batches", "pilot")), "batch", **FREE3)
    ask = {"v": 1, "free": FREE3, "time_left_s": 3000, "wait_s": 90, "max_claims": 3}
    held: dict[str, Any] = {}

    def hold() -> None:
        try:
            held["answer"] = pilot.post(f"/pilot/v1/pilots/{pilot.id}/claims", json=ask)
        except httpx.TimeoutException as exc:
            held["answer"] = f"not answered in time ({exc!r}): no wake-up"

    waiting = threading.Thread(target=hold)
    waiting.start()
    with pool.admin() as admin:
        cluster = submit_api(admin, 4)
    waiting.join(timeout=120)
    assert isinstance(held["answer"], httpx.Response), held["answer"]
    answer = held["answer"].json()
    assert held["answer"].status_code == 200, answer
    assert answer["claim"] is not None and len(answer["more_claims"]) == 2
    claims = [answer["claim"]["claim_id"]] + [c["claim_id"] for c in answer["more_claims"]]
    jobs = {c["job_id"] for c in [answer["claim"], *answer["more_claims"]]}
    assert len(jobs) == 3 and sorted(_jobs(pool, cluster).values()).count("RUNNING") == 3

    # Bad bodies are refused whole (422) and change nothing.
    before = snapshot(pool)
    results = f"/pilot/v1/pilots/{pilot.id}/results"
    bad: list[tuple[str, dict[str, Any]]] = [
        (results, {"v": 1, "results": []}),
        (results, {"v": 1, "results": [_result(claims[0], next={"v": 1})]}),
        (results, {"v": 1, "results": [_result(claims[0])] * 65}),
        (results, {"v": 1, "results": [_result(claims[0], exit_code=256)]}),
        (results, {"v": 1, "results": [{"exit_code": 0}]}),
        (f"/pilot/v1/pilots/{pilot.id}/claims", {**ask, "max_claims": 0}),
        (f"/pilot/v1/pilots/{pilot.id}/claims", {**ask, "max_claims": 65}),
        (f"/pilot/v1/pilots/{pilot.id}/claims", {**ask, "wait_s": -1}),
    ]
    for path, body in bad:
        status, message = refusal(pilot.post(path, json=body))
        assert status == 422 and message, (body, message)
    assert snapshot(pool) == before

    # One result reported alone first: in the batch it is refused alone; the others are
    # recorded, and the next job comes in the same answer.
    assert pilot.report(claims[0]).status_code == 200
    batch = {
        "v": 1,
        "results": [_result(c) for c in claims],
        "next": {"v": 1, "free": FREE3, "time_left_s": 3000, "max_claims": 3},
    }
    reported = pilot.post(results, json=batch)
    assert reported.status_code == 200, reported.text
    body = reported.json()
    assert body["recorded"] == {claims[1]: "COMPLETED", claims[2]: "COMPLETED"}
    assert [(r["claim_id"], r["status"], r["error"]) for r in body["refused"]] == [
        (claims[0], 409, "Conflict")
    ]
    assert body["claim"] is not None and body["more_claims"] == []  # the fourth job
    states = _jobs(pool, cluster)
    assert sorted(states.values()) == ["COMPLETED"] * 3 + ["RUNNING"]
    assert states[body["claim"]["job_id"]] == "RUNNING"

    # Nothing left: a request without wait_s is answered at once, without a claim.
    last = pilot.post(results, json={"v": 1, "results": [_result(body["claim"]["claim_id"])]})
    assert last.status_code == 200 and last.json()["claim"] is None
    assert sorted(_jobs(pool, cluster).values()) == ["COMPLETED"] * 4
    with pool.admin() as admin:
        for job in _jobs(pool, cluster):
            events = admin.call("GET", f"/api/v1/jobs/{job}/events")
            assert [e["trigger"] for e in events] == ["submit", "claim", "exit"]

    # Nothing to run: a held request answers at once when its pilot is drained (here:
    # it would otherwise wait out wait_s, since it looks again only every ten minutes).
    held.clear()
    waiting = threading.Thread(target=hold)
    waiting.start()
    with pool.admin() as admin:
        drained = admin.call("POST", "/api/v1/pilots/actions",
                             json={"action": "drain", "pilots": [pilot.id]})  # fmt: skip
    assert drained[0]["action"] == "drain"
    waiting.join(timeout=120)
    assert isinstance(held["answer"], httpx.Response), held["answer"]
    assert held["answer"].status_code == 200
    assert held["answer"].json()["drain"] is True and held["answer"].json()["claim"] is None

    # Served without FastAPI's routing or not, each call is timed under its route.
    metrics = clients(pool, pool.token("watcher", "admin")).get("/metrics")
    assert metrics.status_code == 200, metrics.text
    for route, status in (("claims", 200), ("results", 200), ("results", 422)):
        series = (
            f'pilotage_api_request_duration_seconds_count{{method="POST",'
            f'route="/pilot/v1/pilots/{{pilot_id}}/{route}",status="{status}"}}'
        )
        assert series in metrics.text, series
