"""What the server records of renewals and refused identities, on SQLite and PostgreSQL.

A pilot holding a claim on one of Alice's two jobs fetches the job's credential and renews
it; the audit says ``release`` then ``renew``. Alice's re-delegation of another identity
is refused and noted in the running job's history only; after she destroys her
credential and delegates the other identity, the renewal is refused too, each attempt
audited, the history noted once for the claim. The notes change no state, and the job's
user log leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from credentials.x509_pool import ProtocolPilot, X509Pool, error_of
from pilotage.credentials.x509_testing import make_pki
from pilotage.queue import eventlog
from pilotage.testing import Pool

ALICE = "/O=Example/CN=Alice"


@pytest.fixture
def x509_pool(
    tmp_path: Path, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> X509Pool:
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
    return X509Pool(make_pool(), pki)


def _events(x509_pool: X509Pool, job: str) -> list[dict[str, Any]]:
    with x509_pool.https(x509_pool.pool.token("alice", "user")) as alice:
        answer = alice.get(f"/api/v1/jobs/{job}/events")
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def _notes(x509_pool: X509Pool, job: str) -> list[dict[str, Any]]:
    return [e for e in _events(x509_pool, job) if e["trigger"] == "identity_refused"]


def test_renewals_are_audited_and_refused_identities_noted(x509_pool: X509Pool) -> None:
    pool = x509_pool.pool
    bob = x509_pool.pki.ca.issue_user("CN=Bob,O=Example")
    with x509_pool.https(pool.token("alice", "user")) as alice:
        chain, key = x509_pool.proxy(lifetime_s=3 * 3600)
        assert x509_pool.delegate(alice, chain, key, lifetime_s=2 * 3600).status_code == 200
        for _ in range(2):
            assert x509_pool.submit(alice, ALICE, walltime_s=600).status_code == 201
    with x509_pool.https(pool.token("pilot-a", "pilot")) as http:
        pilot = ProtocolPilot(http, "a")
        claim = pilot.claim()
        first, _ = pilot.fetch(claim, pilot.key(claim).json()["key"])
        assert first.status_code == 200, first.text
        renewed, _ = pilot.fetch(claim, first.json()["renewal_key"])
        assert renewed.status_code == 200, renewed.text
        renewal_key = renewed.json()["renewal_key"]
        job = next(r["job_id"] for r in x509_pool.audit() if r["claim_id"] == claim)
        with x509_pool.https(pool.token("alice", "user")) as alice:
            waiting = [j["id"] for j in alice.get("/api/v1/jobs").json() if j["id"] != job]

            # Another identity by re-delegation: refused, the stored one kept, the running
            # job told (the idle one has no claim to tell).
            refused = x509_pool.delegate(alice, *x509_pool.proxy(bob))
            assert error_of(refused)[:2] == (409, "IdentityChanged")
            assert alice.get("/api/v1/credential").json()["identity"] == ALICE
            (note,) = _notes(x509_pool, job)
            assert (note["from"], note["to"], note["actor"]) == ("RUNNING", "RUNNING", "alice")
            assert "/O=Example/CN=Bob" in note["reason"] and "keeps its own" in note["reason"]
            assert _notes(x509_pool, waiting[0]) == []

            # Another identity at renewal: refused at each attempt (the key is not spent),
            # noted once for the claim.
            assert alice.delete("/api/v1/credential").status_code == 204
            assert x509_pool.delegate(alice, *x509_pool.proxy(bob)).status_code == 200
        for _ in range(2):
            assert error_of(pilot.fetch(claim, renewal_key)[0])[:2] == (409, "IdentityChanged")
        notes = _notes(x509_pool, job)
        assert len(notes) == 2 and "submitted for /O=Example/CN=Alice" in notes[1]["reason"]
        assert notes[1]["actor"] == f"pilot:{pilot.id}"

    on_claim = [(r["event"], r["outcome"]) for r in x509_pool.audit() if r["claim_id"] == claim]
    assert on_claim == [
        ("key", "granted"),
        ("release", "granted"),
        ("renew", "granted"),
        ("renew", "refused"),
        ("renew", "refused"),
    ]
    with x509_pool.https(pool.token("alice", "user")) as alice:
        (view,) = [j for j in alice.get("/api/v1/jobs").json() if j["id"] == job]
    assert view["state"] == "RUNNING"
    # The user log shows the job's changes of state only.
    logged = eventlog.events_of(view, _events(x509_pool, job), submit_host="submit.example")
    assert [e.number for e in logged] == [0, 1]
