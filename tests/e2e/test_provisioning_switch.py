"""End to end, as root: provisioned pilots validate the switch before taking any job.

A pool, a factory whose local entry runs its pilots as the account ``pilot`` in a site
scratch, and a frontend, each a real process; the real switch installed in setuid mode
(sudo rule for ``pilot``), trusting the pool's token issuer and mapping the entry's pilot
token to a pool account; the site calls it through its own wrapper, broken the classic
way (``$*`` for ``"$@"``), so test 1 (``sh -c 'id && echo "Hello World"'``) fails and
test 2 passes.

- VO mode ``required``: the pilots leave without taking the job; the factory forwards
  each one's report (test 1, exit code 0, the last line seen) to the collector.
- VO mode ``optional``: the job runs as the pilot account, on a slot whose ad says so
  (the job's Requirements read ``PilotageSwitch`` and the tests' results).
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

import pytest
from rich.console import Console

from pilotage.cli.client import Client, locate
from pilotage.credentials.tokens import TokenIssuer
from pilotage.credentials.x509_testing import make_pki
from pilotage.demo_provisioning import start_services
from pilotage.demo_switched import run_switched_with_server
from pilotage.testing import Pool
from switch.switch_site import Site, ensure_accounts

pytestmark = pytest.mark.slow

BROKEN_WRAPPER = "#!/bin/sh\nexec sudo -n -C $((PILOTAGE_EXEC_STATUS_FD + 1)) {real} $*\n"
ENTRIES = """\
[factory]
name = "demo-factory"
cycle_s = 1

[[entry]]
name = "gamma"
backend = "local"
params = {{ user = "pilot", scratch = "{scratch}" }}
[entry.attrs]
site = "gamma"
cpus = 1
memory_mb = 512
disk_mb = 256
max_walltime_s = 3600
switch = "setuid"
switch_path = "{wrapper}"
switch_sudo = false
[entry.policy]
multi_user = "yes"
setuid = "allow"
log_only = "allow"
bypass_on_error = "yes"
"""
FRONTEND = """\
[frontend]
name = "demo-frontend"
cycle_s = 1
switch = "{mode}"
switch_types = ["setuid"]
token_lifetime_s = 3600
entry_max_age_s = 30

[pressure]
max_idle = 1
max_running = 1
idle_curb = 1
"""
JOB = '#!/bin/sh\n[ "$(id -un)" = pilot ] || { echo "ran as $(id -un)"; exit 3; }\n'
SUBMIT = """\
executable = job.sh
output = out.txt
error = err.txt
request_memory = 64MB
request_disk = 1MB
requirements = {requirements}
queue 1
"""
# An entry's ad has no pilot's validation outcome (the frontend matches on it: undefined);
# every pilot's slot ad has one, so on a slot the second half decides.
RAN_AS_PILOT = (
    "PilotageSwitchMode =?= undefined || "
    '(PilotageSwitchMode == "optional" && PilotageSwitch == "none" && '
    "PilotageSwitchTest1 == false && PilotageSwitchTest2 == true && "
    'PolicyBypassOnError == "yes")'
)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is provisioning and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    """The switch in setuid mode, and the site's broken wrapper around it."""
    ensure_accounts(require_service)
    the_site = Site.create("pilotage-e2e-switch-", "")
    the_site.install("setuid", "setuid")
    wrapper = the_site.root / "site-wrapper"
    wrapper.write_text(BROKEN_WRAPPER.format(real=the_site.installs["setuid"]))
    wrapper.chmod(0o755)
    scratch = the_site.root / "scratch"
    scratch.mkdir(mode=0o755)
    pilot = pwd.getpwnam("pilot")
    os.chown(scratch, pilot.pw_uid, pilot.pw_gid)
    try:
        yield the_site
    finally:
        the_site.remove()


def trust_the_pool(site: Site, pool: Pool) -> None:
    """The switch trusts the pool's tokens and maps the entry's pilot token to cms001."""
    payload = pool.token("entry:gamma/demo-frontend", "pilot").split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    issuer, audience = claims["iss"], claims["aud"]
    audience = audience[0] if isinstance(audience, list) else audience
    jwks = TokenIssuer(pool.state.signing_keys(), issuer, audience).jwks()
    (site.root / "pool-jwks.json").write_text(json.dumps(jwks))
    config = site.root / "exec-setuid.toml"
    text = config.read_text().split("[tokens]")[0]
    config.write_text(
        text + f'[tokens]\naudiences = ["{audience}"]\n'
        f'issuers = {{ "{issuer}" = "{site.root / "pool-jwks.json"}" }}\n'
    )
    policy = site.root / "policy-setuid.toml"
    policy.write_text(
        policy.read_text().replace('pilots = ["/O=Example/CN=Pilot"]', "pilots = []")
        + f'\n[[map]]\nsubject = "{issuer} entry:gamma/demo-frontend"\naccount = "cms001"\n'
    )


def start(site: Site, pool: Pool, mode: str, requirements: str) -> tuple[Path, str]:
    """Write the entries, settings and job; submit the job; the root and the job's id."""
    trust_the_pool(site, pool)
    root = pool.root / f"provisioning-{mode}"
    root.mkdir()
    entries = ENTRIES.format(scratch=site.root / "scratch", wrapper=site.root / "site-wrapper")
    (root / "entries.toml").write_text(entries)
    (root / "frontend.toml").write_text(FRONTEND.format(mode=mode))
    work = root / "work"
    work.mkdir()
    (work / "job.sh").write_text(JOB)
    (work / "job.sh").chmod(0o755)
    (work / "job.submit").write_text(SUBMIT.format(requirements=requirements))
    submitted = pool.cli("submit", "job.submit", "--json", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    return root, f"{json.loads(submitted.stdout)['cluster']}.0"


def logs(root: Path) -> str:
    found = [(root / f"{n}.log").read_text(errors="replace") for n in ("factory", "frontend")]
    for log in sorted((root / "factory" / "pilots").glob("*/*/pilot.log")):
        found.append(f"--- {log}\n" + log.read_text(errors="replace")[-3000:])
    return "\n".join(found)


def wait(predicate: Callable[[], Any], root: Path, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := predicate()):
        assert time.monotonic() < deadline, logs(root)
        time.sleep(0.5)
    return found


def test_a_required_pilot_with_a_broken_switch_takes_no_job_and_reports(
    site: Site, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(idle_timeout_s="30")
    root, job_id = start(site, pool, "required", "true")
    with Client(locate(pool.state, None, None, None)) as client, ExitStack() as stack:
        start_services(pool.state, root, client, stack)

        def reports() -> list[dict[str, Any]]:
            found = client.call("GET", "/api/v1/validation-reports", params={"entry": "gamma"})
            return [r for r in found if r["reason"] == "switch"]

        report = wait(reports, root)[0]
        (job,) = client.call("GET", "/api/v1/jobs", params={"id": [job_id]})
        entry = next(e for e in client.call("GET", "/api/v1/entries") if e["name"] == "gamma")
    assert job["state"] == "IDLE", logs(root)
    assert entry["registered"]["total"] == 0
    assert report["ok"] is False
    details = report["details"]
    assert (details["test"], details["exit_code"]) == ("test1", 0)
    assert "not 'Hello World'" in details["switch_message"]
    assert "switch test1 failed" in report["message"]
    assert "refused validation: switch" in (root / "factory.log").read_text()


def test_an_optional_pilot_runs_jobs_as_itself_and_its_ad_says_so(
    site: Site, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(idle_timeout_s="4")
    root, job_id = start(site, pool, "optional", RAN_AS_PILOT)
    with Client(locate(pool.state, None, None, None)) as client, ExitStack() as stack:
        start_services(pool.state, root, client, stack)

        def done() -> list[dict[str, Any]]:
            found = client.call("GET", "/api/v1/jobs", params={"id": [job_id]})
            return [j for j in found if j["state"] in ("COMPLETED", "HELD")]

        (job,) = wait(done, root, 120)
    assert job["state"] == "COMPLETED", logs(root)
    assert job["exit_code"] == 0, logs(root)  # the job checked it ran as "pilot"
    assert job["site"] == "gamma"
    pilot_logs = logs(root)
    assert "'PilotageSwitch': '\"none\"'" in pilot_logs  # the agent's effective attributes
    assert "switch test1 failed with exit code 0" in pilot_logs


def test_the_switched_demo_runs_each_job_as_its_owner(
    make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> None:  # fmt: skip
    """``pilotage demo --provisioning --switch`` on a pool of the test's own."""
    ensure_accounts(require_service)
    root = Path(tempfile.mkdtemp(prefix="pilotage-switched-", dir="/tmp"))
    root.chmod(0o755)
    try:
        pki = make_pki(root / "ca")
        monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
        pool = make_pool(idle_timeout_s="5")
        console = Console(record=True, width=120)
        code = run_switched_with_server(pool.state, root, console, pki, jobs=2)
        text = console.export_text()
        assert code == 0, text + logs(root)
        assert "FAILED" not in text
        assert "of alice: id -un says 'alice" in text
        assert "of bob: id -un says 'bob" in text
    finally:
        shutil.rmtree(root, ignore_errors=True)
