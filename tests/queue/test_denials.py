"""A site's denial of a job's owner (switch 203, ``refusal: "denied"`` on vacate) against a
real pool on SQLite and PostgreSQL (issue 10; seed 000 §4.7):

- the job is IDLE again, no attempt counted, its ad lists the pilot's site in
  ``ExcludedSites`` and its Requirements exclude that site, so no pilot of that site gets
  it back (no try-and-fail loop) while a pilot of another site does;
- the site is the pilot's registered one, whatever the denial says;
- denied at ``max_denials`` sites, or where no live pilot of another site is left, it is
  HELD (code 14) with every site's denial in its reason;
- a denial of an ended claim changes nothing; a bad refusal word is refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pilotage.api.wire import PILOT_SECRET_HEADER
from pilotage.testing import Pool

FREE = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}
WORK = {"v": 1, "free": FREE, "time_left_s": 3000}
BANNED = "pilotage-exec refused (203): Authorization denied: The DN '/O=Example/CN=A' is banned."


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    return make_pool(lease_s="300", max_denials="2")


@pytest.fixture
def https(pool: Pool) -> Iterator[Callable[[str], httpx.Client]]:
    opened: list[httpx.Client] = []

    def open_client(token: str) -> httpx.Client:
        tls = ssl.create_default_context(cafile=pool.state.ca_cert)
        client = httpx.Client(
            base_url=pool.url, verify=tls, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


class Pilot:
    """A registered pilot of one site, call by call, with its own secret."""

    def __init__(self, http: httpx.Client, name: str, site: str) -> None:
        self.http = http
        body = {
            "v": 1, "name": name, "site": site, "host": f"{name}.example.org",
            "lifetime_s": 3600, "attrs": {}, **FREE,
        }  # fmt: skip
        answer = http.post("/pilot/v1/pilots", json=body)
        assert answer.status_code == 201, answer.text
        self.id: str = answer.json()["pilot_id"]
        self.secret: str = answer.json()["pilot_secret"]

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(path, json=body, headers={PILOT_SECRET_HEADER: self.secret})

    def claim(self) -> dict[str, Any] | None:
        answer = self.post(f"/pilot/v1/pilots/{self.id}/claims", WORK)
        assert answer.status_code == 200, answer.text
        claim: dict[str, Any] | None = answer.json()["claim"]
        return claim

    def deny(self, claim_id: str, reason: str = BANNED, **more: Any) -> httpx.Response:
        body = {"v": 1, "reason": reason, "refusal": "denied", **more}
        return self.post(f"/pilot/v1/claims/{claim_id}/vacate", body)


def submit(http: httpx.Client) -> str:
    cluster = http.post("/api/v1/clusters").json()["cluster_id"]
    job = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
    answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})
    assert answer.status_code == 201, answer.text
    return f"{cluster}.0"


def job_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = http.get("/api/v1/jobs", params={"id": job_id})
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()[0]
    return view


def analysis(http: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = http.get(f"/api/v1/jobs/{job_id}/analysis")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_denied_job_goes_to_another_site_and_never_back_to_the_denying_one(
    pool: Pool, https: Callable[[str], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    job = submit(alice)
    token = pool.token("pilots", "pilot")
    at_a, again_a = Pilot(https(token), "a1", "site-a"), Pilot(https(token), "a2", "site-a")
    at_b = Pilot(https(token), "b1", "site-b")  # another site is left
    claim = at_a.claim()
    assert claim is not None and claim["job_id"] == job

    answer = at_a.deny(claim["claim_id"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["job_state"] == "IDLE"
    view = job_of(alice, job)
    assert (view["state"], view["attempts"]) == ("IDLE", 0)
    # Neither the denying pilot nor another pilot of its site gets it again (no exclusion
    # was asked: the site's clause alone keeps it away).
    assert at_a.claim() is None
    assert again_a.claim() is None
    details = " ".join(analysis(alice, job)["details"])
    assert "ExcludedSites = site-a" in details, details

    taken = at_b.claim()
    assert taken is not None and taken["job_id"] == job
    done = at_b.post(
        f"/pilot/v1/claims/{taken['claim_id']}/result",
        {"v": 1, "exit_code": 0, "wall_s": 1.0, "cpu_s": 0.1, "max_rss_kb": 1},
    )
    assert done.status_code == 200, done.text
    assert job_of(alice, job)["state"] == "COMPLETED"


def test_denied_at_max_denials_sites_the_job_is_held_with_every_denial(
    pool: Pool, https: Callable[[str], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    job = submit(alice)
    token = pool.token("pilots", "pilot")
    at_a, at_b = Pilot(https(token), "a1", "site-a"), Pilot(https(token), "b1", "site-b")
    first = at_a.claim()
    assert first is not None
    assert at_a.deny(first["claim_id"], "denied at a: banned").json()["job_state"] == "IDLE"
    second = at_b.claim()
    assert second is not None and second["job_id"] == job
    answer = at_b.deny(second["claim_id"], "denied at b: no mapping rule")
    assert answer.status_code == 200, answer.text
    assert answer.json()["job_state"] == "HELD"
    view = job_of(alice, job)
    assert (view["state"], view["hold_code"], view["attempts"]) == ("HELD", 14, 0)
    reason = view["hold_reason"]
    assert reason.startswith("2 site(s) denied it, the most allowed"), reason
    assert "site-a: denied at a: banned" in reason, reason
    assert "site-b: denied at b: no mapping rule" in reason, reason


def test_the_site_is_the_pilots_own_and_a_late_denial_changes_nothing(
    pool: Pool, https: Callable[[str], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    job = submit(alice)
    token = pool.token("pilots", "pilot")
    at_a, at_b = Pilot(https(token), "a1", "site-a"), Pilot(https(token), "b1", "site-b")
    claim = at_a.claim()
    assert claim is not None
    # A pilot cannot name another site to have it excluded.
    naming = at_a.deny(claim["claim_id"], site="site-b")
    assert naming.status_code == 422, naming.text
    assert "site" in naming.text
    assert at_a.deny(claim["claim_id"], "the site says no").json()["job_state"] == "IDLE"
    late = at_a.deny(claim["claim_id"])
    assert late.status_code == 409, late.text
    assert "no longer live" in late.json()["message"]
    bad = at_a.post(
        f"/pilot/v1/claims/{claim['claim_id']}/vacate",
        {"v": 1, "reason": "x", "refusal": "banned"},
    )
    assert bad.status_code == 422, bad.text
    assert "refusal" in bad.text
    view = job_of(alice, job)
    assert (view["state"], view["attempts"]) == ("IDLE", 0)
    # Site B still runs it: only the pilot's registered site was excluded.
    taken = at_b.claim()
    assert taken is not None and taken["job_id"] == job


def test_denied_where_no_other_site_is_left_the_job_is_held_at_once(
    pool: Pool, https: Callable[[str], httpx.Client]
) -> None:
    alice = https(pool.token("alice", "user"))
    job = submit(alice)
    token = pool.token("pilots", "pilot")
    at_a, again_a = Pilot(https(token), "a1", "site-a"), Pilot(https(token), "a2", "site-a")
    claim = again_a.claim()
    assert claim is not None and at_a.claim() is None
    assert again_a.deny(claim["claim_id"]).json()["job_state"] == "HELD"
    view = job_of(alice, job)
    assert (view["state"], view["hold_code"]) == ("HELD", 14)
    assert view["hold_reason"].startswith("no other site is left"), view["hold_reason"]
    assert f"site-a: {BANNED}" in view["hold_reason"]
