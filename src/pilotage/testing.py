"""Test helpers shipped with the package: a real pool in real processes.

:class:`Pool` starts ``pilotage server`` as a subprocess on 127.0.0.1 with port 0 and a
database of the caller's choosing, mints tokens, runs the CLI, and starts local pilots
running the real agent zipapp. :func:`postgres_cluster` runs a throwaway PostgreSQL
cluster for it (the test suite and the benchmarks share it). Nothing here replaces any
part of pilotage; it only starts the real parts and talks to them the way users and
pilots do.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket as sockets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotage.cli.client import Client, Endpoint, locate
from pilotage.errors import Transient
from pilotage.factory.backends.local import LocalBackend, PilotLaunch
from pilotage.pilot.zipapp import build_zipapp
from pilotage.statedir import StateDir
from pilotage.testing_accounts import AccountsUnavailable, ensure_system_account

#: What servers sharing one database share besides it: the pool's key files.
REPLICA_KEYS = ("ca", "server", "tokens", "credentials", "pilotage.toml")


@dataclass
class Pool:
    """One pool: its state directory, its server process, its pilots."""

    root: Path
    db_url: str
    settings: Mapping[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    backend: LocalBackend | None = None

    @property
    def state(self) -> StateDir:
        return StateDir(self.root / "state")

    @property
    def url(self) -> str:
        return self.state.url_file.read_text(encoding="utf-8").strip()

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for pilotage processes of this pool."""
        env = dict(os.environ)
        env.pop("PILOTAGE_TOKEN", None)
        env.update(
            {
                "PILOTAGE_STATE_DIR": str(self.state.root),
                "PILOTAGE_SERVER_PORT": "0",
                "PILOTAGE_SERVER_DB": self.db_url,
            }
        )
        env.update({f"PILOTAGE_SERVER_{k.upper()}": v for k, v in self.settings.items()})
        env.update(extra or {})
        return env

    def start(self) -> Pool:
        """Initialise the state directory and start one server."""
        self.state.init(pool_name="test")
        os.chmod(self.root, 0o755)  # noqa: S103  (local users reach the socket)
        self.server = self.start_server()
        return self

    def start_server(
        self, *, socket: Path | None = None, url_file: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a server process (several may share one PostgreSQL database)."""
        socket = socket or self.state.socket
        url_file = url_file or self.state.url_file
        for stale in (url_file,):
            stale.unlink(missing_ok=True)
        log = (self.root / f"server-{len(self.servers)}.log").open("ab")
        command = [
            sys.executable,
            "-m",
            "pilotage.cli",
            "server",
            "--log-level",
            "info",
            "--socket",
            str(socket),
            "--url-file",
            str(url_file),
        ]
        process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.servers.append(process)
        deadline = time.monotonic() + 180  # a loaded machine starts it slowly
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {self.server_log()}")
            if socket.exists() and url_file.exists():
                try:
                    with Client(Endpoint(url="http://local", socket=socket)) as client:
                        client.call("GET", "/healthz")
                    return process
                except Transient:
                    pass
            time.sleep(0.1)
        end_processes([process])
        raise RuntimeError(f"server did not start: {self.server_log()}")

    def replica(self, root: Path, **settings: str) -> Pool:
        """Another server on this pool's database, as on another host: a state directory
        of its own holding copies of the pool's key files only (docs/operations.md,
        "Several servers"). Not started."""
        state = root / "state"
        state.mkdir(parents=True)
        state.chmod(0o755)
        for name in REPLICA_KEYS:
            source = self.state.root / name
            if source.is_dir():
                shutil.copytree(source, state / name)
            elif source.exists():
                shutil.copy2(source, state / name)
        return Pool(root, self.db_url, settings={**self.settings, **settings})

    def server_log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.root.glob("server-*.log"))
        )

    def admin(self) -> Client:
        """A client over the Unix socket (the server's own user: admin)."""
        return Client(locate(self.state, None, None, None))

    def token(self, subject: str, role: str, lifetime_s: int = 3600) -> str:
        with self.admin() as client:
            answer = client.call(
                "POST",
                "/api/v1/tokens",
                json={"subject": subject, "role": role, "lifetime_s": lifetime_s},
            )
        return str(answer["token"])

    def token_file(self, subject: str, role: str) -> Path:
        path = self.root / f"{subject}.{role}.token"
        if not path.exists():
            path.write_text(self.token(subject, role) + "\n", encoding="utf-8")
            os.chmod(path, 0o644)
        return path

    def remote(self, token: str | None) -> Client:
        """A client over TLS with a bearer token (or none)."""
        return Client(Endpoint(url=self.url, token=token, ca=self.state.ca_cert))

    def cli(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pilotage ARGS`` (as ``user`` via runuser when given); capture its output."""
        command = [sys.executable, "-m", "pilotage.cli", *args]
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        return subprocess.run(
            command, cwd=cwd, env=self.env(env), capture_output=True, text=True, timeout=timeout
        )

    def pilots(self, count: int, **launch: Any) -> LocalBackend:
        """Start ``count`` local pilots with a pilot token."""
        if self.backend is None:
            self.backend = LocalBackend(
                agent=build_zipapp(self.root / "agent.pyz"), workdir_root=self.root / "pilots"
            )
        token_file = self.token_file("pilots", "pilot")
        spec = PilotLaunch(
            server_url=self.url, ca=self.state.ca_cert, token_file=token_file, **launch
        )
        start = len(self.backend.processes)
        for i in range(start, start + count):
            self.backend.submit(f"pilot-{i}", spec)
        return self.backend

    def wait_jobs(self, ids: list[str], states: tuple[str, ...], timeout: float = 120) -> list[Any]:
        """Poll until every named job is in one of ``states``; return the jobs."""
        deadline = time.monotonic() + timeout
        with self.admin() as client:
            while True:
                jobs: list[Any] = client.call("GET", "/api/v1/jobs", params={"id": ids})
                if jobs and all(j["state"] in states for j in jobs):
                    return jobs
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jobs not in {states}: {jobs}")
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop pilots and servers, each reaped, whatever the test left running."""
        try:
            if self.backend is not None:
                self.backend.remove_all(grace_s=5)
        finally:
            end_processes(self.servers, grace_s=15)


def end_processes(processes: Iterable[subprocess.Popen[Any]], *, grace_s: float = 0.0) -> None:
    """End each process and reap it, so none outlives a test, failed or not, nor is left
    unwaited (a zombie, and a ResourceWarning when its ``Popen`` is collected).

    With ``grace_s``, SIGTERM first and SIGKILL whatever still runs ``grace_s`` seconds
    later; without, SIGKILL at once. Their pipes are closed too.
    """
    every = list(processes)
    running = [p for p in every if p.poll() is None]
    if grace_s > 0:
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace_s
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
    for process in running:
        process.kill()  # a no-op for one that has ended
        process.wait()
    for process in every:
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


#: The system account that runs PostgreSQL when we are root (PostgreSQL refuses root).
PG_SYSTEM_USER = "pilotage-pg"
#: The database superuser of a throwaway cluster, the same whoever starts it.
PG_SUPERUSER = "pilotage"


class ServiceUnavailable(RuntimeError):
    """A service a helper needs is not installed on this machine (the message says why)."""


class ServiceFailed(RuntimeError):
    """A service was found but did not start or stop; the message carries its output."""


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Run a throwaway PostgreSQL cluster; yield its URL without a database name.

    The URL looks like ``postgresql+psycopg://pilotage:<password>@127.0.0.1:<port>/``.
    The cluster listens on 127.0.0.1 only, with password (SCRAM) authentication so other
    local users cannot use it, its socket in its own directory, and fsync off. As root it
    runs as the system user :data:`PG_SYSTEM_USER` (created if missing). Raises
    :class:`ServiceUnavailable` when PostgreSQL (or, as root, useradd/runuser) is missing
    and :class:`ServiceFailed` when a PostgreSQL tool fails. The cluster is stopped and
    deleted on exit.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        raise ServiceUnavailable(
            "no initdb and pg_ctl found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH); "
            "install postgresql or run scripts/provision-test-services"
        )
    owner = _cluster_owner()
    password = secrets.token_hex(16)
    base = Path(tempfile.mkdtemp(prefix="pilotage-pg-"))
    try:
        data = base / "data"
        (base / "socket").mkdir()
        (base / "pwfile").write_text(password + "\n")
        if owner is not None:
            _chown_tree(base, owner)
        _run_as(
            owner,
            [
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={PG_SUPERUSER}",
                f"--pwfile={base / 'pwfile'}",
                "--auth=scram-sha-256",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            ],
            cwd=base,
        )
        (base / "pwfile").unlink()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# pilotage throwaway cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base / 'socket'}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        port = _start_cluster(bindir, owner, base)
        url = f"postgresql+psycopg://{PG_SUPERUSER}:{password}@127.0.0.1:{port}/"
        _HANDLES[url] = PostgresHandle(bindir, owner, base, port)
        try:
            yield url
        finally:
            _HANDLES.pop(url, None)
            _run_as(
                owner,
                [str(bindir / "pg_ctl"), f"--pgdata={data}", "--mode=fast", "--wait", "stop"],
                cwd=base,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _admin_engine(server_url: str) -> Any:
    """An engine on the cluster's ``postgres`` database, for CREATE and DROP DATABASE."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(
        sqlalchemy.make_url(server_url).set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )


def create_database(server_url: str, name: str) -> str:
    """Create the empty database ``name`` on the cluster at ``server_url`` (a URL without
    a database name, as :func:`postgres_cluster` yields); its URL. It stays."""
    admin = _admin_engine(server_url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return server_url + name


@contextlib.contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """:func:`create_database` under a fresh name; yield its URL; drop it after."""
    name = f"test_{secrets.token_hex(6)}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        admin = _admin_engine(server_url)
        try:
            with admin.connect() as conn:
                # FORCE: a connection the test leaked must not keep its database alive.
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.dispose()


@dataclass(frozen=True)
class PostgresHandle:
    """A running throwaway cluster, to stop and start it again (fault tests, chaos)."""

    bindir: Path
    owner: str | None
    base: Path
    port: int

    def stop(self) -> None:
        """Stop the cluster (fast: connections are cut)."""
        self._pg_ctl("--mode=fast", "--wait", "stop")

    def start(self) -> None:
        """Start the stopped cluster again, on the same port."""
        log = self.base / "postgresql.log"
        self._pg_ctl(f"--log={log}", "--wait", "--timeout=60", f"--options=-p {self.port}", "start")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self.bindir / "pg_ctl"), f"--pgdata={self.base / 'data'}", *args]
        _run_as(self.owner, command, cwd=self.base)


_HANDLES: dict[str, PostgresHandle] = {}


def postgres_handle(url: str) -> PostgresHandle:
    """The handle of the cluster :func:`postgres_cluster` yielded ``url`` for."""
    return _HANDLES[url]


def _postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, Debian's newest, or PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        answer = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if answer.returncode == 0:
            candidates.append(Path(answer.stdout.strip()))

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates += debian
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _cluster_owner() -> str | None:
    """The account to run PostgreSQL as: None for ourselves, a system user when root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        raise ServiceUnavailable("running PostgreSQL as root needs useradd and runuser")
    try:
        ensure_system_account(PG_SYSTEM_USER)
    except AccountsUnavailable as exc:
        raise ServiceFailed(f"cannot create system user {PG_SYSTEM_USER}: {exc}") from None
    return PG_SYSTEM_USER


def _chown_tree(root: Path, owner: str) -> None:
    account = pwd.getpwnam(owner)
    for path in [root, *root.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)


def _run_as(owner: str | None, command: list[str], *, cwd: Path) -> None:
    # cwd: PostgreSQL's tools fail when they cannot read the directory they start in.
    if owner is not None:
        command = ["runuser", "-u", owner, "--", *command]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceFailed(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )


def _start_cluster(bindir: Path, owner: str | None, base: Path) -> int:
    """Start the cluster on a free port; return the port.

    The port is found by binding port 0 and releasing it, so another process can take it
    before PostgreSQL does; that race is retried with a new port.
    """
    log = base / "postgresql.log"
    for _attempt in range(3):
        with sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        log.unlink(missing_ok=True)
        command = [str(bindir / "pg_ctl"), f"--pgdata={base / 'data'}", f"--log={log}"]
        command += ["--wait", "--timeout=60", f"--options=-p {port}", "start"]
        if owner is not None:
            command = ["runuser", "-u", owner, "--", *command]
        result = subprocess.run(command, cwd=base, capture_output=True, text=True)
        if result.returncode == 0:
            return port
        server_log = log.read_text(errors="replace") if log.exists() else ""
        if "could not bind" not in server_log:
            break
    raise ServiceFailed(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{server_log}")
