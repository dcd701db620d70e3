"""Listing the queue against a real server: pages with a cursor, streams, per-batch counts,
and ``pilotage q`` over them; on SQLite and PostgreSQL.

A user sees only their own jobs through every page, whatever cursor they pass; a bad
cursor or page size is refused with a sentence naming it; the streamed forms (a JSON
array, NDJSON) hold what the pages hold, each job as the reference view writes it.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pilotage.testing import Pool

NDJSON = {"Accept": "application/x-ndjson"}


def _http(pool: Pool, who: str, role: str = "user") -> httpx.Client:
    return httpx.Client(
        base_url=pool.url,
        verify=ssl.create_default_context(cafile=str(pool.state.ca_cert)),
        headers={"Authorization": f"Bearer {pool.token(who, role)}"},
        timeout=60,
    )


def _submit(http: httpx.Client, count: int, **fields: Any) -> int:
    spec = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp", **fields}
    cluster = http.post("/api/v1/clusters").json()["cluster_id"]
    answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [spec] * count})
    assert answer.status_code == 201, answer.text
    return int(cluster)


def _pages(http: httpx.Client, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    answer = http.get("/api/v1/jobs", params=params)
    while True:
        assert answer.status_code == 200, answer.text
        yield answer.json()
        following = answer.links.get("next")
        if following is None:
            return
        answer = http.get(following["url"])


def _refused(answer: httpx.Response) -> tuple[int, str]:
    body = answer.json()
    return answer.status_code, str(body["message"])


@pytest.fixture
def queue(pool: Pool) -> Iterator[dict[str, httpx.Client]]:
    """alice: clusters 1 (5 jobs, batch 'nightly'; 1.1 held, 1.4 removed) and 2 (3 jobs);
    bob: cluster 3 (4 jobs, batch 'nightly' too); an admin."""
    clients = {"alice": _http(pool, "alice"), "bob": _http(pool, "bob")}
    clients["admin"] = _http(pool, "root", "admin")
    alice = clients["alice"]
    _submit(alice, 5, batch_name="nightly", arguments=['a "quoted" word', "été"])
    _submit(alice, 3, transfer_output_remaps={"out.txt": "results/out.txt"})
    _submit(clients["bob"], 4, batch_name="nightly")
    for action, job in (("hold", "1.1"), ("remove", "1.4")):
        body = {"action": action, "ids": [job], "reason": "checking the listing"}
        assert alice.post("/api/v1/jobs/actions", json=body).status_code == 200
    yield clients
    for client in clients.values():
        client.close()


def test_pages_and_streams_show_each_caller_their_jobs(queue: dict[str, httpx.Client]) -> None:
    alice, bob, admin = queue["alice"], queue["bob"], queue["admin"]
    queued = {"finished": "false"}
    whole = alice.get("/api/v1/jobs", params=queued).json()
    assert [j["id"] for j in whole] == ["1.0", "1.1", "1.2", "1.3", "2.0", "2.1", "2.2"]
    pages = list(_pages(alice, {**queued, "limit": 3}))
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [j for p in pages for j in p] == whole
    # A NDJSON stream holds the same jobs, and each is the reference view (that of the
    # ad listing, which reads every row whole) whatever its state.
    with alice.stream("GET", "/api/v1/jobs", params=queued, headers=NDJSON) as answer:
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    assert lines == whole
    ads = alice.get("/api/v1/jobads").json()
    assert [{k: v for k, v in job.items() if k != "ad"} for job in ads] == whole
    held = next(j for j in whole if j["id"] == "1.1")
    assert (held["state"], held["hold_subcode"]) == ("HELD", 0)
    assert whole[0]["arguments"] == ['a "quoted" word', "été"]
    assert whole[4]["transfer_output_remaps"] == {"out.txt": "results/out.txt"}

    # Whatever cursor a user passes, the pages hold their own jobs only.
    for cursor in ("0.0", "2.2", "3.0", "999.0"):
        after = alice.get("/api/v1/jobs", params={"cursor": cursor}).json()
        assert {j["owner"] for j in after} <= {"alice"}, cursor
    assert [j["id"] for j in bob.get("/api/v1/jobs", params={"cursor": "1.0"}).json()] == [
        "3.0", "3.1", "3.2", "3.3",
    ]  # fmt: skip
    every = [j for p in _pages(admin, {"limit": 5}) for j in p]
    assert [j["owner"] for j in every] == ["alice"] * 8 + ["bob"] * 4  # history too
    assert _refused(bob.get("/api/v1/jobs", params={"owner": "alice"})) == (
        403, "bob may not list the jobs of alice",
    )  # fmt: skip
    assert _refused(bob.get("/api/v1/jobs", params={"id": "1"}))[0] == 403
    for cursor in ("abc", "1", "1.2.3", "-1.0", "", "1.0 ", "1" * 19 + ".0"):
        status, message = _refused(alice.get("/api/v1/jobs", params={"cursor": cursor}))
        assert status == 400, cursor
        assert "is not one a page gave" in message and "next cursor" in message
    for limit in ("0", "10001", "many"):
        status, message = _refused(alice.get("/api/v1/jobs", params={"limit": limit}))
        assert status == 422 and "limit" in message, (limit, message)
    assert _refused(alice.get("/api/v1/jobs", params={"id": "99"})) == (
        404, "job 99 does not exist",
    )  # fmt: skip


def test_batches_counted_and_q(pool: Pool, queue: dict[str, httpx.Client]) -> None:
    mine = queue["alice"].get("/api/v1/batches").json()
    assert mine["counts"] == {"IDLE": 6, "RUNNING": 0, "HELD": 1}
    nightly, second = mine["batches"]
    assert nightly | {"submitted": 0} == {
        "owner": "alice", "name": "nightly", "submitted": 0, "clusters": 1,
        "first": "1.0", "last": "1.3", "done": 1, "running": 0, "idle": 3, "held": 1,
        "total": 5,
    }  # fmt: skip
    assert (second["name"], second["first"], second["last"], second["total"]) == (
        None, "2.0", "2.2", 3,
    )  # fmt: skip
    assert [b["owner"] for b in queue["bob"].get("/api/v1/batches").json()["batches"]] == ["bob"]
    every = queue["admin"].get("/api/v1/batches").json()["batches"]
    assert [(b["owner"], b["name"]) for b in every] == [
        ("alice", "nightly"), ("alice", None), ("bob", "nightly"),
    ]  # fmt: skip
    assert _refused(queue["bob"].get("/api/v1/batches", params={"owner": "alice"}))[0] == 403

    table = pool.cli("q")  # as root: an admin, over the Unix socket
    assert table.returncode == 0, table.stderr
    assert "nightly" in table.stdout and "1.0-3" in table.stdout and "ID: 2" in table.stdout
    assert "11 jobs: 1 held, 10 idle" in table.stdout
    lines = pool.cli("q", "-nobatch").stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "OWNER", "SUBMITTED", "STATE"]
    assert [line.split()[0] for line in lines[1:-1]] == [
        "1.0", "1.1", "1.2", "1.3", "2.0", "2.1", "2.2", "3.0", "3.1", "3.2", "3.3",
    ]  # fmt: skip
    assert "checking the listing" in lines[2]  # a held job shows why
    streamed = pool.cli("q", "--json", "alice")
    assert streamed.returncode == 0, streamed.stderr
    assert (
        json.loads(streamed.stdout)
        == queue["alice"].get("/api/v1/jobs", params={"finished": "false"}).json()
    )
    assert json.loads(pool.cli("q", "--json", "nobody").stdout) == []
