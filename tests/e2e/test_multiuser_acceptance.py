"""Issue 9's acceptance, end to end as root: provisioned multi-user pilots run each job as
its owner, and leave nothing of either owner behind.

A pool, a factory whose local entry runs its pilots as ``pilot`` at a site that *requires*
setuid (and forbids bypass), and a frontend in mode ``required``, each a real process; the
real switch installed in setuid mode (sudo rule for ``pilot``) by the switched demo's own
installer, mapping Alice's DN to ``alice``, Bob's to ``bob``. Alice and Bob are real
local users: each makes a proxy, delegates it and submits three jobs with the CLI, run as
them (``runuser``), from a submit directory of their own; the jobs interleave on one or
two pilots. What is checked is what each of them, and the site, sees:

- each pilot validated the switch: the jobs' Requirements only match a slot whose ad says
  ``PilotageSwitchMode == "required"``, ``PilotageSwitch == "setuid"`` and both tests true;
  a pilot ran jobs of both users;
- each job's output says its own account (``id -un``), and the owner of its working
  directory, of the file it was given and of a file it made, all while it ran;
- ``pilotage fetch``, run by each user, brings that user's outputs (only) into their
  submit directory, owned by them;
- afterwards no file or directory of alice or bob is left in the pilots' work
  directories, and no process of theirs runs (each job left a ``sleep`` behind it in its
  own session, for the agent's final kill to find);
- the switch's audit names both accounts, and ``pilotage-exec --accounting --json`` (the
  installed wrapper, as root) counts their jobs with nonzero wall time.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from e2e_callers import LocalUsers

from pilotage.cli.client import Client, locate
from pilotage.credentials.ca import IssuedCredential
from pilotage.credentials.x509_testing import Pki, make_pki
from pilotage.demo_provisioning import start_services
from pilotage.demo_switched import ENTRIES, STATE_PREFIX, USERS, ensure_accounts, install_switch
from pilotage.testing import Pool

# The test's own deadline comes first, so a slow run fails with the logs, not a stack.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOBS_EACH = 3
DEADLINE_S = 420.0
#: In every straggler's command line, so a leftover one is found whatever its directory.
STRAGGLER = "pilotage-acceptance-straggler"
FRONTEND = """\
[frontend]
name = "demo-frontend"
cycle_s = 1
switch = "required"
switch_types = ["setuid"]
token_lifetime_s = 3600
entry_max_age_s = 30

[pressure]
max_idle = 1
max_running = 2
idle_curb = 1
remove_excess = "idle"
"""
# Each check runs while the job runs; the straggler stays in the job's session.
JOB = f"""#!/bin/sh
echo "account=$(id -un)"
echo "workdir=$(stat -c %U .)"
echo "given=$(stat -c %U given.txt) $(cat given.txt)"
echo "made by job $1" > made.$1.txt
echo "made=$(stat -c %U made.$1.txt)"
sh -c 'sleep 300; true' {STRAGGLER} </dev/null >/dev/null 2>&1 &
"""
# An entry's ad has no validation outcome (the frontend matches on it: undefined); every
# pilot's slot ad has one, so on a slot the second half decides.
VALIDATED = (
    "PilotageSwitchMode =?= undefined || "
    '(PilotageSwitchMode == "required" && PilotageSwitch == "setuid" && '
    "PilotageSwitchTest1 == true && PilotageSwitchTest2 == true)"
)
VALIDATION = "pilotage-validation: "
SWITCH_ATTRS = {
    "PilotageSwitchMode": '"required"',
    "PilotageSwitch": '"setuid"',
    "PilotageSwitchTest1": "true",
    "PilotageSwitchTest2": "true",
}
SUBMIT = f"""\
executable = job.sh
arguments = $(Process)
transfer_input_files = given.txt
output = out.$(Process).txt
error = err.$(Process).txt
x509userproxy = x509up
request_memory = 64MB
request_disk = 1MB
allowed_job_duration = 600
requirements = {VALIDATED}
queue {JOBS_EACH}
"""


@dataclass(frozen=True)
class Site:
    """The site's side: its root (world-searchable), its CA, the pilots' scratch."""

    root: Path
    pki: Pki

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is provisioning and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(
    local_users: LocalUsers, monkeypatch: pytest.MonkeyPatch,
    require_service: Callable[[str, str], NoReturn],
) -> Iterator[Site]:  # fmt: skip
    """A site root with a CA the pool will trust and the scratch the pilots work in."""
    if shutil.which("sudo") is None:
        require_service("sudo", "the switch is called by the pilot through a sudo rule")
    ensure_accounts()
    root = Path(tempfile.mkdtemp(prefix="pilotage-acceptance-", dir="/tmp"))
    root.chmod(0o755)
    try:
        pki = make_pki(root / "ca")
        monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
        scratch = root / "scratch"
        scratch.mkdir(mode=0o755)
        pilot = pwd.getpwnam("pilot")
        os.chown(scratch, pilot.pw_uid, pilot.pw_gid)
        yield Site(root, pki)
    finally:
        shutil.rmtree(f"{STATE_PREFIX}{root.name}", ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def logs(site: Site, pool: Pool) -> str:
    """The server's, factory's, frontend's and each pilot's log (tails), for a failure."""
    found = []
    for path in (pool.root / "server.log", site.root / "factory.log", site.root / "frontend.log"):
        if path.exists():
            found.append(f"--- {path}\n" + path.read_text(errors="replace")[-4000:])
    for log in sorted((site.root / "factory" / "pilots").glob("*/*/pilot.log")):
        found.append(f"--- {log}\n" + log.read_text(errors="replace")[-4000:])
    return "\n".join(found)


def wait_for(
    what: str, predicate: Callable[[], Any], deadline: float, show: Callable[[], str]
) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` at ``deadline``."""
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"{what}: not within the deadline\n{show()}"
        time.sleep(0.5)
    return found


def validations(site: Site) -> list[dict[str, Any]]:
    """The validation outcome each pilot reported in its log (its slot ad's attributes)."""
    found = []
    for log in sorted((site.root / "factory" / "pilots").glob("*/*/pilot.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(VALIDATION):
                found.append(json.loads(line.removeprefix(VALIDATION)))
    return found


def submit_as(local_users: LocalUsers, pool: Pool, name: str, user: IssuedCredential) -> Path:
    """As ``name``: make a proxy, delegate it, submit the jobs; the submit directory."""
    files = {"job.sh": JOB, "job.submit": SUBMIT, "given.txt": f"input of {name}\n"}
    files |= {"usercert.pem": user.cert_pem().decode(), "userkey.pem": user.key_pem().decode()}
    work = local_users.workdir(pool, name, files)
    (work / "userkey.pem").chmod(0o600)
    for args in (
        ("proxy", "init", "--cert", "usercert.pem", "--key", "userkey.pem", "--out", "x509up"),
        ("delegate", "--proxy", "x509up"),
        ("submit", "job.submit"),
    ):
        done = local_users.cli(pool, name, *args, cwd=work)
        assert done.returncode == 0, f"{name}: pilotage {' '.join(args)}: {done.stderr}"
    return work


def leftovers(site: Site, uids: dict[int, str]) -> list[str]:
    """Files and directories of ``uids`` in the pilots' work directories, and their
    processes that run there or are a job's straggler."""
    found = []
    for top, dirs, files in os.walk(site.scratch):
        for name in dirs + files:
            path = os.path.join(top, name)
            try:
                owner = os.lstat(path).st_uid
            except FileNotFoundError:
                continue  # removed meanwhile
            if owner in uids:
                found.append(f"{uids[owner]} owns {path}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
            if owner not in uids:
                continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        if cwd.startswith(str(site.root)) or STRAGGLER in command:
            found.append(f"{uids[owner]} runs pid {pid} in {cwd}: {command}")
    return found


def test_pilots_run_alice_and_bob_each_as_themselves_and_leave_nothing(
    site: Site, local_users: LocalUsers, make_pool: Callable[..., Pool]
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    pool = make_pool(idle_timeout_s="5")
    users = {"alice": site.pki.user, "bob": site.pki.ca.issue_user(USERS["bob"])}
    uids = {pwd.getpwnam(name).pw_uid: name for name in users}
    with Client(locate(pool.state, None, None, None)) as client, ExitStack() as stack:
        switch, sudoers = install_switch(site.root, client, site.pki)
        stack.callback(sudoers.unlink, missing_ok=True)
        entries = ENTRIES.format(scratch=site.scratch, wrapper=switch)
        (site.root / "entries.toml").write_text(entries)
        (site.root / "frontend.toml").write_text(FRONTEND)
        work = {name: submit_as(local_users, pool, name, user) for name, user in users.items()}

        def show() -> str:
            return logs(site, pool)

        start_services(pool.state, site.root, client, stack)

        def finished() -> list[dict[str, Any]]:
            jobs: list[dict[str, Any]] = client.call("GET", "/api/v1/jobs")
            done = [j for j in jobs if j["state"] in ("COMPLETED", "HELD", "REMOVED")]
            return jobs if len(done) == 2 * JOBS_EACH else []

        jobs = wait_for("every job finished", finished, deadline, show)
        assert all(j["state"] == "COMPLETED" and j["exit_code"] == 0 for j in jobs), (
            json.dumps(jobs, indent=1) + show()
        )
        assert {j["owner"] for j in jobs} == set(users)
        ran_on: dict[str, set[str]] = {}
        for job in jobs:
            events = client.call("GET", f"/api/v1/jobs/{job['id']}/events")
            for pilot in {e["pilot"] for e in events if e["to"] == "RUNNING"}:
                ran_on.setdefault(pilot, set()).add(job["owner"])
        assert 1 <= len(ran_on) <= 2, ran_on
        reports = validations(site)
        assert len(reports) >= len(ran_on), show()
        for report in reports:  # every pilot's slot ad, as its validation gave it the agent
            assert report["ok"] is True, show()
            assert {k: report["attrs"][k] for k in SWITCH_ATTRS} == SWITCH_ATTRS, show()
        assert set(users) in ran_on.values(), f"no pilot ran jobs of both users: {ran_on}"

        for name in users:
            mine = [j["id"] for j in jobs if j["owner"] == name]
            fetched = local_users.cli(pool, name, "fetch", *mine)
            assert fetched.returncode == 0, f"{name}: pilotage fetch: {fetched.stderr}"
        for name, directory in work.items():
            uid = pwd.getpwnam(name).pw_uid
            for proc in range(JOBS_EACH):
                output = (directory / f"out.{proc}.txt").read_text()
                assert output.splitlines()[:4] == [
                    f"account={name}",
                    f"workdir={name}",
                    f"given={name} input of {name}",
                    f"made={name}",
                ], f"job {proc} of {name}:\n{output}"
                for made in (f"out.{proc}.txt", f"made.{proc}.txt"):
                    assert (directory / made).stat().st_uid == uid, f"{made} of {name}"
                assert (directory / f"made.{proc}.txt").read_text() == f"made by job {proc}\n"
            other = next(o for o in users if o != name)
            assert "account=" + other not in "".join(
                p.read_text() for p in directory.glob("out.*.txt")
            )

        # The pilots end (their idle timeout), the factory sees them go.
        def pilots_gone() -> bool:
            status = client.call("GET", "/api/v1/slots")
            assert status["scope"] == "all"  # root is the pool's admin: it sees every slot
            return not status["slots"]

        wait_for("the pilots ended", pilots_gone, deadline, show)
        wait_for(
            "nothing of alice or bob left on the node",
            lambda: not leftovers(site, uids),
            deadline,
            lambda: "\n".join(leftovers(site, uids)) + "\n" + show(),
        )

    audit = site.root / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert set(users) <= {r.get("account") for r in records}, records
    accounting = subprocess.run(
        [str(switch), "--accounting", "--json"], capture_output=True, text=True, timeout=60
    )
    assert accounting.returncode == 0, accounting.stderr
    by_account = json.loads(accounting.stdout)["by_account"]
    for name in users:
        assert by_account[name]["jobs"] >= JOBS_EACH, by_account
        assert by_account[name]["wall_h"] > 0, by_account
