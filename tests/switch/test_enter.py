"""``--enter``: a command inside a running job, as its owner, in its family; every refusal.

A job is started as in tests/switch/test_family.py (a family keyed by a fresh id, through
sudo, as ``pilot``); sessions enter it through sudo with the status channel as their
lifeline (``sudo -C``), as the agent does (pilot/sessionproc.py).
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from switch_site import Credentials, Site, run_switch, wait_for


@dataclass
class Job:
    """A running job of Alice's: its family key, its process, its target directory."""

    key: str
    marker: str
    process: subprocess.Popen[bytes]
    target: Path


@pytest.fixture
def job(site: Site, creds: Credentials, workdir: Path) -> Iterator[Job]:
    key = f"job-{secrets.token_hex(4)}"
    marker = f"{400 + secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    env = {
        "PATH": "/usr/bin:/bin",
        "PILOTAGE_EXEC_USER_CREDENTIAL": str(creds.made["alice"]),
        "PILOTAGE_EXEC_TARGET_DIR": str(workdir),
        "PILOTAGE_EXEC_JOB_ID": key,
    }
    process = subprocess.Popen(
        ["sudo", "-n", str(site.installs["setuid"]), "--", "sleep", marker],
        env=env, user="pilot", group="pilot", extra_groups=[], cwd="/",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    alice = pwd.getpwnam("alice").pw_uid
    try:
        wait_for(lambda: bool(_processes(alice, "sleep", marker)) or process.poll() is not None)
        assert process.poll() is None, process.communicate()[1]
        yield Job(key, marker, process, workdir)
    finally:
        run_switch(
            site.installs["setuid"], ["--signal", "KILL", "--job", key], user=creds.made["alice"]
        )
        process.kill()
        process.communicate()


def _processes(uid: int, *argv: str) -> list[int]:
    """Live processes of ``uid`` whose command line starts with ``argv``."""
    found = []
    want = [a.encode() for a in argv]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            if "\nState:\tZ" in Path(f"/proc/{name}/status").read_text():
                continue
        except OSError:
            continue
        if [os.path.basename(cmdline[0]), *cmdline[1 : len(want)]] == want:
            found.append(int(name))
    return found


def _enter(
    site: Site, user: Path, key: str, command: list[str], *, target: Path | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start ``--enter`` as ``pilot``; the process and the status channel's read end."""
    read_fd, write_fd = os.pipe()
    env = {
        "PATH": "/usr/bin:/bin",
        "PILOTAGE_EXEC_USER_CREDENTIAL": str(user),
        "PILOTAGE_EXEC_STATUS_FD": str(write_fd),
    }
    if target is not None:
        env["PILOTAGE_EXEC_TARGET_DIR"] = str(target)
    wrapper = str(site.installs["setuid"])
    process = subprocess.Popen(
        ["sudo", "-n", "-C", str(write_fd + 1), wrapper, "--enter", "--job", key, "--", *command],
        env=env, user="pilot", group="pilot", extra_groups=[], cwd="/", pass_fds=(write_fd,),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write_fd)
    return process, read_fd


def _line(fd: int) -> str:
    data = b""
    while b"\n" not in data and (chunk := os.read(fd, 4096)):
        data += chunk
    return data.decode()


def test_enter_runs_as_the_owner_in_the_job_family(
    site: Site, creds: Credentials, job: Job
) -> None:
    script = 'id -un; echo "proxy=$X509_USER_PROXY"; cat /proc/self/cgroup'
    process, status = _enter(
        site, creds.made["alice"], job.key, ["sh", "-c", script], target=job.target
    )
    try:
        assert _line(status).startswith("0 started ")
        out, err = process.communicate(timeout=30)
    finally:
        os.close(status)
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "alice"
    assert lines[1] == f"proxy={job.target}/x509_proxy"
    records = [r for r in site.audit("setuid") if r.get("family") == job.key]
    started = next(r for r in records if r["event"] == "exec")
    if started.get("cgroup"):  # the session is in the job's cgroup, so it dies with the job
        assert any(line.endswith(f"/{job.key}") for line in lines[2:]), lines
    enter, leave = records[-2:]
    assert (enter["event"], enter["account"], enter["job"]) == ("enter", "alice", job.key)
    assert (leave["event"], leave["exit"], leave.get("cut")) == ("leave", 0, None)
    assert "wall_s" in leave


def test_closing_the_lifeline_kills_the_whole_session(
    site: Site, creds: Credentials, job: Job
) -> None:
    marker = f"{1500 + secrets.randbelow(1000)}"
    # A child in a process group of its own (as a shell's job control makes) is killed too;
    # one that left the session (setsid) is not, and without a cgroup lives on.
    own_group = f'perl -e \'setpgrp(0, 0); exec "sleep", "{marker}.2"\''
    script = f"setsid -f sleep {marker}.1 >/dev/null 2>&1; {own_group} & wait"
    process, status = _enter(site, creds.made["alice"], job.key, ["sh", "-c", script])
    alice = pwd.getpwnam("alice").pw_uid
    assert _line(status).startswith("0 started ")
    wait_for(lambda: len(_processes(alice, "sleep", f"{marker}.2")) == 1)
    os.close(status)  # the session is over
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGKILL
    wait_for(lambda: not _processes(alice, "sleep", f"{marker}.2"))
    leave = [r for r in site.audit("setuid") if r.get("family") == job.key][-1]
    assert (leave["event"], leave["cut"]) == ("leave", True)
    assert _processes(alice, "sleep", job.marker), "the job itself must go on"
    for pid in _processes(alice, "sleep", f"{marker}.1"):  # escaped the session by setsid
        os.kill(pid, signal.SIGKILL)


def test_enter_refusals(site: Site, creds: Credentials, job: Job) -> None:
    wrapper, alice = site.installs["setuid"], creds.made["alice"]
    cases = [
        (["--enter", "--", "id"], "--enter needs --job ID."),
        (["--enter", "--job", job.key], "No command given."),
        (["--enter", "--linger", "--job", job.key, "--", "id"], "--enter takes no linger flag"),
        (["--enter", "--job", job.key, "--", "id"], "--enter needs PILOTAGE_EXEC_STATUS_FD"),
    ]
    for args, message in cases:
        result = run_switch(wrapper, args, user=alice)
        assert (result.returncode, message in result.stderr) == (201, True), result.stderr

    def refused(user: Path, key: str) -> str:
        process, status = _enter(site, user, key, ["id"])
        try:
            line = _line(status)
            process.communicate(timeout=30)
        finally:
            os.close(status)
        assert process.returncode == 201 and line.startswith("201 "), (line, process.returncode)
        return line

    assert "No job never-started-x was started" in refused(alice, "never-started-x")
    assert f"The job {job.key} does not run as bob." in refused(creds.made["bob"], job.key)
    ended = f"job-{secrets.token_hex(4)}"
    run = run_switch(wrapper, ["--linger", "--", "true"], user=alice, job=ended)
    assert run.returncode == 0, run.stderr
    assert f"The job {ended} has no live process left" in refused(alice, ended)
    refusals = [r for r in site.audit("setuid") if r.get("event") == "refused"]
    assert f"The job {job.key} does not run as bob." in [r["message"] for r in refusals]


def test_enter_is_refused_in_namespace_mode(site: Site, creds: Credentials) -> None:
    read_fd, write_fd = os.pipe()
    try:
        result = run_switch(
            site.installs["namespace"], ["--enter", "--job", "any", "--", "id"],
            user=creds.made["alice"], sudo=False, pass_fds=(write_fd,),
            extra_env={"PILOTAGE_EXEC_STATUS_FD": str(write_fd)},
        )  # fmt: skip
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert result.returncode == 201, result.stderr
    assert "--enter is not available in namespace mode" in result.stderr
