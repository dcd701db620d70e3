"""Delegation into the store, and the submit-time lifetime check, against a real server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.pool import NullPool

from credentials.x509_pool import X509Pool, error_of, pem
from pilotage.credentials.proxy import make_proxy_request, sign_proxy_request
from pilotage.credentials.x509_testing import make_pki
from pilotage.store.tables import stored_credentials

ALICE = "/O=Example/CN=Alice"


def test_delegation_stores_refreshes_and_never_changes_identity(
    x509_pool: X509Pool, tmp_path: Path
) -> None:
    pool = x509_pool.pool
    chain, key = x509_pool.proxy(lifetime_s=4 * 3600)
    with x509_pool.https(pool.token("alice", "user")) as alice:
        stored = x509_pool.delegate(alice, chain, key, lifetime_s=3600)
        assert stored.status_code == 200, stored.text
        assert stored.json()["identity"] == ALICE and stored.json()["refreshed"] is False
        first_end = stored.json()["not_after"]
        refreshed = x509_pool.delegate(alice, chain, key, lifetime_s=2 * 3600)
        assert refreshed.json()["refreshed"] is True
        assert refreshed.json()["not_after"] > first_end + 3000

        # Another identity: refused, audited, and the stored credential is untouched.
        bob = x509_pool.pki.ca.issue_user("CN=Bob,O=Example")
        bob_chain, bob_key = x509_pool.proxy(bob)
        status, kind, message = error_of(x509_pool.delegate(alice, bob_chain, bob_key))
        assert (status, kind) == (409, "IdentityChanged")
        assert "/O=Example/CN=Bob" in message and ALICE in message
        kept = alice.get("/api/v1/credential").json()
        assert (kept["identity"], kept["not_after"]) == (ALICE, refreshed.json()["not_after"])

        # A proxy for a key the server did not make; then the spent delegation again.
        pending = alice.post("/api/v1/delegations").json()
        own_csr, _ = make_proxy_request()
        wrong = sign_proxy_request(own_csr, chain[0], key, chain[1:])
        path = f"/api/v1/delegations/{pending['delegation_id']}"
        body = {"chain_pem": pem([wrong, *chain])}
        assert error_of(alice.put(path, json=body))[:2] == (422, "DelegationKeyMismatch")
        assert error_of(alice.put(path, json=body))[:2] == (404, "UnknownDelegation")

        # A chain from a CA the pool does not trust.
        stranger = make_pki(tmp_path / "other", ca_subject="CN=Rogue CA,O=Evil")
        status, kind, message = error_of(x509_pool.delegate(alice, *x509_pool.proxy(stranger.user)))
        assert (status, kind) == (401, "CredentialRefused") and "untrusted_issuer" in message

        # Another user cannot finish Alice's delegation.
        pending = alice.post("/api/v1/delegations").json()
        csr = x509.load_pem_x509_csr(pending["csr_pem"].encode())
        signed = sign_proxy_request(csr, chain[0], key, chain[1:])
        with x509_pool.https(pool.token("mallory", "user")) as mallory:
            taken = mallory.put(
                f"/api/v1/delegations/{pending['delegation_id']}",
                json={"chain_pem": pem([signed, *chain])},
            )
            assert error_of(taken)[:2] == (404, "UnknownDelegation")

    # At rest: certificates in PEM, the key sealed (no PEM key, no DER RSA key header).
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    with engine.connect() as conn:
        row = conn.execute(sa.select(stored_credentials)).one()
    engine.dispose()
    assert "PRIVATE KEY" not in row.chain_pem and b"PRIVATE KEY" not in row.key_sealed
    assert stat.S_IMODE(os.stat(pool.state.store_key).st_mode) == 0o600

    outcomes = [(r["event"], r["outcome"], r["caller"]) for r in x509_pool.audit()]
    assert outcomes[:2] == [("delegate", "granted", "alice")] * 2
    refusal = next(r for r in x509_pool.audit() if r["outcome"] == "refused")
    assert refusal["reason"].startswith("IdentityChanged:")


def test_submit_refuses_a_job_its_credential_would_not_outlive(x509_pool: X509Pool) -> None:
    pool = x509_pool.pool
    chain, key = x509_pool.proxy(lifetime_s=3 * 3600)
    with x509_pool.https(pool.token("alice", "user")) as alice:
        status, kind, message = error_of(x509_pool.submit(alice, ALICE, walltime_s=600))
        assert (status, kind) == (404, "NoStoredCredential")
        assert "run 'pilotage delegate --valid 01:20'" in message
        assert x509_pool.delegate(alice, chain, key, lifetime_s=2 * 3600).status_code == 200
        assert x509_pool.submit(alice, ALICE, walltime_s=600).status_code == 201
        assert x509_pool.submit(alice, None).status_code == 201  # no credential, no check
        # Walltime plus the one-hour margin beyond the two hours delegated.
        status, kind, message = error_of(x509_pool.submit(alice, ALICE, walltime_s=7200))
        assert (status, kind) == (409, "CredentialTooShort")
        assert "your delegated credential expires at" in message
        assert "walltime 7200 s plus a margin of 3600 s" in message
        assert "run 'pilotage delegate --valid 03:10'" in message
        # No walltime given: the default (a day).
        assert error_of(x509_pool.submit(alice, ALICE))[1] == "CredentialTooShort"
        status, kind, _ = error_of(x509_pool.submit(alice, "/O=Example/CN=Bob", walltime_s=60))
        assert (status, kind) == (409, "IdentityChanged")
        cluster = alice.post("/api/v1/clusters").json()["cluster_id"]
        job = {"executable": "/bin/true", "transfer_executable": False, "x509userproxy": "/p"}
        answer = alice.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})
        assert error_of(answer)[:2] == (422, "BadInput")


def test_the_cli_delegates_and_submits_with_x509userproxy(
    x509_pool: X509Pool, tmp_path: Path
) -> None:
    pool = x509_pool.pool
    proxy = x509_pool.user_proxy_file(tmp_path / "x509up", lifetime_s=3 * 3600)
    done = pool.cli("delegate", "--valid", "02:00", "--proxy", str(proxy))
    assert done.returncode == 0, done.stderr
    assert f"stored the credential of {ALICE} until" in done.stdout
    clipped = pool.cli("delegate", "--valid", "04:00", "--proxy", str(proxy))
    assert clipped.returncode == 0 and "refreshed" in clipped.stdout
    assert "clipped to the end of your proxy" in clipped.stderr

    def submit(duration: int) -> tuple[int, str]:
        description = tmp_path / f"job-{duration}.sub"
        description.write_text(
            "executable = /bin/true\ntransfer_executable = false\n"
            f"x509userproxy = {proxy.name}\nallowed_job_duration = {duration}\nqueue\n"
        )
        result = pool.cli("submit", str(description), cwd=tmp_path)
        return result.returncode, result.stdout + result.stderr

    assert submit(600)[0] == 0
    code, output = submit(86400)
    assert code == 6, output
    assert "expires at" in output and "pilotage delegate --valid 25:10" in output
    assert pool.cli("delegate", "--destroy").returncode == 0
    code, output = submit(600)
    assert code == 3 and "no delegated X.509 credential" in output
    missing = tmp_path / "job-missing.sub"
    missing.write_text("executable = /bin/true\nx509userproxy = /nonexistent/x509up\nqueue\n")
    refused = pool.cli("submit", str(missing), cwd=tmp_path)
    assert refused.returncode == 3 and "pilotage proxy init" in refused.stderr
