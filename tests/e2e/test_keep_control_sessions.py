"""exec-in-job and ssh-to-job without the switch, end to end as root: the session runs as
the pilot account, bounded in bytes and in silence.

A real pool whose sessions may carry 64 KiB each way and stay silent 15 s; one agent, from
its zipapp, as the account ``pilot``, with no switch; two jobs of Alice's, one running
(it waits for a file named ``stop`` in its directory), one left idle by the agent's one
cpu. Alice runs the real CLI. What she sees:

- her command runs as ``pilot`` in the job's directory with the job's environment; with
  ``-t`` on a terminal; one that cannot be started exits 127 with the reason;
- a command writing more than the cap is cut at exactly the cap, exit 124 with a
  sentence; one silent past the idle limit too, and nothing of it is left running;
  while two sessions last, a third in the job is refused (two at most);
- each kind of bad request (no command, a cluster, not a job id, an unknown job, a job
  not running) is refused with its own sentence and exit status;
- her shell ends, with exit 6 and a sentence, when the job it entered ends;
- the admin's ``pilotage sessions`` lists each session and how it ended.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import pytest
from e2e_callers import LocalUsers

from pilot.switched_pool import pilot_file
from pilotage.pilot.zipapp import build_zipapp
from pilotage.testing import Pool
from pilotage.testing_accounts import AccountsUnavailable, ensure_accounts
from switch.switch_site import interpreter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB = "echo started > here.txt; while [ ! -e stop ]; do sleep 0.2; done"
CAP = 65536


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the relay lives in the server process, not in the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def agent(
    make_pool: Callable[..., Pool], require_service: Callable[[str, str], NoReturn]
) -> Iterator[tuple[Pool, Path]]:
    """The pool, and its one agent running as ``pilot`` without a switch (its log)."""
    try:
        ensure_accounts(("pilot",))
    except AccountsUnavailable as exc:
        require_service("real Unix users", str(exc))
    pool = make_pool(
        lease_s="300", session_max_bytes=str(CAP), session_idle_s="15", session_max_per_job="2"
    )
    home = pool.root / "agent"
    home.mkdir(mode=0o755)
    account = pwd.getpwnam("pilot")
    os.chown(home, account.pw_uid, account.pw_gid)
    token = pilot_file(home / "token", pool.token("pilots", "pilot").encode(), 0o600)
    ca = pilot_file(home / "ca.pem", pool.state.ca_cert.read_bytes(), 0o644)
    command = [
        interpreter(), "-I", str(build_zipapp(home / "agent.pyz")), "--server", pool.url,
        "--ca", str(ca), "--token", str(token), "--workdir", str(home / "work"), "--cpus", "1",
        "--memory", "512", "--disk", "100", "--idle-timeout", "600",
    ]  # fmt: skip
    log = home / "agent.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stderr=out, env={"PATH": "/usr/bin:/bin"}, cwd="/", user="pilot",
            group="pilot", extra_groups=[],
        )  # fmt: skip
    try:
        yield pool, log
    finally:
        process.kill()
        process.wait()


def processes(*argv: str) -> list[int]:
    """The processes whose command line is ``argv``."""
    found = []
    wanted = "".join(f"{a}\0" for a in argv).encode()
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() == wanted:
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()[-6000:]}")
        time.sleep(0.2)


def test_sessions_without_the_switch_run_as_the_pilot_within_bounds(
    agent: tuple[Pool, Path], local_users: LocalUsers
) -> None:
    pool, log = agent
    spec = {"executable": "/bin/sh", "arguments": ["-c", JOB], "transfer_executable": False,
            "iwd": "/tmp", "environment": {"SESSION_VAR": "from the submit"}}  # fmt: skip
    with pool.remote(pool.token("alice", "user")) as alice:
        cluster = alice.call("POST", "/api/v1/clusters")["cluster_id"]
        alice.call("POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [spec] * 2})
    ids = [f"{cluster}.0", f"{cluster}.1"]

    def running() -> list[str]:
        jobs = pool.wait_jobs(ids, ("RUNNING", "IDLE"))
        return [j["id"] for j in jobs if j["state"] == "RUNNING"]

    wait_for(lambda: len(running()) == 1, "a job's start", log)
    job = running()[0]
    idle = next(i for i in ids if i != job)

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return local_users.cli(pool, "alice", *args, input=stdin)

    work = pool.root / "agent" / "work"
    wait_for(lambda: any(work.glob("*/here.txt")), "the job's first line", log)
    script = 'id -un; pwd; cat here.txt; echo "v=$SESSION_VAR"'
    mine = cli("exec-in-job", job, "--", "sh", "-c", script)
    assert mine.returncode == 0, mine.stderr
    account, cwd, here, variable = mine.stdout.splitlines()
    assert (account, here, variable) == ("pilot", "started", "v=from the submit")
    assert cwd.startswith(f"{pool.root}/agent/work/"), cwd
    terminal = cli("exec-in-job", "-t", job, "--", "tty")
    assert terminal.returncode == 0 and terminal.stdout.startswith("/dev/pts/"), terminal
    missing = cli("exec-in-job", job, "--", "/no/such/program")
    assert missing.returncode == 127 and "could not be started" in missing.stderr, missing

    flood = cli("exec-in-job", job, "--", "head", "-c", "1000000", "/dev/zero")
    assert (flood.returncode, len(flood.stdout)) == (124, CAP), flood.stderr
    assert f"the output reached the session's limit of {CAP} bytes" in flood.stderr
    # A tick a second keeps each session within the 15 s idle limit, even on a loaded machine.
    ticking = "while [ ! -e release ]; do echo tick; sleep 1; done"
    with ThreadPoolExecutor(2) as both:
        ticks = [both.submit(cli, "exec-in-job", job, "--", "sh", "-c", ticking) for _ in range(2)]
        wait_for(lambda: len(processes("sh", "-c", ticking)) == 2, "two sessions", log)
        # Both open at the server too (it counts them), not only started on the node.
        wait_for(lambda: _states(pool).count("open") == 2, "two open sessions", log)
        third = cli("exec-in-job", job, "--", "true")
        assert third.returncode == 6, (third.stderr, _states(pool))
        assert f"job {job} already has 2 sessions open" in third.stderr
        (Path(cwd) / "release").touch()
        for done in ticks:
            ended = done.result()
            assert ended.returncode == 0 and "tick" in ended.stdout, ended.stderr
    silent = cli("exec-in-job", job, "--", "sleep", "6001")
    assert silent.returncode == 124 and "the session was idle for 15 s" in silent.stderr
    wait_for(lambda: not processes("sleep", "6001"), "the silent command's end", log, timeout=30)

    refusals = [
        (["exec-in-job", job], 2, "name the command to run after --"),
        (["exec-in-job", str(cluster), "--", "true"], 2, "names a cluster; name one job"),
        (["exec-in-job", "x.y", "--", "true"], 2, "'x.y' is not a job id"),
        (["exec-in-job", f"{cluster + 1}.0", "--", "true"], 3, "does not exist"),
        (["exec-in-job", idle, "--", "true"], 6, f"job {idle} is IDLE, not RUNNING"),
    ]
    for args, code, sentence in refusals:
        refused = cli(*args)
        assert (refused.returncode, sentence in refused.stderr) == (code, True), refused

    shell = cli("ssh-to-job", job, stdin='echo "u=$(id -un)"\ntouch stop\nsleep 600\n')
    assert shell.returncode == 6, shell.stderr
    assert "u=pilot" in shell.stdout and f"job {job} ended; the session is closed" in shell.stderr

    listed = pool.cli("sessions", "--json")
    rows = [(r["job"], r["state"], (r["end_reason"] or "").split(":")[0], r["exit_code"])
            for r in json.loads(listed.stdout)]  # fmt: skip
    assert rows == [
        (job, "ended", "exit", 0),
        (job, "ended", "exit", 0),
        (job, "ended", "cannot-start", None),
        (job, "ended", "limit", None),
        (job, "ended", "exit", 0),
        (job, "ended", "exit", 0),
        (job, "refused", "Conflict", None),
        (job, "ended", "limit", None),
        (str(cluster), "refused", "BadInput", None),
        ("x.y", "refused", "BadInput", None),
        (f"{cluster + 1}.0", "refused", "NotFound", None),
        (idle, "refused", "Conflict", None),
        (job, "ended", "job-ended", None),
    ]


def _states(pool: Pool) -> list[str]:
    """The state of every session of the pool, as the admin lists them."""
    return [row["state"] for row in json.loads(pool.cli("sessions", "--json").stdout)]
