"""The agent with ``--switch``: each job runs as its owner's account through pilotage-exec.

As root (CI), with the real switch installed as in tests/switch (setuid mode, a sudo rule
for the account ``pilot``, a local policy mapping Alice's DN to ``alice`` and banning
Mallory's, the pool's tokens trusted for the pilot credential), a real pool trusting the
same throwaway CA, and the agent running as ``pilot`` (tests/pilot/switched_pool.py):
Alice's job says ``alice`` and sees its environment; Mallory's is held with the switch's
203 sentence; a job without a credential is held too, since this pilot runs jobs only
under their owner's identity; a job whose executable cannot start is held with the
wrapper's sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilot.switched_pool import (
    ALICE,
    MALLORY,
    PILOT_SUBJECT,
    AgentPool,
    pilot_file,
    switch_site,
)
from pilotage.pilot.jobcredential import NO_CREDENTIAL
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


def test_jobs_run_as_their_owner_and_refusals_hold(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool())
    pool.delegate("mallory", "CN=Mallory,O=Example")
    alice_job = pool.submit(
        "alice", ALICE, 'id -un; echo "$GREETING"; test -r "$X509_USER_PROXY" && echo proxy',
        environment={"GREETING": "hello there"},
    )  # fmt: skip
    mallory_job = pool.submit("mallory", MALLORY, "id -un")
    plain_job = pool.submit("carol", None, "id -un")
    # Executable for the pilot (the agent's check passes), not for alice: the wrapper says so.
    private = pilot_file(pool.home / "private.sh", b"#!/bin/sh\ntrue\n", 0o700)
    missing_job = pool.submit("alice", ALICE, "true", executable=str(private), arguments=[])
    agent = pool.start_agent()
    jobs = pool.wait([alice_job, mallory_job, plain_job, missing_job])
    assert agent.wait(timeout=60) == 0, pool.log.read_text()
    text = pool.log.read_text()

    done = jobs[alice_job]
    assert done["state"] == "COMPLETED" and done["exit_code"] == 0, text
    files = pool.output(alice_job, "alice")
    assert files["out.txt"] == b"alice\nhello there\nproxy\n"
    assert "x509_proxy" not in files

    banned = jobs[mallory_job]
    assert banned["state"] == "HELD", text
    assert banned["hold_code"] == 14
    assert "pilotage-exec refused (203)" in banned["hold_reason"]
    assert f"The DN '{MALLORY}' is banned." in banned["hold_reason"]

    plain = jobs[plain_job]
    assert (plain["state"], plain["hold_code"]) == ("HELD", 14)
    assert NO_CREDENTIAL in plain["hold_reason"]

    missing = jobs[missing_job]
    assert (missing["state"], missing["hold_code"]) == ("HELD", 13), text
    assert "could not be started as its owner" in missing["hold_reason"]
    assert "Permission denied" in missing["hold_reason"]

    # Every claim's directory is gone, the users' files included.
    assert pool.wait_workdir_empty() == [], text
    audit = site.audit("setuid")
    runs = [r for r in audit if r.get("event") == "exec" and r.get("account") == "alice"]
    assert runs and all(r["caller"] == "pilot" for r in runs)
    # Both credentials went to the switch: the pilot's identity is in every record.
    assert all(r.get("pilot") == PILOT_SUBJECT for r in runs), runs


def test_linger_mode_runs_the_same(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With linger the switch holds the wrapper's socket for the whole job, never the
    exec-status pipe: the agent still sees the start, the end and a start failure."""
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    config = site.root / "exec-setuid.toml"
    config.write_text("linger = true\n" + config.read_text())
    pool = AgentPool.create(site, make_pool())
    job = pool.submit("alice", ALICE, "id -un; exit 3")
    private = pilot_file(pool.home / "private.sh", b"#!/bin/sh\ntrue\n", 0o700)
    broken = pool.submit("alice", ALICE, "true", executable=str(private), arguments=[])
    agent = pool.start_agent()
    try:
        jobs = pool.wait([job, broken])
        assert agent.wait(timeout=60) == 0
    finally:
        pool.kill_agents()
    text = pool.log.read_text()
    assert (jobs[job]["state"], jobs[job]["exit_code"]) == ("COMPLETED", 3), text
    assert pool.output(job, "alice")["out.txt"] == b"alice\n"
    assert (jobs[broken]["state"], jobs[broken]["hold_code"]) == ("HELD", 13), text
    assert "Permission denied" in jobs[broken]["hold_reason"]
    assert pool.wait_workdir_empty() == [], text
    assert any(r.get("event") == "exit" for r in site.audit("setuid"))
