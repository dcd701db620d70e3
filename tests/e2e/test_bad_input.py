"""Bad input, as a user meets it: the CLI's exit code and its one sentence, or the API's
status and message; and afterwards, nothing already stored has changed."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_callers import closed_port, job_specs, refusal, run_cli, snapshot, submit_api

from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]

RUN = "#!/bin/sh\necho ran $1\n"
GOOD = "executable = run.sh\narguments = $(Process)\nqueue 2\n"

#: A submit description the client must refuse -> the sentence it prints (after 'pilotage: ').
BAD_SUBMITS: dict[str, tuple[str, str]] = {
    "malformed line": (
        "executable = run.sh\narguments = a\nthis line is wrong\nqueue\n",
        "job.submit, line 3: expected 'command = value' or 'queue', not 'this line is wrong'",
    ),
    "unknown command": (
        "# two jobs\nexecutable = run.sh\nrequst_cpus = 2\nqueue 2\n",
        "job.submit, line 3: unknown submit command 'requst_cpus' (did you mean request_cpus?)",
    ),
    "missing executable": (
        "executable = nothere.sh\nqueue\n",
        "executable {work}/nothere.sh does not exist",
    ),
    "missing input file": (
        "executable = run.sh\ntransfer_input_files = run.sh, data/missing.txt\nqueue\n",
        "input file {work}/data/missing.txt does not exist",
    ),
    "requirements that do not parse": (
        "executable = run.sh\nrequest_cpus = 1\nrequirements = (OpSys == \nqueue\n",
        "job.submit, line 3: requirements: '(OpSys ==' is not a valid ClassAd expression",
    ),
    "+Owner": (
        'executable = run.sh\n+Owner = "alice"\nqueue\n',
        "job.submit, line 2: +Owner cannot be set here: use the server",
    ),
    "command after the last queue": (
        "executable = run.sh\nqueue\narguments = late\n",
        "job.submit, line 3: 'arguments' comes after the last queue statement, so no job "
        "would use it; move it above 'queue'",
    ),
}


def _workdir(pool: Pool) -> Path:
    work = pool.root / "work"
    work.mkdir()
    (work / "run.sh").write_text(RUN)
    (work / "run.sh").chmod(0o755)
    return work


#: For client-side checks the database does not matter: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_bad_submit_files_exit_2_with_one_sentence_and_store_nothing(pool: Pool) -> None:
    work = _workdir(pool)
    before = snapshot(pool)
    for case, (text, sentence) in BAD_SUBMITS.items():
        (work / "job.submit").write_text(text)
        result = pool.cli("submit", "job.submit", cwd=work)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert result.stderr == f"pilotage: {sentence.format(work=work)}\n", case
        assert result.stdout == ""
    missing = pool.cli("submit", "nothere.submit", cwd=work)
    assert (missing.returncode, missing.stderr) == (
        2,
        "pilotage: submit file nothere.submit does not exist\n",
    )
    assert snapshot(pool) == before
    # Not even a cluster id was taken: the next good submit is cluster 1.
    (work / "job.submit").write_text(GOOD)
    good = pool.cli("submit", "job.submit", "--json", cwd=work)
    assert json.loads(good.stdout) == {"cluster": 1, "jobs": 2}, good.stderr


def test_the_server_refuses_bad_job_specs_with_422_and_keeps_the_cluster_open(
    pool: Pool, clients: Clients
) -> None:
    """What the client checks, the server checks again: API bodies are outside input."""
    alice = clients(pool, pool.token("alice", "user"))
    submit_api(alice, 1)
    cluster = alice.post("/api/v1/clusters").json()["cluster_id"]
    good = job_specs(1)[0]
    bad_bodies: dict[str, tuple[list[dict[str, object]], str]] = {
        "requirements": (
            [{**good, "requirements": "(OpSys == "}],
            "requirements '(OpSys == ' is not a valid ClassAd expression",
        ),
        "rank": ([{**good, "rank": "Memory +"}], "rank 'Memory +' is not a valid ClassAd"),
        "+Owner": (
            [{**good, "attrs": {"Owner": '"bob"'}}],
            "attribute +Owner is set by the pool and cannot be given",
        ),
        "+owner, any case": (
            [{**good, "attrs": {"oWnEr": '"bob"'}}],
            "attribute +oWnEr is set by the pool and cannot be given",
        ),
        "+ClusterId": (
            [{**good, "attrs": {"ClusterId": "1"}}],
            "attribute +ClusterId is set by the pool",
        ),
        "attribute value": (
            [{**good, "attrs": {"Color": "blue +"}}],
            "attribute +Color 'blue +' is not a valid ClassAd expression",
        ),
        "attribute name": ([{**good, "attrs": {"1x": "1"}}], "is not a valid ClassAd name"),
        "output climbing out": ([{**good, "output": "../../etc/x"}], "must not climb out"),
        "absolute error file": ([{**good, "error": "/etc/passwd"}], "must be relative"),
        "unknown field": ([{**good, "universe": "grid"}], "jobs.0.universe: Extra inputs"),
        "no cpus": ([{**good, "request_cpus": 0}], "jobs.0.request_cpus"),
        "sandbox digest": ([{**good, "input_sandbox": "../x"}], "SHA-256 hex digest"),
        "sandbox never uploaded": (
            [{**good, "input_sandbox": "a" * 64}],
            f"input sandbox {'a' * 64} was not uploaded by alice",
        ),
        "the third of three jobs": (
            [good, good, {**good, "requirements": "1 +"}],
            "requirements '1 +' is not a valid ClassAd expression",
        ),
    }
    before = snapshot(pool)
    for case, (jobs, words) in bad_bodies.items():
        answer = alice.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": jobs})
        assert answer.status_code == 422, (case, answer.text)
        status, message = refusal(answer)
        assert status == 422, (case, message)
        assert words in message, (case, message)
    for body, words in (
        ({"v": 1, "jobs": []}, "jobs: List should have at least 1 item"),
        ({"jobs": [good], "v": 2}, "v: Value error, version 2 is not supported"),
        ({}, "jobs: Field required"),
    ):
        status, message = refusal(alice.post(f"/api/v1/clusters/{cluster}/jobs", json=body))
        assert (status, words in message) == (422, True), message
    assert snapshot(pool) == before

    # The refused commits left the cluster open: the same cluster takes good jobs.
    committed = alice.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [good]})
    assert committed.json() == {"cluster_id": cluster, "jobs": 1, "warnings": []}
    status, message = refusal(
        alice.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [good]})
    )
    assert (status, message) == (
        409,
        f"cluster {cluster} already has its jobs; submit a new cluster",
    )
    status, message = refusal(alice.post("/api/v1/clusters/99/jobs", json={"v": 1, "jobs": [good]}))
    assert (status, message) == (404, "cluster 99 does not exist")


def test_unknown_verbs_and_options_are_usage_errors_with_exit_2(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)  # no server at all: these never get as far as calling one
    for args, words in (
        (("sumbit", "job.submit"), "No such command 'sumbit'. Did you mean 'submit'?"),
        (("q", "--bogus"), "No such option: --bogus"),
        (("rm",), "Missing argument"),
        (("token", "issue", "--role", "root", "--subject", "x"), "'root' is not one of"),
        (("token", "issue", "--role", "user", "--subject", "x", "--lifetime", "soon"),
         "lifetime 'soon' is not a number of seconds"),
    ):  # fmt: skip
        result = run_cli(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_unknown_job_ids_exit_3_and_change_nothing(pool: Pool) -> None:
    with pool.admin() as admin:
        submit_api(admin, 1)
    before = snapshot(pool)
    for args in (
        ("rm", "99"),
        ("hold", "99.0"),
        ("q", "99.0"),
        ("history", "99"),
        ("wait", "99"),
        ("fetch", "99.0"),
        ("rm", "1", "1.7"),  # one known, one unknown: nothing is removed
    ):
        result = pool.cli(*args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert result.stderr == f"pilotage: job {args[-1]} does not exist\n", args
    for args in (("rm", "abc"), ("q", "1.x")):
        result = pool.cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "is not a job id; use CLUSTER or CLUSTER.PROC" in result.stderr, args
    assert snapshot(pool) == before
    # A known job that merely left the queue is not "unknown": q shows it is not there.
    assert pool.cli("rm", "1").returncode == 0
    queue = pool.cli("q", "1.0", "--json")
    assert (queue.returncode, json.loads(queue.stdout)) == (0, [])


def _clean_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTAGE_")}
    env["PILOTAGE_STATE_DIR"] = str(state_dir)
    return env


def test_an_unreachable_server_is_named_with_exit_5(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("F\n")
    url = f"https://127.0.0.1:{closed_port()}"
    env = _clean_env(tmp_path / "state")

    result = run_cli("--server", url, "--token", str(token), "q", env=env)
    assert result.returncode == 5, result.stdout + result.stderr
    assert result.stderr.startswith(f"pilotage: cannot reach the server at {url}: ")
    assert result.stderr.count("\n") == 1

    result = run_cli("q", env=env)
    assert result.returncode == 5
    assert result.stderr == (
        f"pilotage: no server socket in {tmp_path / 'state'}: start one with 'pilotage "
        "server', or name one with --server URL --token FILE\n"
    )

    # A socket left behind by a server that died: named, not a traceback.
    state = tmp_path / "stale"
    state.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(state / "server.sock"))
    result = run_cli("q", env=_clean_env(state))
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith(
        f"pilotage: cannot reach the server at the Unix socket {state / 'server.sock'}: "
    )

    result = run_cli("--server", "http://127.0.0.1:1", "q", env=env)
    assert (result.returncode, result.stderr) == (
        2,
        "pilotage: --server http://127.0.0.1:1 must be an https:// URL "
        "(several: comma-separated)\n",
    )


@SQLITE_ONLY
def test_a_server_whose_certificate_does_not_verify_is_not_spoken_to(
    pool: Pool, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    run_cli("init", env=_clean_env(other))
    token = pool.token_file("alice", "user")
    result = pool.cli(
        "--server", pool.url, "--token", str(token), "--ca", str(other / "ca" / "ca.crt"), "q"
    )
    assert result.returncode == 5, result.stdout + result.stderr
    assert result.stderr.startswith(f"pilotage: cannot reach the server at {pool.url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
