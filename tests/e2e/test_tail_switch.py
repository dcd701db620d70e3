"""pilotage tail through the switch, end to end as root (stream_output).

A real pool, the real switch in setuid mode and the agent as ``pilot``
(tests/pilot/switched_pool.py). Alice's job writes its stdout as ``alice``, a file the
pilot cannot read; its wrapper reads it as her and the agent sends it on. Alice sees:

- ``pilotage tail ID`` print what the job wrote so far, and ``tail -f`` print each new
  line as the job writes it, then end with the job;
- once the job puts a symbolic link to Bob's readable file in place of its output, the
  link is not followed: the tail keeps what the job wrote and never shows Bob's file,
  and the agent's log says why the output is no longer streamed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
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

SECRET = "bob's private notes\n"
#: Each step waits for a file the test makes in a directory Alice can read.
JOB = """gate() {{ while [ ! -e {gates}/$1 ]; do sleep 0.2; done; }}
echo started
gate more
echo more
gate link
rm out.txt && ln -s {secret} out.txt
gate end
echo ending
rm out.txt && echo restored > out.txt
"""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested is the agent and its wrapper, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{log.read_text()[-6000:]}")
        time.sleep(0.2)


def test_tail_follows_a_switched_job_and_never_a_link(
    site: Site,
    make_pool: Callable[..., Pool],
    local_users: LocalUsers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool(lease_s="300"))
    p = pool.pool
    gates = p.root / "gates"
    gates.mkdir(mode=0o755)
    secret = gates / "bob-notes"
    secret.write_text(SECRET)
    bob = pwd.getpwnam("bob")
    os.chown(secret, bob.pw_uid, bob.pw_gid)
    secret.chmod(0o644)  # Alice may read it: only the wrapper's checks keep it out
    follow = None
    try:
        job = pool.submit(
            "alice", ALICE, JOB.format(gates=gates, secret=secret), stream_output=True
        )
        pool.start_agent(idle_timeout_s=600)

        def tail() -> str:
            return local_users.cli(p, "alice", "tail", job).stdout

        wait_for(lambda: tail() == "started\n", "'started' in the tail", pool.log)
        follow = local_users.popen(p, "alice", "tail", "-f", job)
        assert follow.stdout is not None
        assert follow.stdout.readline() == "started\n"
        (gates / "more").touch()
        assert follow.stdout.readline() == "more\n"  # as the job writes it

        (gates / "link").touch()
        note = "out.txt is a symbolic link, which is not followed: it is no longer streamed"
        wait_for(lambda: note in pool.log.read_text(), "the note of the link", pool.log)
        assert tail() == "started\nmore\n"

        (gates / "end").touch()
        assert pool.wait([job])[job]["state"] == "COMPLETED"
        rest, errors = follow.communicate(timeout=60)
        assert (follow.returncode, rest) == (0, ""), errors
        assert pool.output(job, "alice")["out.txt"] == b"restored\n"
    finally:
        if follow is not None and follow.returncode is None:  # a failed test's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(follow.pid, signal.SIGKILL)
            follow.communicate()
        pool.kill_agents()
