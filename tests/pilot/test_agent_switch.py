"""The agent with ``--switch``: each job runs as its owner's account through pilotage-exec.

As root (CI), with the real switch installed as in tests/switch (setuid mode, a sudo rule
for the account ``pilot``, a local policy mapping Alice's DN to ``alice`` and banning
Mallory's), a real pool trusting the same throwaway CA, and the agent running as ``pilot``:
Alice's job says ``alice``; Mallory's is held with the switch's 203 sentence; a job without
a credential is held too, since this pilot runs jobs only under their owner's identity.
"""

from __future__ import annotations

import io
import os
import pwd
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from credentials.x509_pool import X509Pool
from pilotage.pilot.switched import NO_CREDENTIAL
from pilotage.pilot.zipapp import build_zipapp
from pilotage.testing import Pool
from switch.switch_site import Site, ensure_accounts, interpreter

pytestmark = pytest.mark.slow

ALICE = "/O=Example/CN=Alice"
MALLORY = "/O=Example/CN=Mallory"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    """A site with the switch installed in setuid mode (limited proxies allowed)."""
    ensure_accounts(require_service)
    the_site = Site.create("pilotage-agent-switch-", "")
    # The pool releases limited proxies by default (docs/pilot-protocol.md).
    the_site.install("setuid", "setuid", allow_limited="true")
    try:
        yield the_site
    finally:
        the_site.remove()


def _submit(x509_pool: X509Pool, user: str, identity: str | None) -> str:
    """``id -un`` as ``user``'s job, with ``identity``'s credential (use_x509userproxy)."""
    with x509_pool.https(x509_pool.pool.token(user, "user")) as http:
        cluster = http.post("/api/v1/clusters").json()["cluster_id"]
        job: dict[str, Any] = {
            "executable": "/usr/bin/id",
            "arguments": ["-un"],
            "transfer_executable": False,
            "iwd": "/tmp",
            "output": "out.txt",
            "error": "err.txt",
            "x509_identity": identity,
            "max_walltime_s": 600,
        }
        answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})
        assert answer.status_code == 201, answer.text
    return f"{cluster}.0"


def _delegate(x509_pool: X509Pool, user: str, subject: str | None = None) -> None:
    issued = x509_pool.pki.ca.issue_user(subject) if subject else None
    chain, key = x509_pool.proxy(issued, lifetime_s=3 * 3600)
    with x509_pool.https(x509_pool.pool.token(user, "user")) as http:
        answer = x509_pool.delegate(http, chain, key, lifetime_s=2 * 3600)
        assert answer.status_code == 200, answer.text


def _pilot_file(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    pilot = pwd.getpwnam("pilot")
    os.chown(path, pilot.pw_uid, pilot.pw_gid)
    path.chmod(mode)
    return path


def test_jobs_run_as_their_owner_and_refusals_hold(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = make_pool()
    x509_pool = X509Pool(pool, site.pki)  # type: ignore[arg-type]
    _delegate(x509_pool, "alice")
    _delegate(x509_pool, "mallory", "CN=Mallory,O=Example")
    alice_job = _submit(x509_pool, "alice", ALICE)
    mallory_job = _submit(x509_pool, "mallory", MALLORY)
    plain_job = _submit(x509_pool, "carol", None)

    home = site.root / "agent"
    home.mkdir(mode=0o755)
    pilot = pwd.getpwnam("pilot")
    os.chown(home, pilot.pw_uid, pilot.pw_gid)
    ca = _pilot_file(home / "ca.pem", pool.state.ca_cert.read_bytes(), 0o644)
    token = _pilot_file(home / "token", pool.token("pilots", "pilot").encode(), 0o600)
    workdir = home / "work"
    log = home / "agent.log"
    # The zipapp, under -I: only the standard library and the node's cryptography.
    pyz = build_zipapp(home / "agent.pyz")
    command = [
        interpreter(), "-I", str(pyz), "--server", pool.url, "--ca", str(ca),
        "--token", str(token), "--workdir", str(workdir), "--cpus", "1", "--memory", "512",
        "--disk", "100", "--site", "test-site", "--idle-timeout", "5",
        "--switch", f"sudo -n -C 5 {site.installs['setuid']}",
    ]  # fmt: skip
    with log.open("wb") as out:
        agent = subprocess.Popen(
            command, stderr=out, env={"PATH": "/usr/bin:/bin"}, cwd="/",
            user="pilot", group="pilot", extra_groups=[],
        )  # fmt: skip
    try:
        try:
            ended = pool.wait_jobs(
                [alice_job, mallory_job, plain_job], ("COMPLETED", "HELD"), timeout=60
            )
        except TimeoutError as exc:
            pytest.fail(f"{exc}\nagent log:\n{log.read_text()}")
        jobs = {j["id"]: j for j in ended}
        assert agent.wait(timeout=60) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    text = log.read_text()
    done = jobs[alice_job]
    assert done["state"] == "COMPLETED" and done["exit_code"] == 0, text
    with x509_pool.https(pool.token("alice", "user")) as http:
        answer = http.get(f"/api/v1/jobs/{alice_job}/output")
        assert answer.status_code == 200, answer.text
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        member = tar.extractfile("out.txt")
        assert member is not None
        assert member.read() == b"alice\n"
        assert "x509_proxy" not in tar.getnames()

    banned = jobs[mallory_job]
    assert banned["state"] == "HELD", text
    assert banned["hold_code"] == 14
    assert "pilotage-exec refused (203)" in banned["hold_reason"]
    assert f"The DN '{MALLORY}' is banned." in banned["hold_reason"]

    plain = jobs[plain_job]
    assert (plain["state"], plain["hold_code"]) == ("HELD", 14)
    assert NO_CREDENTIAL in plain["hold_reason"]

    # Every claim's directory is gone, the users' files included.
    deadline = time.monotonic() + 5
    while list(workdir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(workdir.iterdir()) == [], text
    audit = site.audit("setuid")
    runs = [r for r in audit if r.get("event") == "exec" and r.get("account") == "alice"]
    assert runs and all(r["caller"] == "pilot" for r in runs)
