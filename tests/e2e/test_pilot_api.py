"""The server's side of the pilot protocol, spoken over HTTPS with pilot tokens as an agent
does: a pilot acts only for itself, a lapsed claim is dead for good, and a job is never
given to two pilots at once."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable

import httpx
from e2e_callers import FREE, ProtocolPilot, refusal, snapshot, submit_api

from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]
#: When a pilot was last heard from: the one thing its own calls may change.
LIVENESS = ("pilots.last_seen_at",)


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _events(pool: Pool, job_id: str) -> list[str]:
    with pool.admin() as admin:
        return [e["trigger"] for e in admin.call("GET", f"/api/v1/jobs/{job_id}/events")]


def _job(pool: Pool, job_id: str) -> dict[str, object]:
    with pool.admin() as admin:
        (job,) = admin.call("GET", "/api/v1/jobs", params={"id": job_id})
    return dict(job)


def test_a_pilot_cannot_act_for_another_identitys_pilot_or_claim(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    # No lease runs out, and no silent pilot is declared lost, while the test looks.
    pool = make_pool(lease_s="3600")
    inputs = _tar({"in.txt": b"input\n"})
    with pool.admin() as admin:
        digest = admin.upload("/api/v1/sandboxes", io.BytesIO(inputs))["digest"]
        submit_api(admin, 1, input_sandbox=digest)
    site_a = ProtocolPilot(clients(pool, pool.token("site-a", "pilot")), "a")
    site_b = ProtocolPilot(clients(pool, pool.token("site-b", "pilot")), "b")
    claim = site_a.ask()
    assert claim is not None and claim["has_input_sandbox"]
    claim_id = claim["claim_id"]
    before = snapshot(pool)
    before_but_liveness = snapshot(pool, volatile=LIVENESS)

    not_yours = f"pilot {site_a.id} was registered by another identity"
    b = site_b.http
    for answer in (
        b.post(f"/pilot/v1/pilots/{site_a.id}/heartbeat", json={"v": 1, "claims": [claim_id]}),
        b.post(
            f"/pilot/v1/pilots/{site_a.id}/claims",
            json={"v": 1, "free": FREE, "time_left_s": 100},
        ),
        b.post(f"/pilot/v1/pilots/{site_a.id}/exit", json={"v": 1, "reason": "hijack"}),
        site_b.report(claim_id, exit_code=0),
        site_b.fetch_input(claim_id),
        site_b.upload_output(claim_id, _tar({"out.txt": b"forged\n"})),
    ):
        assert refusal(answer) == (403, not_yours), answer.request.url
    assert refusal(site_b.report("c-unknown")) == (404, "claim c-unknown does not exist")
    assert refusal(site_b.fetch_input("c-unknown"))[0] == 404
    unknown = b.post("/pilot/v1/pilots/p-unknown/heartbeat", json={"v": 1, "claims": []})
    assert refusal(unknown) == (404, "pilot p-unknown is not registered")
    assert snapshot(pool) == before

    # Naming A's claim in B's own heartbeat renews nothing and tells B it is not its own.
    answer = site_b.heartbeat(claim_id)
    assert answer.status_code == 200
    assert answer.json()["renewed"] == {}
    revoked = [{"claim_id": claim_id, "reason": "held by another pilot", "delay_s": 0.0}]
    assert answer.json()["revoked"] == revoked
    assert snapshot(pool, volatile=LIVENESS) == before_but_liveness

    # A itself is unaffected: it fetches its input, uploads, reports; a second report is late.
    fetched = site_a.fetch_input(claim_id)
    assert (fetched.status_code, fetched.content) == (200, inputs)
    assert site_a.upload_output(claim_id, _tar({"out.txt": b"real\n"})).status_code == 204
    assert site_a.report(claim_id, exit_code=3).status_code == 200
    job = _job(pool, "1.0")
    assert (job["state"], job["exit_code"], job["has_output"]) == ("COMPLETED", 3, True)
    done = snapshot(pool)
    again = site_a.report(claim_id, exit_code=0)
    assert refusal(again) == (409, f"claim {claim_id} is no longer live (exit)")
    assert snapshot(pool) == done
    assert _events(pool, "1.0") == ["submit", "claim", "exit"]


def test_a_report_after_the_lease_expired_is_refused_and_changes_nothing(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    # The lease runs out at once; the pilot is not declared lost (silent for 3 heartbeats)
    # while the test runs, however slowly: its refused calls must change nothing.
    pool = make_pool(lease_s="2", heartbeat_s="600")
    with pool.admin() as admin:
        submit_api(admin, 1)
    token = pool.token("pilots", "pilot")
    late = ProtocolPilot(clients(pool, token), "late")
    old = late.ask()
    assert old is not None
    # The pilot goes silent: the reaper ends the claim and the job is IDLE again.
    pool.wait_jobs(["1.0"], ("IDLE",), timeout=60)
    assert _events(pool, "1.0") == ["submit", "claim", "lease_expired"]
    before = snapshot(pool)
    gone = f"claim {old['claim_id']} is no longer live (lease_expired)"
    assert refusal(late.report(old["claim_id"])) == (409, gone)
    assert refusal(late.fetch_input(old["claim_id"])) == (409, gone)
    assert refusal(late.upload_output(old["claim_id"], _tar({"o": b"late"}))) == (409, gone)
    assert snapshot(pool) == before
    beat = late.heartbeat(old["claim_id"])
    assert beat.json()["renewed"] == {}
    revoked = [{"claim_id": old["claim_id"], "reason": "lease_expired", "delay_s": 0.0}]
    assert beat.json()["revoked"] == revoked

    # The job runs again under a new claim; the old claim still cannot touch it.
    fresh = ProtocolPilot(clients(pool, token), "fresh")
    new = fresh.ask()
    assert new is not None and new["job_id"] == "1.0" and new["claim_id"] != old["claim_id"]
    assert refusal(late.report(old["claim_id"], exit_code=9))[0] == 409
    # The new claim has the same 2 s lease: on a loaded machine it can lapse before the
    # checks below; the job is then IDLE again, and the new claim's report refused alike.
    twice = ["submit", "claim", "lease_expired", "claim", "lease_expired"]
    if _job(pool, "1.0")["state"] != "RUNNING":
        assert _job(pool, "1.0")["state"] == "IDLE" and _events(pool, "1.0")[:5] == twice
    done = fresh.report(new["claim_id"], exit_code=0)
    if done.status_code == 409:
        expired = f"claim {new['claim_id']} is no longer live (lease_expired)"
        assert refusal(done) == (409, expired)
        assert _events(pool, "1.0")[:5] == twice
        return
    assert done.status_code == 200, done.text
    job = _job(pool, "1.0")
    assert (job["state"], job["exit_code"], job["attempts"]) == ("COMPLETED", 0, 2)
    assert _events(pool, "1.0") == ["submit", "claim", "lease_expired", "claim", "exit"]


def test_a_job_is_given_to_one_pilot_of_many_asking_at_once(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    pool = make_pool(lease_s="3600")  # none of the pilots, silent in turn, is declared lost
    with pool.admin() as admin:
        submit_api(admin, 1)
    token = pool.token("pilots", "pilot")
    pilots = [ProtocolPilot(clients(pool, token), f"p{i}") for i in range(8)]
    start = threading.Barrier(len(pilots))
    given: dict[str, dict[str, object] | None] = {}

    def ask(pilot: ProtocolPilot) -> None:
        start.wait()
        given[pilot.id] = pilot.ask()

    threads = [threading.Thread(target=ask, args=(p,)) for p in pilots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [pid for pid, claim in given.items() if claim is not None]
    assert len(given) == 8 and len(winners) == 1, given
    assert all(p.ask() is None for p in pilots)  # asked again: still nobody else
    assert _job(pool, "1.0")["pilot"] == winners[0]
    assert _events(pool, "1.0") == ["submit", "claim"]
