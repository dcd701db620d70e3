"""Findings 9 and 3 of the security review: the paths a pilot names.

Finding 9: the switch opened the pilot's paths as root before checking them, an oracle
for root-only files and a way to open device nodes. It opens them with the caller's
rights now, never following a link, blocking or taking a terminal, and checks the open
file before reading it.

Finding 3: the claim's directory was 1733 while the job's directory was made in it, so
another account could plant files there and get the job held. The claim's directory is
0711 and the pilot's, always; the switch makes ``job`` inside it as the target account,
and refuses a ``job`` planted there.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .switch_helpers import Credentials, Site, own_dir, refused, run_switch, work_dir


@pytest.fixture(scope="module")
def wrapper(ssite: Site) -> Path:
    """A setuid switch, without linger."""
    return ssite.install("paths", "setuid")


def test_root_only_files_are_neither_read_nor_found(
    ssite: Site, screds: Credentials, wrapper: Path
) -> None:
    secret_dir = own_dir(ssite.root / "root-only", "root", 0o700)
    (secret_dir / "present").write_text("x")
    answers = []
    for path in ("/etc/shadow", secret_dir / "present", secret_dir / "absent"):
        result = run_switch(wrapper, ["--", "true"], user=Path(path))
        refused(result, 201, f"The user credential {path} cannot be opened (Permission denied).")
        answers.append(result.stderr.replace(str(path), "PATH"))
    assert answers[1] == answers[2], "a present and an absent file must look the same"
    missing = run_switch(wrapper, ["--", "true"], user=ssite.root / "nowhere")
    refused(missing, 201, "cannot be opened (No such file or directory).")
    hidden = run_switch(wrapper, ["--", "true"], user=screds.made["alice"], target=secret_dir)
    refused(hidden, 201, f"The target directory {secret_dir} cannot be opened (Permission denied).")


def test_devices_and_fifos_are_not_read(ssite: Site, screds: Credentials, wrapper: Path) -> None:
    fifo = work_dir(ssite, "fifos") / "fifo"
    os.mkfifo(fifo, 0o600)
    pilot = pwd.getpwnam("pilot")
    os.chown(fifo, pilot.pw_uid, pilot.pw_gid)
    for path in (Path("/dev/zero"), fifo):
        # A blocking open or read would hang here until the timeout: it must not.
        result = run_switch(wrapper, ["--", "true"], user=path, timeout=60)
        refused(result, 201, f"The user credential {path} is not a regular file.")
    pilot_dev = run_switch(wrapper, ["--", "true"], user=screds.made["alice"],
                           extra_env={"PILOTAGE_EXEC_PILOT_CREDENTIAL": "/dev/zero"})  # fmt: skip
    refused(pilot_dev, 201, "The pilot credential /dev/zero is not a regular file.")


def test_no_other_account_can_write_in_the_claim_directory(
    ssite: Site, screds: Credentials, wrapper: Path
) -> None:
    claim = work_dir(ssite, "claim-open", mode=0o1733)
    result = run_switch(wrapper, ["--", "true"], user=screds.made["alice"], target=claim)
    refused(result, 201, "must belong to the caller or the target account and be writable by "
            "nobody else (it is uid")  # fmt: skip
    claim = work_dir(ssite, "claim", mode=0o711)
    script = "echo ready; read _"
    job = subprocess.Popen(
        ["sudo", "-n", str(wrapper), "--", "sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "PILOTAGE_EXEC_USER_CREDENTIAL": str(screds.made["alice"]),
             "PILOTAGE_EXEC_TARGET_DIR": str(claim)},
        user="pilot", group="pilot", extra_groups=[], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert job.stdout is not None and job.stdout.readline() == b"ready\n"
        inside = claim / "job"
        st = inside.lstat()
        alice = pwd.getpwnam("alice")
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert (st.st_uid, st.st_gid) == (alice.pw_uid, alice.pw_gid)
        for name in ("x509_proxy", "out", "job/out"):
            planted = subprocess.run(["sh", "-c", f"echo x > {claim / name}"], user="bob",
                                     capture_output=True, text=True)  # fmt: skip
            assert planted.returncode != 0 and "Permission denied" in planted.stderr, name
        assert sorted(os.listdir(claim)) == ["job", "x509_proxy"]
    finally:
        job.communicate(b"\n", timeout=60)
    assert job.returncode == 0


@pytest.mark.parametrize("planted", ["symlink", "file", "pilot-dir"])
def test_a_planted_job_entry_is_refused(
    ssite: Site, screds: Credentials, wrapper: Path, planted: str
) -> None:
    claim = work_dir(ssite, f"claim-{planted}")
    shutil.rmtree(claim / "job", ignore_errors=True)
    target = own_dir(ssite.root / "elsewhere", "pilot", 0o755)
    entry = claim / "job"
    if planted == "symlink":
        entry.symlink_to(target)
    elif planted == "file":
        entry.write_text("")
    else:
        own_dir(entry, "pilot")
    pilot = pwd.getpwnam("pilot")
    os.lchown(entry, pilot.pw_uid, pilot.pw_gid)
    result = run_switch(wrapper, ["--", "true"], user=screds.made["alice"], target=claim)
    refused(result, 201, "The job directory job in the target directory exists and is not a "
            "directory of the target account")  # fmt: skip
    assert os.stat(target).st_uid == pilot.pw_uid, "a link is never followed"
