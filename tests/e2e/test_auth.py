"""Authentication and authorization at the edge, against a real server process.

Remote callers present bearer tokens over TLS; local users are known by the Unix
socket's peer credentials. A refused caller gets 401 (who are you?) or 403 (not
yours / not your role) with one sentence, and nothing stored changes.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from collections.abc import Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from e2e_callers import LocalUsers, ProtocolPilot, refusal, snapshot, submit_api

from pilotage.credentials import pki
from pilotage.credentials.tokens import Role, TokenIssuer
from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]

HELLO = "#!/bin/sh\necho hello from $1\n"
SUBMIT = "executable = hello.sh\narguments = $(Process)\noutput = out.$(Process)\nqueue 2\n"


def _issuer(pool: Pool, *, keys: list[bytes] | None = None, **kwargs: object) -> TokenIssuer:
    """A token issuer with the pool's own signing keys and names, unless told otherwise."""
    name = pool.state.settings().issuer
    options: dict[str, object] = {"issuer": name, "audience": name, **kwargs}
    return TokenIssuer(keys or pool.state.signing_keys(), **options)  # type: ignore[arg-type]


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _bad_tokens(pool: Pool) -> dict[str, tuple[str, str]]:
    """name -> (Authorization header value, what the server's message must say)."""
    good = pool.token("alice", "user")
    own = _issuer(pool)
    stranger = _issuer(pool, keys=[pki.create_token_signing_key()])
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    as_admin = _b64({**claims, "sub": "root", "scope": "pilotage:admin"})
    same_kid = jwt.encode(
        claims,
        serialization.load_pem_private_key(pki.create_token_signing_key(), None),
        algorithm="ES256",
        headers={"kid": own.current_kid, "typ": "JWT"},
    )
    unsigned = jwt.encode({**claims, "sub": "root"}, key=None, algorithm="none")
    return {
        "garbage": ("Bearer not-a-token", "malformed token"),
        "not bearer": (f"Basic {base64.b64encode(b'alice:pw').decode()}", "Bearer <token>"),
        "empty bearer": ("Bearer", "Bearer <token>"),
        "expired": (
            "Bearer "
            + _issuer(pool, clock=lambda: time.time() - 7200).mint("alice", Role.USER, 600),
            "token expired",
        ),
        "not valid yet": (
            "Bearer "
            + _issuer(pool, clock=lambda: time.time() + 7200).mint("alice", Role.USER, 600),
            "not valid yet",
        ),
        "signed by another issuer's key": (
            "Bearer " + stranger.mint("alice", Role.ADMIN, 600),
            "unknown key id",
        ),
        "forged with the pool's key id": (f"Bearer {same_kid}", "forged or altered"),
        "claims altered after signing": (
            f"Bearer {header}.{as_admin}.{signature}",
            "forged or altered",
        ),
        "algorithm none": (f"Bearer {unsigned}", "only ES256"),
        "wrong audience": (
            "Bearer " + _issuer(pool, audience="pilotage:elsewhere").mint("alice", Role.USER, 600),
            "not for this pool",
        ),
        "wrong issuer": (
            "Bearer " + _issuer(pool, issuer="pilotage:elsewhere").mint("alice", Role.USER, 600),
            "not by this pool's issuer",
        ),
    }


def test_bad_tokens_get_401_naming_the_check_and_change_nothing(
    pool: Pool, clients: Clients
) -> None:
    with pool.admin() as admin:
        submit_api(admin, 1)
    bad = _bad_tokens(pool)  # first: minting the good token they derive from is recorded
    before = snapshot(pool)
    anonymous = clients(pool, None)
    for case, (authorization, words) in bad.items():
        headers = {"Authorization": authorization}
        for method, path, body in (
            ("GET", "/api/v1/jobs", None),
            ("POST", "/api/v1/clusters", None),
            ("POST", "/api/v1/jobs/actions", {"action": "remove", "ids": ["1"]}),
            ("POST", "/api/v1/tokens", {"subject": "eve", "role": "admin", "lifetime_s": 60}),
            ("POST", "/pilot/v1/pilots", {"v": 1}),
        ):
            answer = anonymous.request(method, path, headers=headers, json=body)
            status, message = refusal(answer)
            assert status == 401, (case, path, answer.text)
            assert words in message, (case, message)
    for method, path in (("GET", "/api/v1/whoami"), ("POST", "/api/v1/clusters")):
        status, message = refusal(anonymous.request(method, path))
        assert status == 401 and message.startswith("no credential"), message
    assert snapshot(pool) == before


def test_expired_token_on_the_cli_exits_4_with_the_reason(pool: Pool) -> None:
    expired = _issuer(pool, clock=lambda: time.time() - 7200).mint("alice", Role.USER, 600)
    token_file = pool.root / "expired.token"
    token_file.write_text(expired + "\n")
    result = pool.cli("--server", pool.url, "--token", str(token_file), "q")
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.startswith("pilotage: token expired ") and "s ago" in result.stderr
    assert result.stderr.count("\n") == 1  # one sentence, no traceback


def test_roles_are_kept_apart(pool: Pool, clients: Clients) -> None:
    user = clients(pool, pool.token("alice", "user"))
    pilot = clients(pool, pool.token("pilots", "pilot"))
    root_user = clients(pool, pool.token("root", "user"))
    admin = clients(pool, pool.token("ops", "admin"))
    ProtocolPilot(pilot)  # a pilot exists, so pilot paths are about the role, not the id
    before = snapshot(pool)

    status, message = refusal(pilot.get("/api/v1/jobs"))
    assert (status, message) == (403, "pilots has the pilot role; this needs user or admin")
    status, message = refusal(pilot.post("/api/v1/clusters"))
    assert status == 403
    status, message = refusal(
        user.post("/pilot/v1/pilots", json={"v": 1, "name": "x", "host": "h", "cpus": 1,
                                            "memory_mb": 1, "disk_mb": 1, "lifetime_s": 60})
    )  # fmt: skip
    assert (status, message) == (403, "alice has the user role; this needs pilot")
    for caller, name in ((user, "alice"), (pilot, "pilots"), (root_user, "root")):
        status, message = refusal(
            caller.post(
                "/api/v1/tokens", json={"subject": "eve", "role": "admin", "lifetime_s": 60}
            )
        )
        assert status == 403 and message.startswith(f"{name} has the "), message
        assert message.endswith("this needs admin")
    # A user token naming root is still a user: the role comes from the token, not the name.
    assert root_user.get("/api/v1/whoami").json() == {
        "name": "root",
        "role": "user",
        "via": "token",
    }
    assert snapshot(pool) == before
    minted = admin.post("/api/v1/tokens", json={"subject": "eve", "role": "user", "lifetime_s": 60})
    assert minted.status_code == 201 and minted.json()["issued_by"] == "ops"


def test_token_issue_by_a_non_admin_exits_4(pool: Pool) -> None:
    user_token = pool.token_file("alice", "user")
    result = pool.cli(
        *("--server", pool.url, "--token", str(user_token)),
        *("token", "issue", "--role", "admin", "--subject", "alice", "--lifetime", "1h"),
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr == "pilotage: alice has the user role; this needs admin\n"
    assert result.stdout == ""
    # The same command over the socket as root (admin) works.
    issued = pool.cli("token", "issue", "--role", "user", "--subject", "carol", "--lifetime", "1h")
    assert issued.returncode == 0, issued.stderr
    with pool.remote(issued.stdout.strip()) as carol:
        assert carol.call("GET", "/api/v1/whoami")["name"] == "carol"


def test_token_users_see_and_change_only_their_own_jobs(pool: Pool, clients: Clients) -> None:
    alice = clients(pool, pool.token("alice", "user"))
    bob = clients(pool, pool.token("bob", "user"))
    admin = clients(pool, pool.token("ops", "admin"))
    submit_api(alice, 2)
    bobs = submit_api(bob, 1)
    assert bobs == 2
    sandbox = alice.post(
        "/api/v1/sandboxes", content=_tar_of({"data.txt": b"x"}),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert sandbox.status_code == 201
    opened = alice.post("/api/v1/clusters").json()["cluster_id"]
    before = snapshot(pool)

    assert [j["id"] for j in bob.get("/api/v1/jobs").json()] == ["2.0"]
    assert [j["id"] for j in alice.get("/api/v1/jobs").json()] == ["1.0", "1.1"]
    assert len(admin.get("/api/v1/jobs").json()) == 3
    denied = "job 1.0 belongs to alice, not bob"
    for method, path, body in (
        ("GET", "/api/v1/jobs?id=1.0", None),
        ("GET", "/api/v1/jobs?id=1", None),
        ("GET", "/api/v1/jobs/1.0/events", None),
        ("GET", "/api/v1/jobs/1.0/output", None),
        ("POST", "/api/v1/jobs/actions", {"action": "remove", "ids": ["1.0"]}),
        ("POST", "/api/v1/jobs/actions", {"action": "hold", "ids": ["1"]}),
        # bob's own job named too: the whole request is refused, his job is not held either
        ("POST", "/api/v1/jobs/actions", {"action": "hold", "ids": ["2.0", "1.0"]}),
    ):
        status, message = refusal(bob.request(method, path, json=body))
        assert (status, message) == (403, denied), (method, path)
    status, message = refusal(bob.get("/api/v1/jobs", params={"owner": "alice"}))
    assert (status, message) == (403, "bob may not list the jobs of alice")
    status, message = refusal(
        bob.post(f"/api/v1/clusters/{opened}/jobs", json={"v": 1, "jobs": [_spec()]})
    )
    assert (status, message) == (403, f"cluster {opened} belongs to alice, not bob")
    assert snapshot(pool) == before
    digest = sandbox.json()["digest"]
    bob_cluster = bob.post("/api/v1/clusters").json()["cluster_id"]
    before = snapshot(pool)
    status, message = refusal(
        bob.post(
            f"/api/v1/clusters/{bob_cluster}/jobs",
            json={"v": 1, "jobs": [_spec(input_sandbox=digest)]},
        )
    )
    assert (status, message) == (422, f"input sandbox {digest} was not uploaded by bob")
    assert snapshot(pool) == before
    # The admin may act on anyone's job.
    held = admin.post("/api/v1/jobs/actions", json={"action": "hold", "ids": ["1.0"]})
    assert held.json()[0]["state"] == "HELD"


def _spec(**fields: object) -> dict[str, object]:
    return {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp", **fields}


def _tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


#: Where the database plays no part (the socket, the client), SQLite is enough.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_local_users_are_known_by_the_socket_and_kept_apart(
    pool: Pool, local_users: LocalUsers
) -> None:
    work = local_users.workdir(pool, "alice", {"hello.sh": HELLO, "job.submit": SUBMIT})
    submitted = local_users.cli(pool, "alice", "submit", "job.submit", "--json", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout) == {"cluster": 1, "jobs": 2}
    bobs_queue = local_users.cli(pool, "bob", "q", "--json")
    assert bobs_queue.returncode == 0 and json.loads(bobs_queue.stdout) == []
    mine = json.loads(local_users.cli(pool, "alice", "q", "--json").stdout)
    assert [(j["id"], j["owner"], j["state"]) for j in mine] == [
        ("1.0", "alice", "IDLE"),
        ("1.1", "alice", "IDLE"),
    ]
    before = snapshot(pool)

    for args in (("rm", "1.0"), ("hold", "1"), ("release", "1.0"), ("q", "1.0"), ("wait", "1")):
        result = local_users.cli(pool, "bob", *args)
        assert result.returncode == 4, (args, result.stdout, result.stderr)
        assert result.stderr == "pilotage: job 1.0 belongs to alice, not bob\n", args
    result = local_users.cli(pool, "bob", "q", "--owner", "alice")
    assert (result.returncode, result.stderr) == (
        4,
        "pilotage: bob may not list the jobs of alice\n",
    )
    result = local_users.cli(pool, "bob", "token", "issue", "--role", "admin", "--subject", "bob")
    assert (result.returncode, result.stderr) == (
        4,
        "pilotage: bob has the user role; this needs admin\n",
    )
    assert snapshot(pool) == before

    # root is the admin of the socket: it sees and changes everyone's jobs.
    everything = json.loads(pool.cli("q", "--json").stdout)
    assert [(j["id"], j["owner"]) for j in everything] == [("1.0", "alice"), ("1.1", "alice")]
    assert pool.cli("hold", "1.0").returncode == 0
    assert (
        json.loads(local_users.cli(pool, "alice", "q", "1.0", "--json").stdout)[0]["state"]
        == "HELD"
    )


@SQLITE_ONLY
def test_nothing_is_written_where_the_submitter_chose_when_root_fetches(
    pool: Pool, clients: Clients
) -> None:
    """A job's iwd and log paths are the submitter's words: an admin bringing outputs back
    must not let them pick what root overwrites."""
    victim_dir = pool.root / "root-only"
    victim_dir.mkdir(mode=0o700)
    victim = victim_dir / "important"
    victim.write_text("root's data\n")
    alice = clients(pool, pool.token("alice", "user"))
    submit_api(alice, 1, iwd=str(victim_dir), log=str(victim))
    pilot = ProtocolPilot(clients(pool, pool.token("pilots", "pilot")))
    claim = pilot.ask()
    assert claim is not None
    assert (
        pilot.upload_output(claim["claim_id"], _tar_of({"important": b"owned\n"})).status_code
        == 204
    )
    assert pilot.report(claim["claim_id"]).status_code == 200

    note = "pilotage: job 1.0 belongs to alice; only its owner can bring its outputs back\n"
    fetched = pool.cli("fetch", "1.0")
    assert (fetched.returncode, fetched.stderr) == (4, note)
    waited = pool.cli("wait", "1", "--timeout", "30", "--json")
    assert (waited.returncode, waited.stderr) == (0, note)  # it completed; nothing written
    assert victim.read_text() == "root's data\n"
    assert sorted(p.name for p in victim_dir.iterdir()) == ["important"]
