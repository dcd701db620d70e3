"""pilotage-exec end to end: real accounts, sudo, the installed switch, the three modes."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

from switch_site import Credentials, Site, pilot_file, run_switch


def test_setuid_maps_alice_and_bob(site: Site, creds: Credentials) -> None:
    wrapper = site.installs["setuid"]
    alice = run_switch(wrapper, ["--", "id", "-un"], user=creds.made["alice"])
    assert (alice.returncode, alice.stdout, alice.stderr) == (0, "alice\n", "")
    # Bob is mapped by the grid-mapfile, not by a [[map]] rule.
    bob = run_switch(wrapper, ["--", "id", "-un"], user=creds.made["bob"])
    assert (bob.returncode, bob.stdout) == (0, "bob\n")


def test_log_only_runs_as_the_caller(site: Site, creds: Credentials) -> None:
    result = run_switch(site.installs["logonly"], ["--", "id", "-un"], user=creds.made["alice"])
    assert (result.returncode, result.stdout) == (0, "pilot\n")
    record = site.audit("logonly")[-1]
    assert record["account"] == "alice" and record["mode"] == "log-only"
    assert record["caller"] == "pilot" and record["user"] == "/O=Example/CN=Alice"


def test_token_maps_a_group_to_a_stable_pool_account(site: Site, creds: Credentials) -> None:
    wrapper = site.installs["setuid"]
    first = run_switch(wrapper, ["--", "id", "-un"], user=creds.made["carol-token"])
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("cms")
    again = run_switch(wrapper, ["--", "id", "-un"], user=creds.made["carol-token"])
    assert again.stdout == first.stdout
    other = creds.token("dave", ("/cms",))
    assert run_switch(wrapper, ["--", "id", "-un"], user=other).stdout not in ("", first.stdout)


def test_token_subject_rule(site: Site, creds: Credentials) -> None:
    token = creds.made["alice-token"]
    result = run_switch(site.installs["setuid"], ["--", "id", "-un"], user=token)
    assert (result.returncode, result.stdout) == (0, "alice\n")


def test_payload_exit_code_passes_through(site: Site, creds: Credentials) -> None:
    wrapper = site.installs["setuid"]
    result = run_switch(wrapper, ["--", "sh", "-c", "exit 7"], user=creds.made["alice"])
    assert result.returncode == 7
    result = run_switch(wrapper, ["--linger", "--", "sh", "-c", "exit 7"], user=creds.made["alice"])
    assert result.returncode == 7


def test_linger_reports_a_colliding_exit_code_as_204(site: Site, creds: Credentials) -> None:
    wrapper = site.installs["setuid"]
    argv = ["--linger", "--", "sh", "-c", "exit 202"]
    result = run_switch(wrapper, argv, user=creds.made["alice"])
    assert result.returncode == 204
    record = site.audit("setuid")[-1]
    assert record["event"] == "exit" and record["exit"] == 204
    assert {"cpu_user_s", "cpu_sys_s", "wall_s", "max_rss_kb"} <= set(record)


def test_environment_is_cleaned(site: Site, creds: Credentials, workdir: Path) -> None:
    env = {"LD_PRELOAD": "/tmp/evil.so", "LANG": "C.UTF-8", "SECRET": "x", "PILOTAGE_JOB_X": "1"}
    for via_sudo, wrapper in ((True, site.installs["setuid"]), (False, site.installs["logonly"])):
        (workdir / "x509_proxy").unlink(missing_ok=True)
        shutil.rmtree(workdir / "job", ignore_errors=True)  # the setuid run's, alice's
        result = run_switch(
            wrapper, ["--", "env"], user=creds.made["alice"], target=workdir, sudo=via_sudo,
            extra_env={**env, "PATH": "/evil/bin:/usr/bin:/bin"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen = dict(line.split("=", 1) for line in result.stdout.splitlines())
        assert "LD_PRELOAD" not in seen and "SECRET" not in seen
        assert seen["PATH"] == "/usr/local/bin:/usr/bin:/bin"
        assert seen["LANG"] == "C.UTF-8"
        assert seen["X509_USER_PROXY"] == f"{workdir}/x509_proxy"
        assert not any(name.startswith("PILOTAGE_EXEC_") for name in seen)
    assert seen["USER"] == seen["LOGNAME"] == "pilot"  # the log-only run
    assert seen["HOME"] == pwd.getpwnam("pilot").pw_dir


def test_credential_copy_belongs_to_the_target(
    site: Site, creds: Credentials, workdir: Path
) -> None:
    result = run_switch(
        site.installs["setuid"], ["--", "cat", f"{workdir}/x509_proxy"],
        user=creds.made["alice"], target=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    copy = os.stat(workdir / "x509_proxy")
    assert copy.st_uid == pwd.getpwnam("alice").pw_uid
    assert stat.S_IMODE(copy.st_mode) == 0o600
    assert result.stdout.encode() == creds.made["alice"].read_bytes()


def test_refresh_keeps_the_identity(site: Site, creds: Credentials, workdir: Path) -> None:
    wrapper = site.installs["setuid"]
    first = run_switch(wrapper, ["--", "true"], user=creds.made["alice"], target=workdir)
    assert first.returncode == 0, first.stderr
    newer = creds.proxy("Alice", name="alice-newer", lifetime_s=7200)
    refreshed = run_switch(wrapper, ["--refresh"], user=newer, target=workdir)
    assert (refreshed.returncode, refreshed.stderr) == (0, "")
    assert (workdir / "x509_proxy").read_bytes() == newer.read_bytes()
    # Bob maps to another account, whose copy would not be bob's file: refused as such.
    other = run_switch(wrapper, ["--refresh"], user=creds.made["bob"], target=workdir)
    assert other.returncode == 201
    assert "belongs to uid" in other.stderr
    # A different person mapped to the same account: the identity check refuses it.
    alias = creds.token("alice")
    renamed = run_switch(wrapper, ["--refresh"], user=alias, target=workdir)
    assert renamed.returncode == 201


def test_refresh_refuses_another_identity_of_the_same_account(
    site: Site, creds: Credentials, workdir: Path
) -> None:
    wrapper = site.installs["setuid"]
    token = creds.made["alice-token"]
    assert run_switch(wrapper, ["--", "true"], user=token, target=workdir).returncode == 0
    # Alice's proxy also maps to alice, but the copy is a token for another identity.
    (workdir / "x509_proxy").unlink(missing_ok=True)
    proxy_copy = pilot_file(workdir / "x509_proxy", creds.made["bob"].read_bytes(), owner="alice")
    assert proxy_copy.exists()
    result = run_switch(wrapper, ["--refresh"], user=creds.made["alice"], target=workdir)
    assert result.returncode == 201
    assert "a refresh must keep the identity" in result.stderr
