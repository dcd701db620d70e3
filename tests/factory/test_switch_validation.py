"""The pilot's validation of the switch, for real (seed 000 §3.2, §4.3).

As root (CI): the real switch installed as in tests/switch (setuid and log-only, a sudo
rule for the account ``pilot``, a local policy), and
``validate.py`` run as ``pilot`` on signed pilot files, exactly as the bootstrap runs it.
The pilot's own credential is a token of the site's trusted issuer (subject ``pilot``,
group ``/cms``: an accepted pilot, mapped to a cms pool account).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pilotage.credentials.tokens import Role
from pilotage.factory.entries import parse_config
from pilotage.factory.manifest import publish
from pilotage.factory.pilotfiles import PilotConfig, PilotTerms, entry_files
from pilotage.factory.sitepolicy import Answers
from switch.switch_site import Site, ensure_accounts, interpreter, pilot_file

AGENT = b"#!/usr/bin/env python3\nPK not a real agent\n"
# A site's own wrapper around the switch with the classic bug: $* instead of "$@".
BROKEN_WRAPPER = "#!/bin/sh\nexec sudo -n -C $((PILOTAGE_EXEC_STATUS_FD + 1)) {real} $*\n"


@pytest.fixture(scope="module")
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    """A site with a setuid and a log-only switch, and a broken site wrapper."""
    ensure_accounts(require_service)
    the_site = Site.create("pilotage-validate-", "")
    for name, mode in (("setuid", "setuid"), ("logonly", "log-only")):
        the_site.install(name, mode)
        # The pilot's token (subject "pilot", group /cms) is an accepted pilot here.
        policy = the_site.root / f"policy-{name}.toml"
        policy.write_text(policy.read_text().replace('pilots = ["', 'pilots = ["pilot", "', 1))
    broken = the_site.root / "broken-wrapper"
    broken.write_text(BROKEN_WRAPPER.format(real=the_site.installs["setuid"]))
    broken.chmod(0o755)
    try:
        yield the_site
    finally:
        the_site.remove()


@pytest.fixture
def home(site: Site) -> Iterator[Path]:
    """A fresh directory of the pilot, searchable by all (as batch scratch usually is)."""
    path = site.root / f"home-{os.urandom(4).hex()}"
    path.mkdir(mode=0o755)
    pilot = pwd.getpwnam("pilot")
    os.chown(path, pilot.pw_uid, pilot.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def prepare(
    site: Site, home: Path, mode: str, *, switch_path: str, sudo: bool = True,
    types: tuple[str, ...] = ("setuid",), scratch: Path | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """Signed pilot files in the pilot's ``pilot-files`` as the bootstrap leaves them."""
    attrs = {"site": "HOME", "cpus": 1, "memory_mb": 256, "disk_mb": 64}
    attrs |= {"switch": "setuid", "switch_path": switch_path, "switch_sudo": sudo}
    entry = parse_config({"entry": [{"name": "laptop", "attrs": attrs}]}).entry[0]
    terms = PilotTerms(mode, types, Answers("yes", "allow", "allow", "no"))
    config = PilotConfig(server_url="https://127.0.0.1:9", ca_pem=b"ca\n", terms=terms)
    published = publish(site.root / "served", entry_files(entry, config, AGENT),
                        Ed25519PrivateKey.generate())  # fmt: skip
    files = home / "pilot-files"
    files.mkdir(mode=0o700)
    pilot = pwd.getpwnam("pilot")
    for name in (*published.names, "manifest", "manifest.sig"):
        source = published.directory / name
        pilot_file(files / name, source.read_bytes(), 0o600)
    os.chown(files, pilot.pw_uid, pilot.pw_gid)
    token = site.issuer.mint("pilot", Role.PILOT, 3600, ("/cms",)).encode()
    pilot_file(files / "token", token, 0o600)
    scratch = scratch or home
    return files, scratch


def run_validation(files: Path, scratch: Path) -> tuple[int, dict[str, Any], list[str]]:
    """``validate.py`` as the pilot; its exit code, report and the agent's arguments."""
    done = subprocess.run(
        [interpreter(), "-I", str(files / "validate.py"), str(files), str(scratch),
         str(files / "token")],
        user="pilot", group="pilot", extra_groups=[], env={"PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, cwd="/", check=False,
    )  # fmt: skip
    report = json.loads((files / "validation.json").read_text())
    args_file = files / "agent-args"
    args = args_file.read_text().splitlines() if args_file.exists() else []
    assert ("pilotage-validation: " + json.dumps(report, sort_keys=True)) in done.stdout
    return done.returncode, report, args


def test_a_working_switch_passes_both_tests_and_the_agent_gets_it(site: Site, home: Path) -> None:
    wrapper = str(site.installs["setuid"])
    code, report, args = run_validation(*prepare(site, home, "required", switch_path=wrapper))
    assert code == 0, report
    assert f"--switch=sudo -n -C 5 {wrapper}" in args
    attrs = report["attrs"]
    assert attrs["PilotageSwitchMode"] == '"required"'
    assert attrs["PilotageSwitch"] == '"setuid"'
    assert (attrs["PilotageSwitchTest1"], attrs["PilotageSwitchTest2"]) == ("true", "true")
    assert attrs["PilotageSingleUser"] == "false"
    assert attrs["PolicyBypassOnError"] == '"no"'
    assert "--bypass-on-error=no" in args
    assert '--attr=PilotageSwitch="setuid"' in args


def test_required_with_a_broken_wrapper_refuses_naming_test1(site: Site, home: Path) -> None:
    broken = str(site.root / "broken-wrapper")
    files, scratch = prepare(site, home, "required", switch_path=broken, sudo=False)
    code, report, args = run_validation(files, scratch)
    assert code == 1
    assert args == []
    assert (report["ok"], report["reason"], report["test"]) == (False, "switch", "test1")
    assert report["exit_code"] == 0
    assert "not 'Hello World'" in report["switch_message"]
    assert "switch test1 failed" in report["message"]


def test_optional_with_a_broken_wrapper_runs_jobs_as_the_pilot_and_says_so(
    site: Site, home: Path
) -> None:
    broken = str(site.root / "broken-wrapper")
    files, scratch = prepare(site, home, "optional", switch_path=broken, sudo=False)
    code, report, args = run_validation(files, scratch)
    assert code == 0, report
    assert not [a for a in args if a.startswith("--switch")]
    attrs = report["attrs"]
    assert (attrs["PilotageSwitchMode"], attrs["PilotageSwitch"]) == ('"optional"', '"none"')
    assert (attrs["PilotageSwitchTest1"], attrs["PilotageSwitchTest2"]) == ("false", "true")
    assert "switch test1 failed" in attrs["PilotageSwitchProblem"]


def test_a_work_path_others_cannot_search_fails_test2_naming_it(site: Site, home: Path) -> None:
    closed = site.root / f"closed-{os.urandom(4).hex()}"  # root's; the pilot's group only
    closed.mkdir(mode=0o750)
    os.chown(closed, 0, pwd.getpwnam("pilot").pw_gid)
    scratch = closed / "scratch"
    scratch.mkdir(mode=0o755)
    pilot = pwd.getpwnam("pilot")
    os.chown(scratch, pilot.pw_uid, pilot.pw_gid)
    try:
        wrapper = str(site.installs["setuid"])
        files, _ = prepare(site, home, "required", switch_path=wrapper, scratch=scratch)
        code, report, _args = run_validation(files, scratch)
        assert code == 1
        assert (report["reason"], report["test"], report["exit_code"]) == ("switch", "test2", 201)
        assert report["directory"] == str(closed)
        assert str(closed) in report["switch_message"]
        assert oct(closed.stat().st_mode & 0o777) == oct(0o750)  # not the pilot's to open
    finally:
        shutil.rmtree(closed, ignore_errors=True)


def test_the_pilot_opens_its_own_work_path(site: Site, home: Path) -> None:
    private = home / "private"
    private.mkdir(mode=0o700)
    pilot = pwd.getpwnam("pilot")
    os.chown(private, pilot.pw_uid, pilot.pw_gid)
    wrapper = str(site.installs["setuid"])
    files, scratch = prepare(site, home, "required", switch_path=wrapper, scratch=private)
    code, report, _args = run_validation(files, scratch)
    assert code == 0, report
    assert private.stat().st_mode & 0o001
    assert (private / "agent").stat().st_mode & 0o777 == 0o711


def test_a_log_only_switch_where_setuid_is_required_is_refused(site: Site, home: Path) -> None:
    wrapper = str(site.installs["logonly"])
    code, report, _args = run_validation(*prepare(site, home, "required", switch_path=wrapper))
    assert code == 1
    assert (report["reason"], report["test"], report["switch"]) == ("switch", "type", "log-only")
    assert "accept ['setuid']" in report["switch_message"]


def test_a_log_only_switch_is_recognised_where_accepted(site: Site, home: Path) -> None:
    wrapper = str(site.installs["logonly"])
    files, scratch = prepare(
        site, home, "required", switch_path=wrapper, types=("setuid", "log-only", "namespace")
    )
    code, report, _args = run_validation(files, scratch)
    assert code == 0, report
    assert report["attrs"]["PilotageSwitch"] == '"log-only"'


def test_never_does_not_look_for_the_switch(site: Site, home: Path) -> None:
    files, scratch = prepare(site, home, "never", switch_path="/nonexistent/pilotage-exec")
    code, report, args = run_validation(files, scratch)
    assert code == 0, report
    assert report["attrs"]["PilotageSwitchMode"] == '"never"'
    assert report["attrs"]["PilotageSwitch"] == '"none"'
    assert not [a for a in args if a.startswith("--switch")]


def test_required_without_a_switch_names_where_it_looked(site: Site, home: Path) -> None:
    files, scratch = prepare(site, home, "required", switch_path="/nonexistent/pilotage-exec")
    code, report, _args = run_validation(files, scratch)
    assert code == 1
    assert (report["reason"], report["test"]) == ("switch", "locate")
    assert "/nonexistent/pilotage-exec" in report["message"]
