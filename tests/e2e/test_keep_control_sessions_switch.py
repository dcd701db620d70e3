"""exec-in-job and ssh-to-job through the switch, end to end as root (seed 000 §4.9).

A real pool, the real switch in setuid mode and the agent as ``pilot``
(tests/pilot/switched_pool.py); Alice's job waits for a file named ``stop`` in its
directory. Alice, Bob and root run the real CLI. What each of them sees:

- Alice's command runs as ``alice`` in the job's directory (it reads the file the job
  wrote there) with the job's environment (a variable of the submit file's
  ``environment``); its stdout, stderr and exit status come back as they were;
- Bob is refused with a sentence naming the job's owner; root (an admin) gets in, as
  ``alice``;
- Alice's shell is on a terminal on the node; when it makes the job end, her session
  ends with a sentence and exit status 6, and the ended job refuses another session;
- the server's audit (``pilotage sessions``) lists every attempt with who, what, how it
  ended and the bytes; the switch's audit has an ``enter`` and a ``leave`` for each
  session, as ``alice``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from e2e_callers import LocalUsers

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB = "echo started > here.txt; while [ ! -e stop ]; do sleep 0.2; done"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the relay lives in the server process, not in the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


def audit(site: Site) -> list[dict[str, object]]:
    """The switch's audit records so far (none before its first call)."""
    return site.audit("setuid") if (site.root / "audit-setuid" / "audit.jsonl").exists() else []


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()[-6000:]}")
        time.sleep(0.2)


def test_sessions_run_as_the_owner_through_the_switch(
    site: Site,
    make_pool: Callable[..., Pool],
    local_users: LocalUsers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool(lease_s="300"))
    p = pool.pool
    try:
        job = pool.submit("alice", ALICE, JOB, environment={"SESSION_VAR": "from the submit"})
        pool.start_agent(idle_timeout_s=600)

        def started() -> bool:
            return any(r.get("event") == "exec" and r.get("family") for r in audit(site))

        wait_for(started, "the job's start", pool.log)

        script = 'id -un; pwd; cat here.txt; echo "v=$SESSION_VAR"; echo oops >&2; exit 7'
        mine = local_users.cli(p, "alice", "exec-in-job", job, "--", "sh", "-c", script)
        assert mine.returncode == 7, mine.stderr + pool.log.read_text()[-3000:]
        account, cwd, here, variable = mine.stdout.splitlines()
        assert (account, here, variable) == ("alice", "started", "v=from the submit")
        assert cwd.startswith(f"{pool.workdir}/") and cwd.endswith("/job"), cwd
        assert mine.stderr == "oops\n"

        bob = local_users.cli(p, "bob", "exec-in-job", job, "--", "id")
        assert bob.returncode == 4, bob.stderr
        assert f"job {job} belongs to alice, not bob" in bob.stderr
        admin = p.cli("exec-in-job", job, "--", "id", "-un")
        assert (admin.returncode, admin.stdout) == (0, "alice\n"), admin.stderr

        typed = 'echo "u=$(id -un) t=$(tty)"\ntouch stop\nsleep 600\n'
        shell = local_users.cli(p, "alice", "ssh-to-job", job, input=typed)
        assert shell.returncode == 6, shell.stderr
        assert "u=alice t=/dev/pts/" in shell.stdout
        assert f"job {job} ended; the session is closed" in shell.stderr
        assert pool.wait([job])[job]["state"] == "COMPLETED"
        late = local_users.cli(p, "alice", "exec-in-job", job, "--", "true")
        assert late.returncode == 6 and "not RUNNING" in late.stderr, late.stderr

        listed = local_users.cli(p, "alice", "sessions", job, "--json")
        assert listed.returncode == 0, listed.stderr
        detail = json.loads(listed.stdout)
        rows = [(r["caller"], r["kind"], r["state"], r["exit_code"]) for r in detail]
        assert rows == [
            ("alice", "exec", "ended", 7),
            ("bob", "exec", "refused", None),
            ("root", "exec", "ended", 0),
            ("alice", "shell", "ended", None),
            ("alice", "exec", "refused", None),
        ]
        assert detail[0]["command"] == ["sh", "-c", script] and detail[0]["bytes_out"] > 0
        assert detail[1]["end_reason"].startswith("Denied: ")
        assert detail[3]["end_reason"].startswith("job-ended: ") and detail[3]["bytes_in"] > 0

        # The shell is killed (SIGKILL) by whichever comes first: the job's final kill of
        # its family (cgroup), or the switch when the agent closes the session.
        entered = [r for r in audit(site) if r.get("event") in ("enter", "leave")]
        assert [(r["event"], r["account"], r.get("exit")) for r in entered] == [
            ("enter", "alice", None), ("leave", "alice", 7),
            ("enter", "alice", None), ("leave", "alice", 0),
            ("enter", "alice", None), ("leave", "alice", 137),
        ]  # fmt: skip
        assert {r["job"] for r in entered} == {job}
    finally:
        pool.kill_agents()
