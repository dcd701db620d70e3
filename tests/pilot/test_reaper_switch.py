"""A pilot that dies, with the switch: as root, the real switch (setuid) and the agent as
``pilot`` (tests/pilot/switched_pool.py). Alice's job, whose shell waits on a child in the
background, runs as ``alice`` when the agent is SIGKILLed; its reaper has the switch kill
the job's family (``--signal KILL``), and no process of the job is left (pilot/reaper.py).
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow

MARKER = b"sleep\x001013\x00"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


def job_processes(uid: int) -> list[int]:
    """The live processes of ``uid`` running the job's marked ``sleep``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() != MARKER:
                    continue
            if "\nState:\tZ" in Path(f"/proc/{name}/status").read_text():
                continue
        except OSError:
            continue
        found.append(int(name))
    return found


def wait_until(check: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s:\n{log.read_text()}")
        time.sleep(0.1)


def test_a_sigkilled_agent_leaves_no_process_of_a_switched_job(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool(lease_s="300"))
    alice = pwd.getpwnam("alice").pw_uid
    try:
        pool.submit("alice", ALICE, "sleep 1013 & wait")
        agent = pool.start_agent(idle_timeout_s=600)
        wait_until(lambda: bool(job_processes(alice)), "the job's start", pool.log)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        wait_until(lambda: not job_processes(alice), "the job's end", pool.log)
        text = pool.log.read_text()
        assert "its agent is gone; killing its job" in text, text
        # The reaper's --signal KILL reached the job's family (the only signal sent). The
        # switch writes its record once the family is killed: wait for it.

        def kills() -> list[dict[str, object]]:
            return [r for r in site.audit("setuid") if r.get("event") == "signal"]

        wait_until(lambda: bool(kills()), "the switch's record of the KILL", pool.log)
        signals = [(r["signal"], int(str(r["signalled"])) >= 1) for r in kills()]
        assert signals == [("SIGKILL", True)], (site.audit("setuid"), text)
    finally:
        pool.kill_agents()
