"""Findings 5 and 10 of the security review: what a job leaves on the node or sends back.

Finding 5: a job that ended with ``chmod 000 "$PWD"`` (or deeper) made clean-up fail, and
its files and credential copy stayed on the node. Now the wrapper's clean-up, as the job's
owner, restores ``u+rwx`` on each directory before it descends, and truncates the
credential copy (so any link the job made to it is emptied too); a job that fills the disk
has its files deleted before its result is reported, and the pilot goes on.

Finding 10: a job could return its own credential in its outputs by a hard link (or a
copy) of its ``x509_proxy``, leaving the private key unsealed in the server's spool. Now
such outputs are refused: the job is held (code 12) naming the file, nothing is uploaded.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow

NO_OUTPUTS = {"output": None, "error": None, "transfer_output_files": []}
#: A tree deeper than the wrapper's MAX_DEPTH, each file and directory made unusable.
HOSTILE = """set -e
mkdir -p a/b/c && echo data > a/b/c/f && ln "$X509_USER_PROXY" a/b/proxy-link
d=deep; for i in $(seq 45); do d=$d/x; done; mkdir -p "$d"; echo z > "$d/f"
chmod 000 "$d/f" deep/x/x/x deep/x a/b/c/f a/b/c a/b a
chmod 000 "$X509_USER_PROXY"
chmod 1000 .
chmod 000 "$PWD"
"""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


@pytest.fixture
def pool(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgentPool]:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    the_pool = AgentPool.create(site, make_pool())
    yield the_pool
    the_pool.kill_agents()


def _alice_files(root: Path) -> list[str]:
    """Every path below ``root`` owned by alice (found as root)."""
    found = subprocess.run(
        ["find", str(root), "-user", "alice"], capture_output=True, text=True, check=False
    )
    return found.stdout.split()


def test_agent_cleanup_modes(pool: AgentPool) -> None:
    job = pool.submit("alice", ALICE, HOSTILE, **NO_OUTPUTS)
    agent = pool.start_agent()
    jobs = pool.wait([job])
    assert agent.wait(timeout=60) == 0
    text = pool.log.read_text()
    assert (jobs[job]["state"], jobs[job]["exit_code"]) == ("COMPLETED", 0), text
    assert pool.wait_workdir_empty() == [], text
    assert _alice_files(pool.site.root) == []


def _spool_holds(pool: AgentPool, needle: bytes) -> list[Path]:
    held = []
    for root, _dirs, files in os.walk(pool.pool.state.spool):
        for name in files:
            path = Path(root, name)
            if needle in path.read_bytes():
                held.append(path)
    return held


def test_agent_output_credential(pool: AgentPool) -> None:
    linked = pool.submit("alice", ALICE, 'ln "$X509_USER_PROXY" linked.pem; echo ok')
    copied = pool.submit(
        "alice", ALICE, 'mkdir d; cp "$X509_USER_PROXY" d/copied.pem; echo ok',
        transfer_output_files=["d"],
    )  # fmt: skip
    agent = pool.start_agent()
    jobs = pool.wait([linked, copied])
    assert agent.wait(timeout=60) == 0
    text = pool.log.read_text()
    for job, name in ((linked, "linked.pem"), (copied, "d/copied.pem")):
        held = jobs[job]
        assert (held["state"], held["hold_code"]) == ("HELD", 12), text
        assert f"the output '{name}' carries the job's credential" in held["hold_reason"]
        with pool.x509.https(pool.pool.token("alice", "user")) as http:
            assert http.get(f"/api/v1/jobs/{job}/output").status_code == 404
    assert _spool_holds(pool, b"PRIVATE KEY") == []
    assert pool.wait_workdir_empty() == [], text


@pytest.fixture
def small_disk(pool: AgentPool) -> Iterator[Path]:
    """The agent's work directory on a 2 MiB tmpfs of the pilot."""
    pool.workdir.mkdir()
    pilot = os.stat(pool.home)
    options = f"size=2m,mode=0711,uid={pilot.st_uid},gid={pilot.st_gid}"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "pilotage-test", str(pool.workdir)], check=True
    )
    try:
        yield pool.workdir
    finally:
        subprocess.run(["umount", "-l", str(pool.workdir)], check=False)


def test_agent_disk_full(pool: AgentPool, small_disk: Path) -> None:
    filler = pool.submit("alice", ALICE, "dd if=/dev/zero of=fill bs=64k 2>&1; echo filled")
    agent = pool.start_agent()
    jobs = pool.wait([filler])
    held = jobs[filler]
    text = pool.log.read_text()
    assert (held["state"], held["hold_code"]) == ("HELD", 12), text
    assert "No space left on device" in held["hold_reason"]
    assert pool.wait_workdir_empty() == [], text
    # The pilot goes on: the next job runs and returns its output.
    after = pool.submit("alice", ALICE, "id -un")
    jobs = pool.wait([after])
    assert jobs[after]["state"] == "COMPLETED", pool.log.read_text()
    assert pool.output(after, "alice")["out.txt"] == b"alice\n"
    assert agent.wait(timeout=60) == 0
    assert pool.wait_workdir_empty() == []
