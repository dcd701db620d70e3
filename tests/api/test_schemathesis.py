"""The API's contract (docs/api.md), held against a real server.

A server on PostgreSQL (the stricter store: text with NUL, numbers out of range) with a
few objects in it: a cluster of two jobs, a pilot holding a claim on one, an entry and a
frontend's request for it. Then:

- every kind of body or path the API cannot read gets the one error shape, with the
  status docs/api.md gives;
- Schemathesis runs over the API with each role's token (and the registered pilot's
  secret, so pilot calls reach their checks): every answer's status and body are the
  ones the OpenAPI document declares, schema-valid requests are taken (422 only where
  the operation says ``x-pilotage-checks``), schema-violating ones refused, and
  nothing answers 5xx. Deterministic (no random seed) and bounded: a few examples per
  operation, one worker.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pilotage.api.openapi import unmatched
from pilotage.testing import Pool, throwaway_database


@dataclass(frozen=True)
class Run:
    """One Schemathesis run: a role's token over the operations a path regex picks."""

    role: str
    paths: str
    phases: str = "coverage,fuzzing"
    examples: int = 5  # per operation, in the fuzzing phase (coverage is exhaustive)


#: Each role over the operations it may call; then a user at the pilot's door. An
#: operation a role may not call answers 403 before it reads anything, so that last run
#: is short.
RUNS = (
    Run("pilot", r"^/pilot/v1/|^/api/v1/validation-reports$"),
    Run("frontend", r"^/api/v1/(entries$|requests/|pilot-tokens$|idle-autoclusters$)"),
    Run("factory", r"^/api/v1/(entries|requests$|validation-reports$)"),
    Run(
        "user",
        r"^/api/v1/(whoami|sandboxes|clusters|jobs|jobads|batches|slots|sessions|userprio$"
        r"|credential|delegations|login/|web/links)",
    ),
    Run("admin", r"^/(api/v1/|healthz$|readyz$)"),
    Run("user", r"^/pilot/v1/", phases="fuzzing", examples=1),
)
SUBJECTS = {
    "pilot": "pilots",
    "frontend": "fe1",
    "factory": "fa1",
    "user": "alice",
    "admin": "root1",
}
#: What a schema-valid request may get where the server checks beyond the schema.
CHECKED_BEYOND = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


@dataclass
class Contract:
    """The running pool and what the runs need of it."""

    pool: Pool
    tokens: dict[str, str]
    pilot_id: str
    secret: str
    claim_id: str
    cluster_id: int
    open_cluster: int

    def client(self, role: str, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.pool.url,
            verify=ssl.create_default_context(cafile=self.pool.state.ca_cert),
            headers={"Authorization": f"Bearer {self.tokens[role]}", **headers},
        )


@pytest.fixture(scope="module")
def database(postgres_server: str) -> Iterator[str]:
    """A database of its own for the module's pool."""
    with throwaway_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def contract(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contract]:
    # Requests for work are answered at once (no long-poll: a generated wait_s would
    # hold each one [server] work_wait_s while no job is idle).
    root = tmp_path_factory.mktemp("contract")
    pool = Pool(root, database, settings={"work_wait_s": "0"}).start()
    try:
        tokens = {role: pool.token(subject, role) for role, subject in SUBJECTS.items()}
        found = Contract(pool, tokens, "", "", "", 0, 0)
        _populate(found)
        yield found
    finally:
        pool.stop()


def _populate(c: Contract) -> None:
    """A cluster of two jobs, a pilot holding a claim on one, an entry, a request."""
    with c.client("user") as user:
        c.cluster_id = user.post("/api/v1/clusters").json()["cluster_id"]
        job = {"executable": "/bin/true", "transfer_executable": False}
        committed = user.post(f"/api/v1/clusters/{c.cluster_id}/jobs", json={"jobs": [job] * 2})
        assert committed.status_code == 201, committed.text
        c.open_cluster = user.post("/api/v1/clusters").json()["cluster_id"]
    with c.client("factory") as factory:
        advert = {"v": 1, "ad": {"Site": "site1", "GLIDEIN_CPUS": 4}}
        assert factory.put("/api/v1/entries/e1", json=advert).status_code == 204
    with c.client("frontend") as frontend:
        request = {"v": 1, "idle_wanted": 1, "max_running": 2}
        assert frontend.put("/api/v1/requests/fe1/e1", json=request).status_code == 204
    with c.client("pilot") as pilot:
        registration = {"v": 1, "name": "p1", "host": "wn1", "cpus": 4, "memory_mb": 4096,
                        "disk_mb": 1000, "lifetime_s": 3600}  # fmt: skip
        answer = pilot.post("/pilot/v1/pilots", json=registration)
        assert answer.status_code == 201, answer.text
        c.pilot_id, c.secret = answer.json()["pilot_id"], answer.json()["pilot_secret"]
        free = {"cpus": 4, "memory_mb": 4096, "disk_mb": 1000}
        work = pilot.post(
            f"/pilot/v1/pilots/{c.pilot_id}/claims",
            json={"v": 1, "free": free, "time_left_s": 3000},
            headers={"X-Pilotage-Pilot-Secret": c.secret},
        )
        assert work.status_code == 200 and work.json()["claim"], work.text
        c.claim_id = work.json()["claim"]["claim_id"]


def _refusal(answer: httpx.Response, status: int, kind: str, *words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "message"} and body["error"] == kind, body
    for word in words:
        assert word in body["message"], body


def test_bodies_and_paths_the_api_cannot_read(contract: Contract) -> None:
    """Each kind of unreadable request, and what the caller is told."""
    json_type = {"Content-Type": "application/json"}
    with contract.client("user") as user:
        acts = "/api/v1/jobs/actions"
        _refusal(user.post(acts, content=b'{"action": ', headers=json_type), 400,
                 "MalformedBody", "not valid JSON", "Content-Type: application/json")  # fmt: skip
        _refusal(user.post(acts, content=b'{"action": "\xff"}', headers=json_type), 400,
                 "MalformedBody", "not UTF-8")  # fmt: skip
        _refusal(user.post(acts, json=["hold"]), 422, "BadInput", "not a JSON object")
        _refusal(user.post(acts, content=b'{"action": "hold"}', headers={"Content-Type":
                 "text/plain"}), 422, "BadInput", "not a JSON object")  # fmt: skip
        _refusal(user.post(acts, json={"action": "hold", "ids": ["1"], "reason": "a\x00b"}),
                 422, "BadInput", "reason", "NUL")  # fmt: skip
        _refusal(user.get("/api/v1/jobs/1.0%00/events"), 422, "BadInput", "path", "NUL")
        _refusal(user.get("/api/v1/sessions", params={"job": "1\x00"}), 422, "BadInput",
                 "query", "NUL")  # fmt: skip
        _refusal(user.get("/api/v1/no-such-thing"), 404, "NotFound", "/openapi.json")
        options = user.options("/api/v1/credential")
        _refusal(options, 405, "MethodNotAllowed", "OPTIONS is not allowed", "DELETE")
        assert options.headers["Allow"] == "GET, DELETE"
    with contract.client("pilot", **{"X-Pilotage-Pilot-Secret": contract.secret}) as pilot:
        heartbeat = f"/pilot/v1/pilots/{contract.pilot_id}/heartbeat"
        _refusal(pilot.post(heartbeat, json={"v": True}), 422, "BadInput", "v", "not true")
        _refusal(pilot.post(heartbeat, json={"v": 1, "claims": "c-1"}), 422, "BadInput", "claims")
        result = f"/pilot/v1/claims/{contract.claim_id}/result"
        _refusal(pilot.post(result, content=b'{"v": 1, "wall_s": NaN}', headers=json_type), 422,
                 "BadInput", "wall_s")  # fmt: skip
        _refusal(pilot.post(result, json={"v": 1, "exit_code": "0"}), 422, "BadInput",
                 "exit_code", "not the string")  # fmt: skip


def _config(contract: Contract, doc: dict[str, Any], hooks: Path) -> str:
    """The runs' ``schemathesis.toml``: known objects for half the path parameters, 422
    allowed where the server checks beyond the schema, no long-poll."""
    c = contract
    lines = [
        f'hooks = "{hooks}"',
        "[generation]",
        "deterministic = true",
        'database = "none"',
        "[dictionaries]",
        f'pilots = {{ values = ["{c.pilot_id}"] }}',
        f'claims = {{ values = ["{c.claim_id}"] }}',
        f'jobs = {{ values = ["{c.cluster_id}.0", "{c.cluster_id}.1", "{c.cluster_id}"] }}',
        f"clusters = {{ values = [{c.open_cluster}] }}",
        'entries = { values = ["e1"] }',
        'frontends = { values = ["fe1"] }',
        "[parameters]",
    ]
    for name, values in (("pilot_id", "pilots"), ("claim_id", "claims"), ("job_id", "jobs"),
                         ("cluster_id", "clusters"), ("entry", "entries"), ("name", "entries"),
                         ("frontend", "frontends")):  # fmt: skip
        lines.append(f'"path.{name}" = {{ dictionary = "{values}", probability = 0.5 }}')
    lines += [
        "[[operations]]",
        'include-path = "/pilot/v1/pilots/{pilot_id}/sessions"',
        "parameters = { wait_s = 0 }",
    ]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if "x-pilotage-checks" in op:
                lines += [
                    "[[operations]]",
                    f'include-path = "{path}"',
                    f'include-method = "{method.upper()}"',
                    "checks.positive_data_acceptance.expected-statuses = "
                    + str(CHECKED_BEYOND).replace("'", '"'),
                ]
    return "\n".join(lines) + "\n"


# Under two minutes on a quiet machine; past five with the suite run twice at once.
@pytest.mark.timeout(1200)
def test_the_api_keeps_its_contract(contract: Contract, tmp_path: Path) -> None:
    with contract.client("admin") as admin:
        doc = admin.get("/openapi.json").json()
    assert unmatched(doc) == [], "api/openapi.py names routes or parameters that are gone"
    hooks = tmp_path / "hooks.py"
    hooks.write_text(
        textwrap.dedent("""\
            import schemathesis

            # Tar streams travel as bytes, as any binary body.
            schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
        """)
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(contract, doc, hooks))
    failed = []
    for run in RUNS:
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
            f"{contract.pool.url}/openapi.json",
            "--header", f"Authorization: Bearer {contract.tokens[run.role]}",
            "--header", f"X-Pilotage-Pilot-Secret: {contract.secret}",
            "--tls-verify", str(contract.pool.state.ca_cert),
            "--checks", "all", "--workers", "1", "--no-color",
            "--phases", run.phases, "--max-examples", str(run.examples),
            "--include-path-regex", run.paths,
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        took = f"{time.monotonic() - started:.0f} s"
        print(f"{run.role} {run.paths}: {took}, {done.stdout.splitlines()[-1]}")
        if done.returncode != 0:
            failed.append(f"--- {run} (exit {done.returncode}):\n{_failures(done.stdout)}")
    log = contract.pool.server_log()
    assert "internal error" not in log, log[-4000:]
    assert not failed, "\n".join(failed)


def _failures(output: str) -> str:
    """The failures and errors sections of Schemathesis's report, or its end."""
    start = min(
        (i for i in (output.find("=== FAILURES ==="), output.find("=== ERRORS ===")) if i >= 0),
        default=max(0, len(output) - 3000),
    )
    return output[start:][:20000]
