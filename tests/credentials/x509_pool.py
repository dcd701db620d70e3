"""A real pool that trusts a throwaway CA, and callers that speak its credential API.

The pool is the real server process (:class:`pilotage.testing.Pool`) started with
``PILOTAGE_X509_CA_DIR`` naming the trust directory of a CA made by
:func:`pilotage.credentials.x509_testing.make_pki`. The helpers do what ``pilotage
login``, ``pilotage delegate`` and an agent do, call by call, so each test can stop
after any step and look at the answer.
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotage.credentials.ca import IssuedCredential
from pilotage.credentials.login import login_message, sign_login
from pilotage.credentials.proxy import make_proxy, make_proxy_request, sign_proxy_request
from pilotage.credentials.x509_testing import Pki
from pilotage.testing import Pool
from pilotage.x509.certificate import CredentialKey

FREE = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}
Chain = list[x509.Certificate]


def pem(chain: Chain) -> str:
    """Certificates only, leaf first."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain).decode()


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """Status, error class and message of a refusal."""
    body = response.json()
    return response.status_code, body["error"], body["message"]


@dataclass
class X509Pool:
    """A running pool, the CA it trusts, and the CA's user Alice."""

    pool: Pool
    pki: Pki

    def https(self, token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(
            base_url=self.pool.url,
            verify=ssl.create_default_context(cafile=self.pool.state.ca_cert),
            headers=headers,
            timeout=30,
        )

    def proxy(
        self, user: IssuedCredential | None = None, *, lifetime_s: int = 3600, limited: bool = False
    ) -> tuple[Chain, CredentialKey]:
        """A proxy of ``user`` (Alice by default): its chain (leaf first) and key."""
        user = user or self.pki.user
        cert, key = make_proxy(user.cert, user.key, lifetime_s=lifetime_s, limited=limited)
        return [cert, user.cert], key

    def login(
        self, http: httpx.Client, chain: Chain, key: CredentialKey, role: str = "user"
    ) -> httpx.Response:
        nonce = http.post("/api/v1/login/nonce").json()
        signature = sign_login(key, login_message(nonce["nonce"], nonce["audience"]))
        return http.post(
            "/api/v1/login/x509",
            json={
                "nonce": nonce["nonce"],
                "chain_pem": pem(chain),
                "signature": base64.b64encode(signature).decode(),
                "role": role,
            },
        )

    def delegate(
        self, http: httpx.Client, chain: Chain, key: CredentialKey, lifetime_s: int = 3600
    ) -> httpx.Response:
        """Both steps of a delegation, the client signing with ``chain``'s key."""
        pending = http.post("/api/v1/delegations")
        assert pending.status_code == 201, pending.text
        csr = x509.load_pem_x509_csr(pending.json()["csr_pem"].encode())
        cert = sign_proxy_request(csr, chain[0], key, chain[1:], lifetime_s=lifetime_s)
        return http.put(
            f"/api/v1/delegations/{pending.json()['delegation_id']}",
            json={"chain_pem": pem([cert, *chain])},
        )

    def submit(
        self, http: httpx.Client, identity: str | None, walltime_s: int | None = None
    ) -> httpx.Response:
        """Open a cluster and commit one instant job naming ``identity``."""
        cluster = http.post("/api/v1/clusters").json()["cluster_id"]
        job: dict[str, Any] = {
            "executable": "/bin/true",
            "transfer_executable": False,
            "iwd": "/tmp",
            "x509_identity": identity,
            "max_walltime_s": walltime_s,
        }
        return http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})

    def audit(self) -> list[dict[str, Any]]:
        """The audit file's records, oldest first."""
        path = self.pool.state.credential_audit_log
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def user_proxy_file(self, path: Path, *, lifetime_s: int) -> Path:
        """Write a proxy of Alice as ``pilotage proxy init`` would (0600)."""
        from pilotage.credentials.proxy import write_proxy_file

        chain, key = self.proxy(lifetime_s=lifetime_s)
        return write_proxy_file(path, chain[0], key, chain[1:])


class ProtocolPilot:
    """A registered pilot, driven call by call with a pilot token."""

    def __init__(self, http: httpx.Client, name: str) -> None:
        self.http = http
        body = {
            "v": 1,
            "name": name,
            "site": "test-site",
            "host": "wn.example.org",
            "lifetime_s": 3600,
            **FREE,
        }
        answer = http.post("/pilot/v1/pilots", json=body)
        assert answer.status_code == 201, answer.text
        self.id: str = answer.json()["pilot_id"]
        # Per call, not on the client: tests share one client among several pilots.
        self.headers = {"X-Pilotage-Pilot-Secret": answer.json()["pilot_secret"]}

    def claim(self) -> str:
        answer = self.http.post(
            f"/pilot/v1/pilots/{self.id}/claims",
            json={"v": 1, "free": FREE, "time_left_s": 3000},
            headers=self.headers,
        )
        assert answer.status_code == 200, answer.text
        claim = answer.json()["claim"]
        assert claim is not None, "no job was given"
        return str(claim["claim_id"])

    def finish(self, claim_id: str) -> None:
        answer = self.http.post(
            f"/pilot/v1/claims/{claim_id}/result",
            json={"v": 1, "exit_code": 0, "wall_s": 0.1},
            headers=self.headers,
        )
        assert answer.status_code == 200, answer.text

    def key(self, claim_id: str) -> httpx.Response:
        return self.http.post(f"/pilot/v1/claims/{claim_id}/credential-key", headers=self.headers)

    def fetch(self, claim_id: str, key: str) -> tuple[httpx.Response, CredentialKey]:
        """Ask for the job's credential with a fresh key pair; return the answer and key."""
        csr, private = make_proxy_request()
        answer = self.http.post(
            f"/pilot/v1/claims/{claim_id}/credential",
            json={
                "v": 1,
                "key": key,
                "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode(),
            },
            headers=self.headers,
        )
        return answer, private
