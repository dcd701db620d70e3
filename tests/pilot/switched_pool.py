"""A real pool, a real switch (setuid) and a real agent at the pilot's uid, for tests.

As root: the switch is installed as in tests/switch (accounts ``pilot``, ``alice``,
``bob``; a sudo rule for ``pilot``; a local policy mapping Alice's DN to ``alice``), the
switch trusts the pool's tokens so the agent's own credential (``--token``) is accepted
as the pilot credential, and the agent runs from its zipapp under ``python -I`` as
``pilot``. Used by tests/pilot/test_agent_switch.py and tests/security/test_agent_*.py.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pwd
import ssl
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from credentials.x509_pool import X509Pool
from pilotage.pilot.zipapp import build_zipapp
from pilotage.testing import Pool
from switch.switch_site import Site, ensure_accounts, interpreter

ALICE = "/O=Example/CN=Alice"
MALLORY = "/O=Example/CN=Mallory"
PILOT_SUBJECT = "pilots"


def pilot_file(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` at ``path`` as a file of the account ``pilot``."""
    path.write_bytes(data)
    pilot = pwd.getpwnam("pilot")
    os.chown(path, pilot.pw_uid, pilot.pw_gid)
    path.chmod(mode)
    return path


@contextlib.contextmanager
def switch_site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    """A site with the switch installed in setuid mode (limited proxies allowed)."""
    ensure_accounts(require_service)
    the_site = Site.create("pilotage-agent-switch-", "")
    # The pool releases limited proxies by default (docs/pilot-protocol.md).
    the_site.install("setuid", "setuid", allow_limited="true")
    try:
        yield the_site
    finally:
        the_site.remove()


def trust_pool(site: Site, name: str, pool: Pool, token: str) -> None:
    """Make the switch ``name`` accept the pool's tokens, and its pilot as a pilot."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tls = ssl.create_default_context(cafile=str(pool.state.ca_cert))
    jwks = httpx.get(f"{pool.url}/api/v1/jwks", verify=tls).json()
    jwks_file = site.root / "pool-jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    jwks_file.chmod(0o644)
    config = site.root / f"exec-{name}.toml"
    text = config.read_text()
    audience = claims["aud"] if isinstance(claims["aud"], str) else claims["aud"][0]
    text = text.replace("audiences = [", f'audiences = ["{audience}", ', 1)
    text = text.replace("issuers = { ", f'issuers = {{ "{claims["iss"]}" = "{jwks_file}", ', 1)
    config.write_text(text)
    policy = site.root / f"policy-{name}.toml"
    policy.write_text(policy.read_text().replace("pilots = [", f'pilots = ["{PILOT_SUBJECT}", ', 1))


@dataclass
class AgentPool:
    """The pool, the site, and the agent's home (``pilot``'s) with its token and CA."""

    site: Site
    pool: Pool
    x509: X509Pool
    home: Path
    workdir: Path
    token: Path
    log: Path
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls, site: Site, pool: Pool) -> AgentPool:
        """Alice's credential delegated; the agent's files written; the switch trusting both."""
        x509 = X509Pool(pool, site.pki)  # type: ignore[arg-type]
        home = site.root / "agent"
        home.mkdir(mode=0o755)
        pilot = pwd.getpwnam("pilot")
        os.chown(home, pilot.pw_uid, pilot.pw_gid)
        token_text = pool.token(PILOT_SUBJECT, "pilot")
        token = pilot_file(home / "token", token_text.encode(), 0o600)
        trust_pool(site, "setuid", pool, token_text)
        made = cls(site, pool, x509, home, home / "work", token, home / "agent.log")
        made.delegate("alice")
        return made

    def delegate(self, user: str, subject: str | None = None) -> None:
        """Delegate a proxy of ``subject`` (default: Alice's certificate) for ``user``."""
        issued = self.x509.pki.ca.issue_user(subject) if subject else None
        chain, key = self.x509.proxy(issued, lifetime_s=3 * 3600)
        with self.x509.https(self.pool.token(user, "user")) as http:
            answer = self.x509.delegate(http, chain, key, lifetime_s=2 * 3600)
            assert answer.status_code == 200, answer.text

    def submit(self, user: str, identity: str | None, script: str, **job: Any) -> str:
        """``sh -c script`` as ``user``'s job with ``identity``'s credential."""
        body: dict[str, Any] = {
            "executable": "/bin/sh",
            "arguments": ["-c", script],
            "transfer_executable": False,
            "iwd": "/tmp",
            "output": "out.txt",
            "error": "err.txt",
            "x509_identity": identity,
            "max_walltime_s": 600,
            **job,
        }
        with self.x509.https(self.pool.token(user, "user")) as http:
            cluster = http.post("/api/v1/clusters").json()["cluster_id"]
            answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [body]})
            assert answer.status_code == 201, answer.text
        return f"{cluster}.0"

    def start_agent(self, *extra: str, idle_timeout_s: int = 5) -> subprocess.Popen[bytes]:
        """The agent, from its zipapp under ``python -I``, as ``pilot``, with the switch."""
        ca = pilot_file(self.home / "ca.pem", self.pool.state.ca_cert.read_bytes(), 0o644)
        pyz = build_zipapp(self.home / "agent.pyz")
        command = [
            interpreter(), "-I", str(pyz), "--server", self.pool.url, "--ca", str(ca),
            "--token", str(self.token), "--workdir", str(self.workdir), "--cpus", "1",
            "--memory", "512", "--disk", "100", "--site", "test-site",
            "--idle-timeout", str(idle_timeout_s),
            "--switch", f"sudo -n -C 5 {self.site.installs['setuid']}", *extra,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            agent = subprocess.Popen(
                command, stderr=out, env={"PATH": "/usr/bin:/bin"}, cwd="/",
                user="pilot", group="pilot", extra_groups=[],
            )  # fmt: skip
        self.agents.append(agent)
        return agent

    def wait(self, ids: list[str], timeout: float = 90) -> dict[str, Any]:
        """Wait for the jobs to end (COMPLETED or HELD); each job by id."""
        try:
            ended = self.pool.wait_jobs(ids, ("COMPLETED", "HELD"), timeout=timeout)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\nagent log:\n{self.log.read_text()}")
        return {j["id"]: j for j in ended}

    def stop_agents(self) -> None:
        """Wait for each agent to leave (idle timeout); kill one that does not."""
        for agent in self.agents:
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()

    def kill_agents(self) -> None:
        """Kill every agent still running (a failed test's)."""
        for agent in self.agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()

    def output(self, job: str, user: str) -> dict[str, bytes]:
        """The job's output sandbox as its owner downloads it: name -> bytes."""
        with self.x509.https(self.pool.token(user, "user")) as http:
            answer = http.get(f"/api/v1/jobs/{job}/output")
            assert answer.status_code == 200, answer.text
        files = {}
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
            for member in tar:
                stream = tar.extractfile(member)
                if stream is not None:
                    files[member.name] = stream.read()
        return files

    def wait_workdir_empty(self) -> list[str]:
        """What is left in the work directory once the claims are cleaned (a few seconds)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = self.leftovers()
            if not left:
                return left
            time.sleep(0.1)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        """Every path below the work directory but the agent's wrapper file."""
        left = []
        for root, dirs, files in os.walk(self.workdir):
            for name in dirs + files:
                path = os.path.relpath(os.path.join(root, name), self.workdir)
                if not path.startswith("pilotage-job-wrapper"):
                    left.append(path)
        return sorted(left)
