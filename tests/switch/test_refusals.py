"""Every refusal of pilotage-exec: its exit code and its own message (201, 202, 203)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from switch_site import Credentials, Site, pilot_file, run_switch

from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.x509_testing import make_pki


def refused(result: object, code: int, message: str) -> None:
    assert result.returncode == code, result.stderr  # type: ignore[attr-defined]
    assert message in result.stderr, result.stderr  # type: ignore[attr-defined]


def test_caller_not_an_invoker(site: Site, creds: Credentials) -> None:
    result = run_switch(
        site.installs["logonly"], ["--", "true"], user=creds.made["alice"], sudo=False,
        as_user="bob",
    )  # fmt: skip
    refused(result, 203, "The account bob is not allowed to call pilotage-exec.")


def test_usage(site: Site) -> None:
    refused(run_switch(site.installs["setuid"], []), 201, "No command given.")
    refused(run_switch(site.installs["setuid"], ["--bogus"]), 201, "Unknown or incomplete option")
    refused(run_switch(site.installs["setuid"], ["--signal", "TERM"]), 201, "--signal needs --job")


def test_no_credential(site: Site) -> None:
    result = run_switch(site.installs["setuid"], ["--", "true"])
    refused(result, 201, "PILOTAGE_EXEC_USER_CREDENTIAL does not name the user credential file.")


def test_credential_of_another_account(site: Site, creds: Credentials, workdir: Path) -> None:
    # Readable by the pilot (else it could not even open it), but not the pilot's.
    stolen = pilot_file(workdir / "stolen", creds.made["alice"].read_bytes(), 0o644, "alice")
    result = run_switch(site.installs["setuid"], ["--", "true"], user=stolen)
    uid = pwd.getpwnam("alice").pw_uid
    refused(result, 201, f"The user credential {stolen} is owned by uid {uid}, not by the caller")


def test_credential_readable_by_others(site: Site, creds: Credentials, workdir: Path) -> None:
    loose = pilot_file(workdir / "loose", creds.made["alice"].read_bytes(), mode=0o644)
    result = run_switch(site.installs["setuid"], ["--", "true"], user=loose)
    refused(result, 201, "is open to group or others (mode 0644); it must be 0600 or 0400.")


def test_credential_symlink(site: Site, creds: Credentials, workdir: Path) -> None:
    link = workdir / "link"
    link.symlink_to(creds.made["alice"])
    os.lchown(link, pwd.getpwnam("pilot").pw_uid, -1)
    result = run_switch(site.installs["setuid"], ["--", "true"], user=link)
    refused(result, 201, f"The user credential {link} is a symbolic link.")


def test_credential_from_an_untrusted_ca(site: Site, workdir: Path, tmp_path: Path) -> None:
    other = make_pki(tmp_path, user_subject="CN=Alice,O=Example")
    cert, key = make_proxy(other.user.cert, other.user.key, [])
    forged = pilot_file(workdir / "forged", proxy_pem(cert, key, [other.user.cert]))
    result = run_switch(site.installs["setuid"], ["--", "true"], user=forged)
    refused(result, 201, "The user credential is not valid: The signature on")


def test_forged_token(site: Site, creds: Credentials, workdir: Path) -> None:
    header, claims, signature = creds.made["alice-token"].read_text().split(".")
    altered = pilot_file(workdir / "altered", f"{header}.{claims}.{signature[::-1]}".encode())
    result = run_switch(site.installs["setuid"], ["--", "true"], user=altered)
    refused(result, 201, "The token's signature does not verify")


def test_banned_dn(site: Site, creds: Credentials) -> None:
    result = run_switch(site.installs["setuid"], ["--", "true"], user=creds.made["mallory"])
    refused(result, 203, "Authorization denied: The DN '/O=Example/CN=Mallory' is banned.")
    assert site.audit("setuid")[-1]["exit"] == 203


def test_banned_group(site: Site, creds: Credentials) -> None:
    token = creds.token("eve", ("/cms", "/cms/banned"))
    result = run_switch(site.installs["setuid"], ["--", "true"], user=token)
    refused(result, 203, "The group '/cms/banned' is banned.")


def test_no_mapping(site: Site, creds: Credentials) -> None:
    result = run_switch(site.installs["setuid"], ["--", "true"], user=creds.made["nobody"])
    refused(result, 203, "No mapping rule matches '/O=Example/CN=Nobody'.")


def test_directory_not_searchable_by_the_target(
    site: Site, creds: Credentials, workdir: Path
) -> None:
    private = workdir / "private"
    private.mkdir(mode=0o700)
    script = private / "job.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    for path in (private, script):
        os.chown(path, pwd.getpwnam("pilot").pw_uid, -1)
    result = run_switch(site.installs["setuid"], ["--", str(script)], user=creds.made["alice"])
    refused(result, 201, f"The directory {private} is not searchable by alice")
    private.chmod(0o711)
    result = run_switch(site.installs["setuid"], ["--", str(script)], user=creds.made["alice"])
    assert (result.returncode, result.stdout) == (0, "hello\n")


def test_program_not_executable(site: Site, creds: Credentials, workdir: Path) -> None:
    script = pilot_file(workdir / "job.sh", b"#!/bin/sh\ntrue\n", mode=0o744)
    result = run_switch(site.installs["setuid"], ["--", str(script)], user=creds.made["alice"])
    refused(result, 201, f"The program {script} is not executable by alice.")


def test_program_not_in_path(site: Site, creds: Credentials) -> None:
    result = run_switch(
        site.installs["setuid"], ["--", "no-such-program"], user=creds.made["alice"]
    )
    refused(result, 201, "The program no-such-program is not in the configured PATH")


def test_copy_never_overwrites_a_file_of_someone_else(
    site: Site, creds: Credentials, workdir: Path
) -> None:
    pilot_file(workdir / "x509_proxy", b"the pilot's", owner="bob")
    result = run_switch(
        site.installs["setuid"], ["--", "true"], user=creds.made["alice"], target=workdir
    )
    refused(result, 201, "refusing to overwrite it")
    assert (workdir / "x509_proxy").read_bytes() == b"the pilot's"


def test_target_dir_of_another_account(site: Site, creds: Credentials) -> None:
    result = run_switch(
        site.installs["setuid"], ["--", "true"], user=creds.made["alice"], target=Path("/etc")
    )
    refused(result, 201, "The target directory /etc must belong to the caller or the target")


def test_both_credentials_required(site: Site, creds: Credentials) -> None:
    wrapper = site.installs.get("strict") or site.install("strict", "setuid", require_pilot=True)
    alice = creds.made["alice"]
    result = run_switch(wrapper, ["--", "id", "-un"], user=alice)
    refused(result, 203, "This site requires the pilot credential as well.")
    result = run_switch(wrapper, ["--", "id", "-un"], user=alice, pilot=creds.made["bob"])
    refused(result, 203, "The pilot '/O=Example/CN=Bob' is not an accepted pilot.")
    result = run_switch(wrapper, ["--", "id", "-un"], user=alice, pilot=creds.made["pilot"])
    assert (result.returncode, result.stdout) == (0, "alice\n")
    assert site.audit("strict")[-1]["pilot"] == "/O=Example/CN=Pilot"


@pytest.mark.parametrize("fault", ["config-writable", "ca-not-root"])
def test_unsafe_site_files(site: Site, creds: Credentials, fault: str) -> None:
    name = f"unsafe-{fault}"
    wrapper = site.installs.get(name) or site.install(name, "setuid")
    config = site.root / f"exec-{name}.toml"
    if fault == "config-writable":
        config.chmod(0o664)
        message = f"The config file {config} is writable by group or others."
    else:
        trust = site.root / f"certificates-{name}"
        shutil.copytree(site.root / "certificates", trust, symlinks=True)
        os.chown(trust, pwd.getpwnam("pilot").pw_uid, -1)
        config.write_text(config.read_text().replace(f'{site.root}/certificates"', f'{trust}"'))
        message = f"The CA directory {trust} is owned by uid"
    result = run_switch(wrapper, ["--", "true"], user=creds.made["alice"])
    refused(result, 202, message)


def _status_channel(
    site: Site, user: Path, argv: list[str]
) -> tuple[subprocess.Popen[str], bytes, float]:
    """Start the switch with a status pipe; what the pipe said, and when it closed."""
    read_fd, write_fd = os.pipe()
    wrapper = site.installs["setuid"]
    env = {
        "PATH": "/usr/bin:/bin",
        "PILOTAGE_EXEC_USER_CREDENTIAL": str(user),
        "PILOTAGE_EXEC_STATUS_FD": str(write_fd),
    }
    started = time.monotonic()
    process = subprocess.Popen(
        ["sudo", "-n", "-C", str(write_fd + 1), str(wrapper), *argv],
        env=env, user="pilot", group="pilot", extra_groups=[], pass_fds=(write_fd,),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as channel:
        said = channel.readline()  # sudo keeps a copy open: a line, not end-of-file
    return process, said, time.monotonic() - started


@pytest.mark.parametrize("linger", ["--linger", "--no-linger"])
def test_status_fd_reports_a_refusal(site: Site, creds: Credentials, linger: str) -> None:
    process, said, _ = _status_channel(site, creds.made["mallory"], [linger, "--", "true"])
    process.communicate(timeout=30)
    assert process.returncode == 203
    assert said.startswith(b"203 Authorization denied: The DN")


@pytest.mark.parametrize("linger", ["--linger", "--no-linger"])
def test_status_fd_closes_once_the_payload_runs(
    site: Site, creds: Credentials, linger: str
) -> None:
    # The payload waits for the test's word: the caller must hear of its start before.
    go = site.root / f"go-{secrets.token_hex(4)}"
    payload = f"while [ ! -e {go} ]; do sleep 0.05; done; exit 5"
    process, said, _ = _status_channel(
        site, creds.made["alice"], [linger, "--", "sh", "-c", payload]
    )
    assert said.startswith(b"0 started ")
    assert process.poll() is None
    go.touch()
    process.communicate(timeout=60)
    assert process.returncode == 5


def test_status_fd_reports_an_exec_failure(site: Site, creds: Credentials, workdir: Path) -> None:
    bad = pilot_file(workdir / "bad", b"\x7fELF garbage", mode=0o755)
    process, said, _ = _status_channel(site, creds.made["alice"], ["--linger", "--", str(bad)])
    process.communicate(timeout=30)
    assert process.returncode == 201
    assert said.startswith(b"201 The program") and b"cannot be executed" in said


def test_a_bad_job_id_or_name_changes_nothing(
    site: Site, creds: Credentials, workdir: Path
) -> None:
    for variable, what in (("PILOTAGE_EXEC_JOB_ID", "job id"),
                           ("PILOTAGE_EXEC_JOB_NAME", "job name")):  # fmt: skip
        result = run_switch(site.installs["setuid"], ["--", "true"], user=creds.made["alice"],
                            target=workdir, extra_env={variable: "../1.0"})  # fmt: skip
        refused(result, 201, f"The {what} '../1.0' is not 1-128 letters, digits, '.', '_', '-'.")
    assert os.listdir(workdir) == [], "refused before the job directory or the copy is made"
