"""``pilotage demo``: a whole pool on this machine, an example cluster run through it.

A throwaway state directory, the server, local pilots running the real agent zipapp,
the example cluster from ``examples/hello`` submitted over the Unix socket, a progress
bar, a results table, and a clean shutdown. Exits 0 only if every job completed with
exit code 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pilotage.cli.client import Client, locate
from pilotage.cli.example import copy_example
from pilotage.cli.jobs import bring_back
from pilotage.cli.submitting import submit
from pilotage.errors import OperatorError, Transient
from pilotage.factory.backends.local import LocalBackend, PilotLaunch
from pilotage.pilot.zipapp import build_zipapp
from pilotage.scratch import scratch_dir
from pilotage.statedir import StateDir

FINAL = ("COMPLETED", "REMOVED", "HELD")


def start_server(
    state: StateDir, db: str | None, log: Path, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``pilotage server`` on a free port and wait until it answers."""
    env = dict(os.environ, PILOTAGE_STATE_DIR=str(state.root), PILOTAGE_SERVER_PORT="0")
    env.update(extra_env or {})
    if db:
        env["PILOTAGE_SERVER_DB"] = db
    command = [sys.executable, "-m", "pilotage.cli", "server", "--log-level", "warning"]
    with log.open("ab") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
            raise OperatorError(f"the server exited at start: {tail}")
        if state.socket.exists() and state.url_file.exists():
            try:
                with Client(locate(state, None, None, None)) as client:
                    client.call("GET", "/healthz")
                return server
            except Transient:
                pass
        time.sleep(0.2)
    server.kill()
    raise OperatorError(f"the server did not start within 60 s; see {log}")


def _results(jobs: list[dict[str, Any]], workdir: Path) -> Table:
    table = Table(title="Results", title_justify="left")
    for col in ("JOB", "STATE", "EXIT", "WALL", "SITE", "OUTPUT"):
        table.add_column(col)
    for job in jobs:
        out = workdir / "out" / f"hello.{job['cluster']}.{job['proc']}.out"
        excerpt = out.read_text(encoding="utf-8").splitlines()[0] if out.exists() else ""
        wall = "" if job["wall_s"] is None else f"{job['wall_s']:.1f}s"
        exit_code = "" if job["exit_code"] is None else str(job["exit_code"])
        state = job["state"] if job["state"] != "HELD" else f"HELD: {job['hold_reason']}"
        table.add_row(job["id"], state, exit_code, wall, job["site"] or "", excerpt[:60])
    return table


def run_demo(*, jobs: int, pilots: int, keep_running: bool, db: str | None) -> int:
    """Run the demo in a scratch directory, removed at the end (also when interrupted)
    unless ``keep_running`` or it failed (its logs are kept then); return the exit code."""
    with scratch_dir("pilotage-demo-") as scratch:
        code = _run_demo(scratch.path, jobs=jobs, pilots=pilots, keep_running=keep_running, db=db)
        scratch.keep = keep_running or code != 0
        if code != 0:
            Console().print(f"logs kept in {scratch.path}; remove it when done")
        return code


def _run_demo(root: Path, *, jobs: int, pilots: int, keep_running: bool, db: str | None) -> int:
    console = Console()
    state = StateDir(root / "state")
    state.init(pool_name="demo")
    console.print(f"[bold]pilotage demo[/] in {root}")
    with ExitStack() as stack:
        server = start_server(state, db, root / "server.log")
        stack.callback(_stop, server)
        client = stack.enter_context(Client(locate(state, None, None, None)))
        url = state.url_file.read_text(encoding="utf-8").strip()
        console.print(f"server up at {url} (and {state.socket})")
        token = client.call(
            "POST",
            "/api/v1/tokens",
            json={"subject": "demo-pilots", "role": "pilot", "lifetime_s": 3600},
        )["token"]
        token_file = root / "pilot.token"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n", encoding="utf-8")
        backend = LocalBackend(agent=build_zipapp(root / "agent.pyz"), workdir_root=root / "pilots")
        if not keep_running:
            stack.callback(backend.remove_all)
        launch = PilotLaunch(
            server_url=url,
            ca=state.ca_cert,
            token_file=token_file,
            cpus=1,
            memory_mb=512,
            disk_mb=2048,
            idle_timeout_s=120,
        )
        for i in range(pilots):
            backend.submit(f"pilot-{i}", launch)
        console.print(f"started {pilots} local pilots")

        workdir = copy_example("hello", root / "hello")
        description = workdir / "hello.submit"
        text = description.read_text(encoding="utf-8")
        description.write_text(re.sub(r"(?m)^queue\s+\d+\s*$", f"queue {jobs}", text))
        previous = Path.cwd()
        os.chdir(workdir)
        try:
            me = client.call("GET", "/api/v1/whoami")["name"]
            cluster, count = submit(client, description, me)
        finally:
            os.chdir(previous)
        console.print(f"submitted {count} jobs as cluster {cluster}")
        final = _follow(client, cluster, count, console)
        bring_back(client, final)
        console.print(_results(final, workdir))
        done = sum(1 for j in final if j["state"] == "COMPLETED" and j["exit_code"] == 0)
        where = f"outputs in {workdir}/out" if keep_running else "the pool is removed now"
        console.print(f"[bold]{done}/{count} jobs completed[/]; {where}")
        if keep_running:
            console.print(f"pool left running: PILOTAGE_STATE_DIR={state.root}")
            stack.pop_all()
        return 0 if done == count else 1


def _follow(client: Client, cluster: int, count: int, console: Console) -> list[dict[str, Any]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("running", total=count)
        while True:
            jobs: list[dict[str, Any]] = client.call(
                "GET", "/api/v1/jobs", params={"id": [str(cluster)]}
            )
            finished = sum(1 for j in jobs if j["state"] in FINAL)
            running = sum(1 for j in jobs if j["state"] == "RUNNING")
            progress.update(task, completed=finished, description=f"{running} running")
            if finished == count:
                return jobs
            time.sleep(0.5)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
