"""Releasing a job's credential to pilots, against a real server: who gets what, and the audit.

Pilot A holds a claim on one of Alice's jobs, pilot B on another. Each test walks one
pool through the attempts an honest pilot, a compromised pilot, a user and a thief make,
and checks the answer of each and that each left an audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.pool import NullPool

from credentials.x509_pool import ProtocolPilot, X509Pool, error_of
from pilotage.credentials.proxy import make_proxy_request
from pilotage.store.tables import credential_audit
from pilotage.x509.chain import validate_chain

ALICE = "/O=Example/CN=Alice"


def _alice_jobs(x509_pool: X509Pool, count: int) -> None:
    """Alice delegates a two-hour credential and submits ``count`` jobs for it."""
    pool = x509_pool.pool
    chain, key = x509_pool.proxy(lifetime_s=3 * 3600)
    with x509_pool.https(pool.token("alice", "user")) as alice:
        assert x509_pool.delegate(alice, chain, key, lifetime_s=2 * 3600).status_code == 200
        for _ in range(count):
            assert x509_pool.submit(alice, ALICE, walltime_s=600).status_code == 201


def _audit_table(x509_pool: X509Pool) -> list[Any]:
    engine = sa.create_engine(x509_pool.pool.db_url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(credential_audit).order_by(credential_audit.c.id)).all()
    engine.dispose()
    return list(rows)


def test_only_the_claims_pilot_gets_the_credential_once_per_key(x509_pool: X509Pool) -> None:
    pool = x509_pool.pool
    _alice_jobs(x509_pool, 2)
    with (
        x509_pool.https(pool.token("pilot-a", "pilot")) as http_a,
        x509_pool.https(pool.token("pilot-b", "pilot")) as http_b,
    ):
        pilot_a, pilot_b = ProtocolPilot(http_a, "a"), ProtocolPilot(http_b, "b")
        claim_a, claim_b = pilot_a.claim(), pilot_b.claim()

        # The claim's own pilot gets key 0, once; with it, a limited proxy of Alice.
        first = pilot_a.key(claim_a)
        assert first.status_code == 201, first.text
        assert error_of(pilot_a.key(claim_a))[:2] == (409, "RetrievalKeyAlreadyIssued")
        released, private = pilot_a.fetch(claim_a, first.json()["key"])
        assert released.status_code == 200, released.text
        body = released.json()
        chain = x509.load_pem_x509_certificates(body["chain_pem"].encode())
        checked = validate_chain(chain, x509_pool.pki.trust, key=private)
        assert (checked.identity_dn, checked.limited, body["limited"]) == (ALICE, True, True)
        assert body["not_after"] <= time.time() + 3600 + 5

        # One-time keys: the used one, a made-up one, and another claim's are all refused.
        used = pilot_a.fetch(claim_a, first.json()["key"])[0]
        assert error_of(used)[:2] == (403, "RetrievalKeyUsed")
        assert error_of(pilot_a.fetch(claim_a, "x" * 43)[0])[:2] == (403, "WrongRetrievalKey")
        key_b = pilot_b.key(claim_b).json()["key"]
        assert error_of(pilot_a.fetch(claim_a, key_b)[0])[:2] == (403, "WrongRetrievalKey")

        # Renewal: the key that came with the proxy fetches the next one.
        renewed, _ = pilot_a.fetch(claim_a, body["renewal_key"])
        assert renewed.status_code == 200, renewed.text
        renewal_key = renewed.json()["renewal_key"]

        # Pilot B cannot obtain what pilot A holds, with any key.
        for attempt in (pilot_b.key(claim_a), pilot_b.fetch(claim_a, renewal_key)[0]):
            assert error_of(attempt)[:2] == (403, "ClaimNotHeld")

    # Nothing without the pilot role: Alice herself, and no token at all.
    with x509_pool.https(pool.token("alice", "user")) as alice:
        path = f"/pilot/v1/claims/{claim_a}/credential"
        stolen = alice.post(path, json={"v": 1, "key": renewal_key, "csr_pem": "x"})
        assert stolen.status_code == 403
        assert alice.post(f"/pilot/v1/claims/{claim_a}/credential-key").status_code == 403
    with x509_pool.https(None) as anonymous:
        assert anonymous.post(f"/pilot/v1/claims/{claim_a}/credential-key").status_code == 401

    # The claim ends: its live key dies with it.
    with x509_pool.https(pool.token("pilot-a", "pilot")) as http_a:
        pilot_a.http = http_a
        pilot_a.finish(claim_a)
        assert error_of(pilot_a.fetch(claim_a, renewal_key)[0])[:2] == (409, "ClaimEnded")

    records = x509_pool.audit()
    on_a = [(r["event"], r["outcome"], r["caller"]) for r in records if r["claim_id"] == claim_a]
    assert on_a == [
        ("key", "granted", "pilot-a"),
        ("key", "refused", "pilot-a"),
        ("release", "granted", "pilot-a"),
        ("release", "refused", "pilot-a"),
        ("release", "refused", "pilot-a"),
        ("release", "refused", "pilot-a"),
        ("renew", "granted", "pilot-a"),
        ("key", "refused", "pilot-b"),
        ("renew", "refused", "pilot-b"),
        ("renew", "refused", "alice"),
        ("key", "refused", "alice"),
        ("key", "refused", "(unauthenticated)"),
        ("renew", "refused", "pilot-a"),
    ]
    assert all(r["job_id"] and r["identity"] == ALICE for r in records if r["claim_id"] == claim_a)
    reasons = [r["reason"].split(":")[0] for r in records if r["outcome"] == "refused"]
    assert {"ClaimNotHeld", "Denied", "Unauthenticated", "ClaimEnded"} <= set(reasons)
    assert len(_audit_table(x509_pool)) == len(records)


def test_a_retrieval_key_expires(make_x509_pool: Callable[..., X509Pool]) -> None:
    # A one-second key, used only after more than a second: expired whatever the load.
    x509_pool = make_x509_pool(PILOTAGE_CREDENTIALS_RETRIEVAL_KEY_TTL_S="1")
    _alice_jobs(x509_pool, 1)
    with x509_pool.https(x509_pool.pool.token("pilot-a", "pilot")) as http:
        pilot = ProtocolPilot(http, "a0")
        claim = pilot.claim()
        stale = pilot.key(claim).json()["key"]
        time.sleep(1.5)
        assert error_of(pilot.fetch(claim, stale)[0])[:2] == (403, "RetrievalKeyExpired")


def test_release_settings_and_a_changed_identity(
    make_x509_pool: Callable[..., X509Pool],
) -> None:
    x509_pool = make_x509_pool(
        PILOTAGE_CREDENTIALS_RELEASE_LIMITED="false",
        PILOTAGE_CREDENTIALS_RELEASE_LIFETIME_S=str(5 * 3600),
    )
    pool = x509_pool.pool
    _alice_jobs(x509_pool, 3)
    with x509_pool.https(pool.token("pilot-a", "pilot")) as http:
        # One single-cpu pilot per job, all under the token of pilot-a; each acts on its
        # own claim (its secret tells them apart).
        pilots = [ProtocolPilot(http, f"a{i}") for i in (0, 1, 2)]
        claims = [p.claim() for p in pilots]

        # A weak key in the CSR is bad input, and the refusal does not spend the key.
        pilot = pilots[1]
        key = pilot.key(claims[1]).json()["key"]
        weak, _ = make_proxy_request(key_bits=1024)
        weak_pem = weak.public_bytes(serialization.Encoding.PEM).decode()
        answer = http.post(
            f"/pilot/v1/claims/{claims[1]}/credential",
            json={"v": 1, "key": key, "csr_pem": weak_pem},
            headers=pilot.headers,
        )
        assert error_of(answer)[:2] == (422, "BadInput")

        # Full proxies when configured, and never beyond the stored credential's end.
        released, _ = pilot.fetch(claims[1], key)
        assert released.status_code == 200, released.text
        with x509_pool.https(pool.token("alice", "user")) as alice:
            stored_end = alice.get("/api/v1/credential").json()["not_after"]
            assert released.json()["limited"] is False
            assert abs(released.json()["not_after"] - stored_end) < 1

            # Alice destroys her credential and delegates Bob's: her job gets neither.
            pilot = pilots[2]
            key = pilot.key(claims[2]).json()["key"]
            assert alice.delete("/api/v1/credential").status_code == 204
            assert error_of(pilot.fetch(claims[2], key)[0])[:2] == (404, "NoStoredCredential")
            bob = x509_pool.pki.ca.issue_user("CN=Bob,O=Example")
            assert x509_pool.delegate(alice, *x509_pool.proxy(bob)).status_code == 200
        status, kind, message = error_of(pilot.fetch(claims[2], key)[0])
        assert (status, kind) == (409, "IdentityChanged") and "/O=Example/CN=Bob" in message

        # A job submitted without a credential has no key to give.
        with x509_pool.https(pool.token("carol", "user")) as carol:
            assert x509_pool.submit(carol, None).status_code == 201
        pilot = ProtocolPilot(http, "a3")
        plain = pilot.claim()
        assert error_of(pilot.key(plain))[:2] == (409, "JobWithoutCredential")
