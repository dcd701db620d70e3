"""Finding 7 of the security review: one pilot token reached many users' credentials.

Each test replays one attack against a real pool (server process, TLS, SQLite and
PostgreSQL) and shows it refused, with nothing stored changed:

* (a) a second registration under the same token cannot act for the first pilot: not
  fetch its claim's input or credential key, not report or upload for its claim, not
  renew, ask for work or leave in its name;
* (b) a registration cannot pass for another entry, site or size than its token allows;
* (c) a job's credential is released only to the pilot that holds its claim, proving
  that pilot's secret, and every refusal is audited;
* (d) a user sees counts and their own usage in ``/slots`` and ``/userprio``, not pilot
  ids, hosts or other users; an admin sees everything.

See docs/security.md, "Pilot registrations".
"""

from __future__ import annotations

import io
import json
import ssl
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from credentials.x509_pool import X509Pool
from pilotage.api.wire import PILOT_SECRET_HEADER as SERVER_HEADER
from pilotage.credentials.x509_testing import Pki, make_pki
from pilotage.pilot.wire import PILOT_SECRET_HEADER as AGENT_HEADER
from pilotage.store.tables import claims, jobs, pilots
from pilotage.testing import Pool

ALICE = "/O=Example/CN=Alice"
FREE = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}
WORK = {"v": 1, "free": FREE, "time_left_s": 3000}


# --- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def x509_pool(
    make_pool: Callable[..., Pool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> X509Pool:
    """A pool (on ``db_url``) trusting a throwaway CA whose user is Alice."""
    pki: Pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
    return X509Pool(make_pool(lease_s="120"), pki)


@pytest.fixture
def https(pool_clients: list[httpx.Client]) -> Callable[..., httpx.Client]:
    """``https(pool, token)``: a client over TLS checking the pool CA; closed after."""

    def open_client(pool: Pool, token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        client = httpx.Client(
            base_url=pool.url,
            verify=ssl.create_default_context(cafile=pool.state.ca_cert),
            headers=headers,
            timeout=60,
        )
        pool_clients.append(client)
        return client

    return open_client


@pytest.fixture
def pool_clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for client in opened:
        client.close()


class Pilot:
    """A registered pilot spoken for call by call; ``secret`` is its own unless a test
    plays an attacker with another."""

    def __init__(self, http: httpx.Client, name: str, **registration: Any) -> None:
        self.http = http
        body = {
            "v": 1,
            "name": name,
            "site": "test-site",
            "host": f"{name}.wn.example.org",
            "lifetime_s": 3600,
            **FREE,
            **registration,
        }
        answer = http.post("/pilot/v1/pilots", json=body)
        assert answer.status_code == 201, answer.text
        self.id: str = answer.json()["pilot_id"]
        self.secret: str = answer.json()["pilot_secret"]

    def call(
        self, method: str, path: str, *, secret: str | None = "own", **kw: Any
    ) -> httpx.Response:
        """``method path`` with the pilot's secret, another one, or none (``None``)."""
        sent = self.secret if secret == "own" else secret
        headers = {} if sent is None else {SERVER_HEADER: sent}
        return self.http.request(method, path, headers=headers, **kw)

    def claim(self) -> str:
        answer = self.call("POST", f"/pilot/v1/pilots/{self.id}/claims", json=WORK)
        assert answer.status_code == 200, answer.text
        claim = answer.json()["claim"]
        assert claim is not None, "no job was given"
        return str(claim["claim_id"])


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    """Status, error class and message of a refusal."""
    body = response.json()
    return response.status_code, body["error"], body["message"]


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _alice_job_with_input(x509_pool: X509Pool, alice: httpx.Client, inputs: bytes) -> None:
    """Alice delegates a credential and submits one job with an input sandbox."""
    chain, key = x509_pool.proxy(lifetime_s=3 * 3600)
    assert x509_pool.delegate(alice, chain, key, lifetime_s=2 * 3600).status_code == 200
    digest = alice.post("/api/v1/sandboxes", content=inputs).json()["digest"]
    cluster = alice.post("/api/v1/clusters").json()["cluster_id"]
    job = {
        "executable": "/bin/true",
        "transfer_executable": False,
        "iwd": "/tmp",
        "x509_identity": ALICE,
        "max_walltime_s": 600,
        "input_sandbox": digest,
    }
    committed = alice.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})
    assert committed.status_code == 201, committed.text


def _stored(pool: Pool) -> dict[str, Any]:
    """What the attacks could change: pilots (but their liveness), claims, jobs."""
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {
                "pilots": conn.execute(
                    sa.select(pilots.c.id, pilots.c.state, pilots.c.exit_reason).order_by(
                        pilots.c.id
                    )
                ).all(),
                "claims": conn.execute(sa.select(claims).order_by(claims.c.id)).all(),
                "jobs": conn.execute(
                    sa.select(jobs.c.id, jobs.c.state, jobs.c.claim_id, jobs.c.output_sandbox)
                ).all(),
            }
    finally:
        engine.dispose()


# --- (a) pilots sharing one token are apart ------------------------------------------


def test_a_second_registration_with_the_same_token_cannot_act_for_the_first(
    x509_pool: X509Pool, https: Callable[..., httpx.Client]
) -> None:
    pool = x509_pool.pool
    inputs = _tar({"in.txt": b"alice's input\n"})
    _alice_job_with_input(x509_pool, https(pool, pool.token("alice", "user")), inputs)
    token = pool.token("pilots", "pilot")
    first = Pilot(https(pool, token), "first")
    second = Pilot(https(pool, token), "second")
    claim = first.claim()
    before = _stored(pool)

    # The second pilot, with its own secret, first's, or none, on first's pilot and claim.
    wrong_pilot = (
        f"the pilot secret does not match pilot {first.id}: only the pilot that "
        "registered it may act for it or its claims"
    )
    attacks = [
        ("GET", f"/pilot/v1/claims/{claim}/input", {}),
        ("POST", f"/pilot/v1/claims/{claim}/credential-key", {}),
        ("POST", f"/pilot/v1/claims/{claim}/result", {"json": {"v": 1, "exit_code": 0}}),
        ("PUT", f"/pilot/v1/claims/{claim}/output", {"content": _tar({"out": b"forged"})}),
        ("POST", f"/pilot/v1/pilots/{first.id}/heartbeat", {"json": {"v": 1, "claims": [claim]}}),
        ("POST", f"/pilot/v1/pilots/{first.id}/claims", {"json": WORK}),
        ("POST", f"/pilot/v1/pilots/{first.id}/exit", {"json": {"v": 1, "reason": "hijack"}}),
    ]
    for method, path, kw in attacks:
        answer = second.call(method, path, **kw)
        assert refusal(answer) == (403, "Denied", wrong_pilot), path
        guessed = second.call(method, path, secret="x" * 43, **kw)
        assert refusal(guessed) == (403, "Denied", wrong_pilot), path
        bare = second.call(method, path, secret=None, **kw)
        status, kind, message = refusal(bare)
        assert (status, kind) == (401, "Unauthenticated"), path
        assert message.startswith(f"no pilot secret: send the {SERVER_HEADER} header"), path
    assert _stored(pool) == before

    # The first pilot is untouched: it fetches its input and key, and reports its result.
    fetched = first.call("GET", f"/pilot/v1/claims/{claim}/input")
    assert (fetched.status_code, fetched.content) == (200, inputs)
    assert first.call("POST", f"/pilot/v1/claims/{claim}/credential-key").status_code == 201
    beat = first.call(
        "POST", f"/pilot/v1/pilots/{first.id}/heartbeat", json={"v": 1, "claims": [claim]}
    )
    assert list(beat.json()["renewed"]) == [claim]
    done = first.call("POST", f"/pilot/v1/claims/{claim}/result", json={"v": 1, "exit_code": 7})
    assert done.status_code == 200, done.text
    with pool.admin() as admin:
        (job,) = admin.call("GET", "/api/v1/jobs", params={"id": "1.0"})
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 7)
    assert first.call("POST", f"/pilot/v1/pilots/{first.id}/exit", json={"v": 1}).status_code == 204


def test_the_agent_and_the_server_name_the_same_secret_header() -> None:
    assert AGENT_HEADER == SERVER_HEADER


# --- (b) a registration passes only for what its token is bound to --------------------


ENTRY_AD = {"Cpus": 2, "Memory": 2048, "Disk": 10000, "GPUs": 0, "OpSys": "LINUX"}


def test_a_registration_cannot_pass_for_another_entry_site_or_size(
    pool: Pool, https: Callable[..., httpx.Client]
) -> None:
    factory = https(pool, pool.token("factory-1", "factory"))
    for name, site in (("alpha", "SITE_A"), ("beta", "SITE_B")):
        advert = {"ad": {**ENTRY_AD, "Site": site}, "pilots": {"idle": 0, "running": 0, "held": 0}}
        assert factory.put(f"/api/v1/entries/{name}", json=advert).status_code == 204
    frontend = https(pool, pool.token("vo-frontend", "frontend"))
    minted = frontend.post("/api/v1/pilot-tokens", json={"entry": "alpha", "lifetime_s": 600})
    bound = https(pool, minted.json()["token"])
    plain = https(pool, pool.token("pilot-anywhere", "pilot"))
    body = {
        "v": 1,
        "name": "p",
        "site": "SITE_A",
        "host": "node1",
        "cpus": 2,
        "memory_mb": 2048,
        "disk_mb": 100,
        "lifetime_s": 600,
        "attrs": {"EntryName": '"alpha"'},
    }
    with pool.admin() as admin:
        before = admin.call("GET", "/api/v1/slots")["total"]["pilots"]

    def refused(client: httpx.Client, **changes: Any) -> str:
        status, kind, message = refusal(client.post("/pilot/v1/pilots", json={**body, **changes}))
        assert (status, kind) == (403, "Denied"), message
        return message

    # A token minted for alpha: no bigger pilot than alpha advertises.
    assert "(Cpus 2) cannot register a pilot with cpus = 64" in refused(bound, cpus=64)
    assert "(Memory 2048) cannot register a pilot with memory_mb = 65536" in refused(
        bound, memory_mb=65536
    )
    eight = '"' + ", ".join(f"GPU-{i}" for i in range(8)) + '"'  # the devices it found
    assert "(GPUs 0) cannot register a pilot with gpus = 8" in refused(
        bound, gpus=8, attrs={**body["attrs"], "DetectedGPUs": eight}
    )
    # A token bound to no entry: not an advertised entry's name, nor its site.
    assert "cannot register a pilot of entry beta: use a token minted for that entry" in (
        refused(plain, site="ELSEWHERE", attrs={"EntryName": '"beta"'})
    )
    assert "cannot register a pilot of entry beta" in refused(
        plain, site="ELSEWHERE", attrs={"entryname": 'strcat("be", "ta")'}
    )
    # An expression could read another attribute in the slot's ad: literals only.
    assert "may give EntryName only as a string literal" in refused(
        plain, site="ELSEWHERE", attrs={"EntryName": "Other", "Other": '"beta"'}
    )
    assert "pilot of site SITE_B, which entry beta advertises" in refused(
        plain, site="SITE_B", attrs={}
    )
    with pool.admin() as admin:
        assert admin.call("GET", "/api/v1/slots")["total"]["pilots"] == before

    # What each token may register, it still does.
    assert bound.post("/pilot/v1/pilots", json=body).status_code == 201
    own = {**body, "site": "ADMIN_SITE", "attrs": {"EntryName": '"admin-pilots"'}}
    assert plain.post("/pilot/v1/pilots", json=own).status_code == 201
    entries = {e["name"]: e for e in frontend.get("/api/v1/entries").json()}
    assert entries["alpha"]["registered"]["total"] == 1
    assert entries["beta"]["registered"]["total"] == 0


# --- (c) a job's credential goes only to its claim's pilot ----------------------------


def test_a_credential_is_released_only_to_the_pilot_holding_the_claim(
    x509_pool: X509Pool, https: Callable[..., httpx.Client]
) -> None:
    pool = x509_pool.pool
    _alice_job_with_input(x509_pool, https(pool, pool.token("alice", "user")), _tar({}))
    token = pool.token("pilots", "pilot")
    holder = Pilot(https(pool, token), "holder")
    thief = Pilot(https(pool, token), "thief")
    claim = holder.claim()
    key_path = f"/pilot/v1/claims/{claim}/credential-key"
    release_path = f"/pilot/v1/claims/{claim}/credential"

    # The thief cannot take the claim's key, with its own secret or none...
    assert refusal(thief.call("POST", key_path))[:2] == (403, "Denied")
    assert refusal(thief.call("POST", key_path, secret=None))[:2] == (401, "Unauthenticated")
    # ... so the key is still the holder's to take, once.
    first = holder.call("POST", key_path)
    assert first.status_code == 201, first.text
    key = first.json()["key"]

    # Even with the key in hand, the thief gets no credential; the holder does.
    csr_pem = _csr_pem()
    ask = {"json": {"v": 1, "key": key, "csr_pem": csr_pem}}
    assert refusal(thief.call("POST", release_path, **ask))[:2] == (403, "Denied")
    assert refusal(holder.call("POST", release_path, secret=None, **ask))[:2] == (
        401,
        "Unauthenticated",
    )
    released = holder.call("POST", release_path, **ask)
    assert released.status_code == 200, released.text
    assert released.json()["identity"] == ALICE

    # Every attempt is audited, the refused ones with the thief's pilot named as caller.
    records = [r for r in x509_pool.audit() if r["claim_id"] == claim]
    assert [(r["event"], r["outcome"]) for r in records] == [
        ("key", "refused"),
        ("key", "refused"),
        ("key", "granted"),
        ("release", "refused"),
        ("release", "refused"),
        ("release", "granted"),
    ]
    reasons = [r["reason"].split(":")[0] for r in records if r["outcome"] == "refused"]
    assert reasons == ["Denied", "Unauthenticated", "Denied", "Unauthenticated"]
    assert all(secret not in json.dumps(records) for secret in (holder.secret, thief.secret))


def _csr_pem() -> str:
    from cryptography.hazmat.primitives import serialization

    from pilotage.credentials.proxy import make_proxy_request

    csr, _private = make_proxy_request()
    return csr.public_bytes(serialization.Encoding.PEM).decode()


# --- (d) what a user sees of the pool -------------------------------------------------


def test_users_see_counts_and_their_own_usage_admins_see_all(
    make_pool: Callable[..., Pool], https: Callable[..., httpx.Client]
) -> None:
    # The pilot here never beats: a long heartbeat keeps it from being declared lost.
    pool = make_pool(heartbeat_s="60", lease_s="600")
    alice = https(pool, pool.token("alice", "user"))
    bob = https(pool, pool.token("bob", "user"))
    for user, count in ((alice, 1), (bob, 2)):
        cluster = user.post("/api/v1/clusters").json()["cluster_id"]
        spec = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
        answer = user.post(
            f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [spec] * count}
        )
        assert answer.status_code == 201, answer.text
    pilot = Pilot(https(pool, pool.token("pilots", "pilot")), "p1", host="hidden-host.example")
    with pool.admin() as admin:
        # The matchmaker's index takes the new jobs in on its own sweep.
        deadline = time.monotonic() + 60
        while len(admin.call("GET", "/api/v1/userprio")["submitters"]) < 2:
            assert time.monotonic() < deadline, "the submitters never showed in userprio"
            time.sleep(0.2)
        everything = admin.call("GET", "/api/v1/slots")
        prio_all = admin.call("GET", "/api/v1/userprio")
    pilot.claim()

    # Alice: counts by site and state, the pool's total, and only her own priority.
    seen = alice.get("/api/v1/slots")
    assert seen.status_code == 200
    slots = seen.json()
    assert (slots["scope"], slots["slots"]) == ("summary", [])
    assert slots["by_site"] == [
        {
            "site": "test-site",
            "state": "Claimed",
            "pilots": 1,
            "jobs": 1,
            "cpus": 1,
            "free_cpus": 0,
            "memory_mb": 1024,
            "free_memory_mb": 1024 - 128,
        }
    ]
    assert slots["total"]["pilots"] == 1
    assert pilot.id not in seen.text and "hidden-host" not in seen.text and "p1" not in seen.text
    prio = alice.get("/api/v1/userprio")
    mine = prio.json()
    assert mine["scope"] == "own"
    assert [r["submitter"] for r in mine["submitters"]] == ["alice"]
    assert mine["total"]["submitters"] == 2 and mine["total"]["idle_jobs"] >= 2
    assert "bob" not in prio.text
    analysis = alice.get("/api/v1/jobs/1.0/analysis")
    assert analysis.status_code == 200, analysis.text
    assert analysis.json()["fair_share"]["ahead"] == [] and "bob" not in analysis.text

    # An admin sees every pilot, its host, and every submitter.
    assert everything["scope"] == "all"
    assert [(s["pilot"], s["host"]) for s in everything["slots"]] == [
        (pilot.id, "hidden-host.example")
    ]
    assert prio_all["scope"] == "all"
    assert sorted(r["submitter"] for r in prio_all["submitters"]) == ["alice", "bob"]

    # The CLI still works for both: a user's status shows no host.
    token_file = pool.root / "alice.token"
    token_file.write_text(pool.token("alice", "user") + "\n")
    as_alice = ("--server", pool.url, "--token", str(token_file))
    status = pool.cli(*as_alice, "status")
    assert status.returncode == 0, status.stderr
    assert "test-site" in status.stdout and "hidden-host" not in status.stdout
    assert "1 pilots, 1 running jobs" in status.stdout
    userprio = pool.cli(*as_alice, "userprio")
    assert userprio.returncode == 0, userprio.stderr
    assert "alice" in userprio.stdout and "bob" not in userprio.stdout
    assert "pool: 2 submitters" in userprio.stdout
    admin_status = pool.cli("status", "--json")
    assert admin_status.returncode == 0, admin_status.stderr
    assert json.loads(admin_status.stdout)["slots"][0]["host"] == "hidden-host.example"
