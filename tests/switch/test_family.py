"""Process families: one ``--signal`` reaches every process of a job, and only those."""

from __future__ import annotations

import json
import marshal
import os
import pwd
import secrets
import signal
import subprocess
from pathlib import Path

from switch_site import Credentials, Site, run_switch, wait_for


def _processes(uid: int, marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        state = next(line for line in status.splitlines() if line.startswith("State:"))
        argv = cmdline.split(b"\0")
        if (
            int(uid_line.split()[1]) == uid
            and argv[:2] == [b"sleep", marker.encode()]
            and ("Z" not in state)
        ):
            found.append(int(name))
    return found


def test_one_signal_kills_a_family_of_forked_children(site: Site, creds: Credentials) -> None:
    job = f"job-{secrets.token_hex(4)}"
    marker = f"{300 + secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    alice = pwd.getpwnam("alice").pw_uid
    script = f"sleep {marker} & sleep {marker} & (sleep {marker} &); setsid sleep {marker} & wait"
    env = {
        "PATH": "/usr/bin:/bin",
        "PILOTAGE_EXEC_USER_CREDENTIAL": str(creds.made["alice"]),
        "PILOTAGE_EXEC_JOB_ID": job,
    }
    job_process = subprocess.Popen(
        ["sudo", "-n", str(site.installs["setuid"]), "--", "sh", "-c", script],
        env=env, user="pilot", group="pilot", extra_groups=[],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    pilot_own = subprocess.Popen(["sleep", marker], user="pilot", group="pilot")
    try:
        wait_for(lambda: len(_processes(alice, marker)) == 4)
        record = site.audit("setuid")[-1]
        assert record["job"] == record["family"] == job
        result = run_switch(
            site.installs["setuid"], ["--signal", "KILL", "--job", job], user=creds.made["alice"]
        )
        assert (result.returncode, result.stderr) == (0, "")
        # The escapee that called setsid is caught only by the cgroup, when there is one.
        survivors = 0 if record.get("cgroup") else 1
        wait_for(lambda: len(_processes(alice, marker)) == survivors)
        job_process.wait(10)
        assert pilot_own.poll() is None, "the pilot's own process must not be signalled"
        signalled = [r for r in site.audit("setuid") if r.get("family") == job]
        assert signalled[-2]["event"] == "signal" and signalled[-2]["signalled"] >= 3
        assert signalled[-1]["event"] == "end"
    finally:
        pilot_own.kill()
        pilot_own.wait()
        for pid in _processes(alice, marker):
            os.kill(pid, signal.SIGKILL)
        job_process.kill()
        job_process.communicate()


def test_signal_for_another_account_is_refused(site: Site, creds: Credentials) -> None:
    job = f"job-{secrets.token_hex(4)}"
    started = run_switch(
        site.installs["setuid"], ["--linger", "--", "true"], user=creds.made["alice"], job=job
    )
    assert started.returncode == 0, started.stderr
    result = run_switch(
        site.installs["setuid"], ["--signal", "TERM", "--job", job], user=creds.made["bob"]
    )
    assert result.returncode == 201
    assert f"The job {job} does not run as bob." in result.stderr


def test_signal_unknown_job_and_bad_signal(site: Site, creds: Credentials) -> None:
    wrapper, alice = site.installs["setuid"], creds.made["alice"]
    result = run_switch(wrapper, ["--signal", "TERM", "--job", "never-started"], user=alice)
    assert result.returncode == 201
    assert "No job never-started was started by pilotage-exec on this node." in result.stderr
    result = run_switch(wrapper, ["--signal", "NOPE", "--job", "x"], user=alice)
    assert result.returncode == 201
    assert "The signal 'NOPE' is not a signal name or number." in result.stderr


def test_a_family_an_earlier_switch_recorded_in_json_is_still_reached(
    site: Site, creds: Credentials
) -> None:
    job = f"job-{secrets.token_hex(4)}"
    marker = f"{300 + secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    alice = pwd.getpwnam("alice").pw_uid
    env = {"PATH": "/usr/bin:/bin", "PILOTAGE_EXEC_JOB_ID": job,
           "PILOTAGE_EXEC_USER_CREDENTIAL": str(creds.made["alice"])}  # fmt: skip
    job_process = subprocess.Popen(
        ["sudo", "-n", str(site.installs["setuid"]), "--", "sh", "-c", f"sleep {marker}"],
        env=env, user="pilot", group="pilot", extra_groups=[], stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: len(_processes(alice, marker)) == 1)
        jobs = Path(f"/var/tmp/pilotage-exec-test-{site.root.name}-setuid/jobs")
        entry = jobs / str(pwd.getpwnam("pilot").pw_uid) / f"{job}.marshal"
        # As the switch before this one kept it: JSON, named .json (a reinstall mid-job).
        entry.with_suffix(".json").write_text(json.dumps(marshal.loads(entry.read_bytes())))
        entry.unlink()
        result = run_switch(
            site.installs["setuid"], ["--signal", "KILL", "--job", job], user=creds.made["alice"]
        )
        assert (result.returncode, result.stderr) == (0, "")
        wait_for(lambda: not _processes(alice, marker))
        assert not list(entry.parent.glob(f"{job}.*")), "the family ended with its entry"
        assert [r["event"] for r in site.audit("setuid") if r.get("family") == job][-1] == "end"
    finally:
        for pid in _processes(alice, marker):
            os.kill(pid, signal.SIGKILL)
        job_process.kill()
        job_process.wait()
