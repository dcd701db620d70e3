"""A live pool for the web pages' tests: a real server, real agents at two entries.

:func:`start_web_pool` (the fixture ``web_pool``, one per test module) starts
``pilotage server`` on SQLite, has a factory advertise two entries (``ce-alpha`` at site
``alpha``, ``ce-beta`` at site ``beta``) and a frontend ask for pilots there with tokens
minted for each entry, then starts one real agent per entry with that token. alice and
bob (token users) submit: alice three quick jobs and two long ones, one more that she
holds at once; bob a quick job that exits 3 and a long one. It returns once the quick
jobs completed and the long ones run, at both sites.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pilotage.factory.backends.local import PilotLaunch
from pilotage.testing import Pool

ENTRIES = {"ce-alpha": "alpha", "ce-beta": "beta"}
FACTORY = "factory-1"
FRONTEND = "frontend-1"
QUICK = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
LONG = {**QUICK, "executable": "/bin/sleep", "arguments": ["600"]}
FAILS = {**QUICK, "executable": "/bin/sh", "arguments": ["-c", "exit 3"]}


@dataclass
class WebPool:
    """The pool, its callers' tokens, and the jobs each user has."""

    pool: Pool
    tokens: dict[str, str]
    jobs: dict[str, list[str]] = field(default_factory=dict)
    held: str = ""
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.pool.url

    def client(self, who: str | None, **kwargs: Any) -> httpx.Client:
        """An HTTPS client as ``who`` (a bearer token), or as nobody."""
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        client = httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=self.pool.state.ca_cert),
            headers=headers,
            timeout=httpx.Timeout(60.0, connect=10.0),
            **kwargs,
        )
        self.clients.append(client)
        return client

    def api(self, who: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client(who).request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def wait_states(self, want: dict[str, str], timeout: float = 120) -> list[dict[str, Any]]:
        """Wait until each named job is in its state; the admin's view of every job."""
        deadline = time.monotonic() + timeout
        while True:
            every = self.api("admin", "GET", "/api/v1/jobs")
            states = {j["id"]: j["state"] for j in every}
            if all(states.get(job) == state for job, state in want.items()):
                return list(every)
            if time.monotonic() > deadline:
                pytest.fail(f"jobs not in {want} after {timeout} s: {states}")
            time.sleep(0.2)


def _submit(web: WebPool, who: str, specs: list[dict[str, Any]]) -> list[str]:
    cluster = web.api(who, "POST", "/api/v1/clusters")["cluster_id"]
    web.api(who, "POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": specs})
    return [f"{cluster}.{proc}" for proc in range(len(specs))]


def _entries(web: WebPool) -> None:
    """Two advertised entries, a frontend's requests for them, a failed validation."""
    for entry, site in ENTRIES.items():
        ad = {
            "Site": site,
            "Cpus": 2,
            "Memory": 4096,
            "GridType": "local",
            "SwitchMode": None,
            "PolicyMultiUser": "yes",
            "PolicySetuid": "no",
        }
        body = {"v": 1, "ad": ad, "pilots": {"idle": 0, "running": 1, "held": 0}}
        body["by_frontend"] = {FRONTEND: {"idle": 0, "running": 1, "held": 0}}
        web.api("factory", "PUT", f"/api/v1/entries/{entry}", json=body)
        token = web.api(
            "frontend",
            "POST",
            "/api/v1/pilot-tokens",
            json={"v": 1, "entry": entry, "lifetime_s": 7200},
        )["token"]
        request = {"v": 1, "idle_wanted": 2, "max_running": 10, "pilot_token": token}
        web.api("frontend", "PUT", f"/api/v1/requests/{FRONTEND}/{entry}", json=request)
        token_file = web.pool.root / f"{entry}.token"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
    report = {
        "v": 1,
        "entry": "ce-beta",
        "pilot": "beta-0",
        "ok": False,
        "reason": "switch_missing",
        "message": "pilotage-exec is not installed",
    }
    web.api("factory", "POST", "/api/v1/validation-reports", json=report)


def _pilots(web: WebPool) -> None:
    backend = web.pool.pilots(0)  # the pool's backend, with the agent zipapp
    for entry, site in ENTRIES.items():
        launch = PilotLaunch(
            server_url=web.url,
            ca=web.pool.state.ca_cert,
            token_file=web.pool.root / f"{entry}.token",
            cpus=2,
            memory_mb=2048,
            disk_mb=4096,
            site=site,
            extra_args=("--attr", f'EntryName="{entry}"'),
        )
        backend.submit(f"pilot-{site}", launch)


@contextmanager
def start_web_pool() -> Iterator[WebPool]:
    """The live pool described above, stopped after the module's tests."""
    root = Path(tempfile.mkdtemp(prefix="pilotage-pool-"))
    settings = {"lease_s": "30", "heartbeat_s": "1", "reap_interval_s": "0.5"}
    pool = Pool(root, f"sqlite:///{root / 'pilotage.db'}", settings=settings)
    try:
        pool.start()
        tokens = {
            "admin": pool.token("web-admin", "admin"),
            "alice": pool.token("alice", "user"),
            "bob": pool.token("bob", "user"),
            "factory": pool.token(FACTORY, "factory"),
            "frontend": pool.token(FRONTEND, "frontend"),
            "pilot": pool.token("some-pilot", "pilot"),
        }
        web = WebPool(pool, tokens)
        _entries(web)
        # Held before any pilot could take it.
        (web.held,) = _submit(web, "alice", [dict(LONG)])
        web.api(
            "alice",
            "POST",
            "/api/v1/jobs/actions",
            json={"action": "hold", "ids": [web.held], "reason": "waiting for inputs"},
        )
        web.jobs["alice"] = _submit(web, "alice", [QUICK, QUICK, QUICK, LONG, LONG])
        web.jobs["bob"] = _submit(web, "bob", [FAILS, LONG])
        _pilots(web)
        want = {job: "COMPLETED" for job in web.jobs["alice"][:3] + web.jobs["bob"][:1]}
        want.update({job: "RUNNING" for job in web.jobs["alice"][3:] + web.jobs["bob"][1:]})
        want[web.held] = "HELD"
        web.wait_states(want)
        yield web
        for client in web.clients:
            client.close()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)
