"""Helpers for end-to-end tests that speak to a real pool the way its callers do.

* :func:`https` opens an HTTPS client on a pool with a bearer token (or none), checking
  the server's certificate against the pool CA, as a remote user or a pilot does;
* :class:`ProtocolPilot` speaks the pilot protocol (docs/pilot-protocol.md) with such a
  client, without an agent process: for tests of the server's side of the protocol;
* :func:`snapshot` reads everything the pool has stored (every table of its database,
  every file of its spool), so a test can show that a refused request changed nothing;
* :class:`LocalUsers` runs the CLI as real Unix users (``alice``, ``bob``) through
  ``runuser``, so the server knows them by the socket's peer credentials.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pilotage.api.wire import PILOT_SECRET_HEADER
from pilotage.store.tables import metadata
from pilotage.testing import Pool

#: The free resources every protocol pilot offers; a default job (1 cpu, 128 MB) fits once.
FREE = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}


def https(pool: Pool, token: str | None, *, url: str | None = None) -> httpx.Client:
    """An HTTPS client on the pool (or on another server ``url`` of it) with ``token``."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(
        base_url=url or pool.url,
        verify=ssl.create_default_context(cafile=pool.state.ca_cert),
        headers=headers,
        timeout=httpx.Timeout(60.0, connect=10.0),
    )


def refusal(response: httpx.Response) -> tuple[int, str]:
    """The status and the one-sentence message of an error answer."""
    body = response.json()
    assert set(body) == {"error", "message"}, body
    return response.status_code, str(body["message"])


def job_specs(count: int, **fields: Any) -> list[dict[str, Any]]:
    """``count`` instant jobs as the API takes them: nothing to transfer, nothing to run."""
    spec = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp", **fields}
    return [dict(spec) for _ in range(count)]


def submit_api(client: Any, count: int, **fields: Any) -> int:
    """Submit ``count`` jobs through the API (a :class:`pilotage.cli.client.Client` or an
    :class:`httpx.Client`); return the cluster id."""
    if isinstance(client, httpx.Client):
        opened = client.post("/api/v1/clusters")
        assert opened.status_code == 201, opened.text
        cluster = int(opened.json()["cluster_id"])
        body = {"v": 1, "jobs": job_specs(count, **fields)}
        committed = client.post(f"/api/v1/clusters/{cluster}/jobs", json=body)
        assert committed.status_code == 201, committed.text
        return cluster
    cluster = int(client.call("POST", "/api/v1/clusters")["cluster_id"])
    client.call(
        "POST",
        f"/api/v1/clusters/{cluster}/jobs",
        json={"v": 1, "jobs": job_specs(count, **fields)},
    )
    return cluster


class ProtocolPilot:
    """One registered pilot, driven call by call over HTTPS with a pilot token.

    Its client then carries the pilot's secret on every call, as an agent's does: give
    each pilot a client of its own.
    """

    def __init__(self, http: httpx.Client, name: str = "pilot", **registration: Any) -> None:
        self.http = http
        body = {
            "v": 1,
            "name": name,
            "site": "test-site",
            "host": "wn.example.org",
            "lifetime_s": 3600,
            **{k: FREE[k] for k in ("cpus", "memory_mb", "disk_mb", "gpus")},
            **registration,
        }
        answer = self.post("/pilot/v1/pilots", json=body)
        assert answer.status_code == 201, answer.text
        self.id: str = answer.json()["pilot_id"]
        self.secret: str = answer.json()["pilot_secret"]
        http.headers[PILOT_SECRET_HEADER] = self.secret

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST, waiting out a 503 as an agent does (its Retry-After, bounded)."""
        deadline = time.monotonic() + 60
        while True:
            response = self.http.post(path, **kwargs)
            if response.status_code != 503 or time.monotonic() > deadline:
                return response
            time.sleep(min(2.0, float(response.headers.get("Retry-After", "1"))))

    def ask(self) -> dict[str, Any] | None:
        """Ask for work; return the claim given, if any."""
        answer = self.post(
            f"/pilot/v1/pilots/{self.id}/claims", json={"v": 1, "free": FREE, "time_left_s": 3000}
        )
        assert answer.status_code == 200, answer.text
        claim: dict[str, Any] | None = answer.json()["claim"]
        return claim

    def report(
        self, claim_id: str, exit_code: int = 0, *, next_work: bool = False
    ) -> httpx.Response:
        """Report a result for ``claim_id`` (optionally asking for the next job)."""
        body: dict[str, Any] = {"v": 1, "exit_code": exit_code, "wall_s": 0.1, "cpu_s": 0.05}
        if next_work:
            body["next"] = {"v": 1, "free": FREE, "time_left_s": 3000}
        return self.post(f"/pilot/v1/claims/{claim_id}/result", json=body)

    def heartbeat(self, *claim_ids: str) -> httpx.Response:
        return self.post(
            f"/pilot/v1/pilots/{self.id}/heartbeat", json={"v": 1, "claims": claim_ids}
        )

    def fetch_input(self, claim_id: str) -> httpx.Response:
        return self.http.get(f"/pilot/v1/claims/{claim_id}/input")

    def upload_output(self, claim_id: str, tar: bytes) -> httpx.Response:
        return self.http.put(
            f"/pilot/v1/claims/{claim_id}/output",
            content=tar,
            headers={"Content-Type": "application/x-tar"},
        )


#: Tables the server rewrites on its own timer (the fair-share accountant's saved state):
#: they change with time, not with what a caller sends.
SERVER_BOOKKEEPING = frozenset({"fairshare_state"})


def snapshot(pool: Pool, *, volatile: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything the pool has stored: each table's rows in key order, each spool file.

    ``volatile`` names ``table.column`` values to leave out (a liveness time, say).
    """
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    tables: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                if table.name in SERVER_BOOKKEEPING:
                    continue
                columns = [c for c in table.columns if f"{table.name}.{c.name}" not in volatile]
                order = list(table.primary_key.columns)
                rows = conn.execute(sa.select(*columns).order_by(*order)).all()
                tables[table.name] = [tuple(r) for r in rows]
    finally:
        engine.dispose()
    spool = pool.state.spool
    files = {
        str(p.relative_to(spool)): p.stat().st_size for p in sorted(spool.rglob("*")) if p.is_file()
    }
    return {"tables": tables, "spool": files}


def spool_files(pool: Pool) -> list[str]:
    """The files of the pool's spool (including half-received uploads in ``incoming/``)."""
    return sorted(str(p.relative_to(pool.state.spool)) for p in pool.state.spool.rglob("*"))


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``pilotage ARGS`` in a clean environment of the caller's choosing (no pool needed)."""
    return subprocess.run(
        [sys.executable, "-m", "pilotage.cli", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# Runs the CLI under an interpreter found for the user; the venv's packages (and the
# editable pilotage) are added as a site directory ahead of the system's (whose older
# cryptography would otherwise win), so the same code runs either way.
_LAUNCH = (
    "import site, sys; d = sys.argv.pop(1); sys.path.insert(0, d); site.addsitedir(d); "
    "sys.argv[0] = 'pilotage'; "
    "from pilotage.cli.main import main; main()"
)


@dataclass(frozen=True)
class LocalUsers:
    """Runs ``pilotage`` as real local users, who reach the server through its socket."""

    python: str
    names: tuple[str, ...]

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def workdir(self, pool: Pool, user: str, files: Mapping[str, str]) -> Path:
        """A submit directory below the pool's root owned by ``user`` holding ``files``."""
        account = pwd.getpwnam(user)
        work = pool.root / f"work-{user}"
        work.mkdir()
        for name, text in files.items():
            (work / name).write_text(text)
            if name.endswith(".sh"):
                (work / name).chmod(0o755)
        for path in [work, *work.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        return work

    def cli(
        self, pool: Pool, user: str, *args: str, cwd: Path | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``pilotage ARGS`` as ``user`` (via runuser), from ``cwd`` (default: their home),
        with ``input`` on its standard input (default: none, /dev/null)."""
        command = ["runuser", "-u", user, "--", self.python, "-c", _LAUNCH, _site_dir(), *args]
        env = pool.env({"HOME": str(self.home(user)), "USER": user, "LOGNAME": user})
        return subprocess.run(
            command,
            cwd=cwd or self.home(user),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
        )

    def popen(self, pool: Pool, user: str, *args: str) -> subprocess.Popen[str]:
        """``pilotage ARGS`` as ``user``, left running with its stdout a pipe (``tail -f``),
        in a session of its own (``os.killpg`` ends runuser and the command)."""
        command = ["runuser", "-u", user, "--", self.python, "-c", _LAUNCH, _site_dir(), *args]
        env = pool.env({"HOME": str(self.home(user)), "USER": user, "LOGNAME": user})
        return subprocess.Popen(
            command, cwd=self.home(user), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip


def _site_dir() -> str:
    return sysconfig.get_paths()["purelib"]


def python_for(user: str) -> str | None:
    """An interpreter ``user`` can run that imports pilotage: ours, else the system's of the
    same version (ours may live below a directory closed to others, such as /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")]
    probe = f"import site; site.addsitedir({_site_dir()!r}); import pilotage.cli.main"
    for python in candidates:
        if python is None:
            continue
        command = ["runuser", "-u", user, "--", python, "-c", probe]
        if subprocess.run(command, capture_output=True, cwd="/").returncode == 0:
            return python
    return None
