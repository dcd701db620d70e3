"""namespace mode: no privilege; the payload cannot see the pilot's files or processes."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
from switch_site import Credentials, Site, pilot_file, run_switch


def _run(site: Site, creds: Credentials, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return run_switch(
        site.installs["namespace"], ["--", *argv], user=creds.made["alice"],
        pilot=creds.made["pilot"], sudo=False,
    )  # fmt: skip


@pytest.fixture
def namespaces(
    site: Site, creds: Credentials, require_service: Callable[[str, str], NoReturn]
) -> None:
    """Skip (fail under CI) when this kernel refuses unprivileged user namespaces."""
    probe = _run(site, creds, ["true"])
    if probe.returncode == 202 and "user namespaces" in probe.stderr:
        require_service("unprivileged user namespaces", probe.stderr.strip())
    assert probe.returncode == 0, probe.stderr


@pytest.mark.usefixtures("namespaces")
def test_payload_runs_as_the_caller(site: Site, creds: Credentials) -> None:
    result = _run(site, creds, ["id", "-un"])
    assert (result.returncode, result.stdout) == (0, "pilot\n")
    record = site.audit_unprivileged("namespace")[-1]
    assert record["mode"] == "namespace" and record["account"] == "alice"


@pytest.mark.usefixtures("namespaces")
def test_payload_cannot_read_the_pilot_credential(site: Site, creds: Credentials) -> None:
    path = creds.made["pilot"]
    assert path.read_bytes().startswith(b"-----BEGIN")
    result = _run(site, creds, ["sh", "-c", f"cat {path}; ls -A {path.parent.parent}"])
    assert "No such file or directory" in result.stderr
    assert result.stdout == ""  # the hidden directory is an empty tmpfs


@pytest.mark.usefixtures("namespaces")
def test_pilot_credential_outside_hidden_dirs_is_covered(
    site: Site, creds: Credentials, workdir: Path
) -> None:
    outside = pilot_file(workdir / "pilot-proxy", creds.made["pilot"].read_bytes())
    result = run_switch(
        site.installs["namespace"], ["--", "cat", str(outside)], user=creds.made["alice"],
        pilot=outside, sudo=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "")  # /dev/null over the file


@pytest.mark.usefixtures("namespaces")
def test_payload_cannot_signal_the_pilot(site: Site, creds: Credentials) -> None:
    pilot_process = subprocess.Popen(["sleep", "120"], user="pilot", group="pilot")
    try:
        result = _run(site, creds, ["sh", "-c", f"kill -9 {pilot_process.pid}; echo $$"])
        assert "No such process" in result.stderr
        assert result.stdout == "2\n"  # a PID namespace of its own, under its init
        assert pilot_process.poll() is None
    finally:
        pilot_process.kill()
        pilot_process.wait()


@pytest.mark.usefixtures("namespaces")
def test_payload_exit_code_and_collision(site: Site, creds: Credentials) -> None:
    assert _run(site, creds, ["sh", "-c", "exit 9"]).returncode == 9
    assert _run(site, creds, ["sh", "-c", "exit 203"]).returncode == 204


@pytest.mark.usefixtures("namespaces")
def test_signal_reaches_every_process_of_a_namespace_job(site: Site, creds: Credentials) -> None:
    job = f"ns-{secrets.token_hex(4)}"
    process = subprocess.Popen(
        [str(site.installs["namespace"]), "--", "sh", "-c", "sleep 120 & sleep 120 & wait"],
        env={"PATH": "/usr/bin:/bin", "PILOTAGE_EXEC_USER_CREDENTIAL": str(creds.made["alice"]),
             "PILOTAGE_EXEC_JOB_ID": job},
        user="pilot", group="pilot", extra_groups=[],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        pilot = pwd.getpwnam("pilot").pw_uid  # namespace mode: the payload runs as the pilot
        deadline = time.monotonic() + 60
        while len(_sleeping(pilot)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # both children started (the signal must reach both)
        assert len(_sleeping(pilot)) >= 2
        result = run_switch(
            site.installs["namespace"], ["--signal", "TERM", "--job", job],
            user=creds.made["alice"], sudo=False,
        )  # fmt: skip
        assert (result.returncode, result.stderr) == (0, "")
        process.communicate(timeout=10)
        assert process.returncode == 128 + 15  # the shell died of SIGTERM, its init said so
    finally:
        process.kill()
        process.communicate()


def _sleeping(uid: int) -> list[int]:
    """The live ``sleep 120`` processes of ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if not name.isdigit() or os.stat(f"/proc/{name}").st_uid != uid:
                continue
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        if cmdline == b"sleep\x00120\x00" and "\nState:\tZ" not in state:
            found.append(int(name))
    return found
