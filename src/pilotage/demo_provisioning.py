"""``pilotage demo --provisioning``: pilots that appear only where queued jobs can run.

A server, a factory with two local entries that differ in their attributes (``alpha``
and ``beta``), and a frontend, each a real process. A cluster whose ``Requirements``
admit only ``beta`` is submitted; the demo watches the collector's entry ads and the
queue, prints a short timeline, and checks that

- pilots appeared at ``beta`` and never at ``alpha``;
- every job completed, at ``beta``;
- the pilots went away once the queue drained (the agents' idle timeout ends them, the
  factory sees them finish);
- the factory and the frontend stop cleanly on SIGTERM.

Exit 0 when all of that held. :func:`run_with_server` is the part after the server has
started, so a test can run it on a pool of its own (any database).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from pilotage.cli.client import Client, locate
from pilotage.cli.submitting import submit
from pilotage.factory.backends.local import LocalBatch
from pilotage.scratch import scratch_dir
from pilotage.statedir import StateDir

#: The server setting that ends idle pilots quickly, so the demo sees them go.
SERVER_ENV = {"PILOTAGE_SERVER_IDLE_TIMEOUT_S": "4", "PILOTAGE_SERVER_HEARTBEAT_S": "1"}
ENTRIES = """\
[factory]
name = "demo-factory"
cycle_s = 1

[[entry]]
name = "alpha"
backend = "local"
[entry.attrs]
site = "alpha"
cpus = 2
memory_mb = 1024
disk_mb = 2048
max_walltime_s = 3600
[entry.policy]
multi_user = "yes"
setuid = "allow"
log_only = "allow"
bypass_on_error = "yes"

[[entry]]
name = "beta"
backend = "local"
[entry.attrs]
site = "beta"
cpus = 2
memory_mb = 2048
disk_mb = 2048
max_walltime_s = 3600
[entry.policy]
multi_user = "yes"
setuid = "allow"
log_only = "allow"
bypass_on_error = "yes"
"""
FRONTEND = """\
[frontend]
name = "demo-frontend"
cycle_s = 1
switch = "optional"
token_lifetime_s = 3600
entry_max_age_s = 30

[pressure]
max_idle = 2
max_running = 3
idle_curb = 2
remove_excess = "idle"
"""
JOB = '#!/bin/sh\nsleep 2\necho "job $1 ran at $PILOTAGE_SITE"\n'
SUBMIT = """\
executable = job.sh
arguments = $(Process)
requirements = Site == "beta"
request_cpus = 1
request_memory = 1500MB
request_disk = 10MB
output = out/job.$(Process).out
error = out/job.$(Process).err
queue {jobs}
"""


@dataclass
class Watch:
    """What the demo saw: the timeline and the most pilots seen at each entry."""

    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    most: dict[str, int] = field(default_factory=dict)
    last: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def note(self, key: str, value: tuple[Any, ...], text: str, console: Console) -> None:
        """Add ``text`` to the timeline when ``value`` changed for ``key``."""
        if self.last.get(key) == value:
            return
        self.last[key] = value
        line = f"{time.monotonic() - self.started:6.1f}s  {text}"
        self.lines.append(line)
        console.print(line)


def _service(
    state: StateDir, root: Path, token: Path, args: list[str], name: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PILOTAGE_STATE_DIR=str(state.root))
    env.pop("PILOTAGE_TOKEN", None)
    command = [sys.executable, "-m", "pilotage.cli", "--token", str(token), *args]
    with (root / f"{name}.log").open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes], grace_s: float = 20) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -9
    return process.returncode


def _token_file(client: Client, root: Path, subject: str, role: str) -> Path:
    answer = client.call(
        "POST", "/api/v1/tokens", json={"subject": subject, "role": role, "lifetime_s": 86400}
    )
    path = root / f"{role}.token"
    path.touch(mode=0o600)
    path.write_text(answer["token"] + "\n", encoding="utf-8")
    return path


def _live(entry: dict[str, Any]) -> int:
    p = entry["pilots"]
    return int(p["idle"] + p["running"] + p["held"])


def start_services(
    state: StateDir, root: Path, client: Client, stack: ExitStack
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Start a factory on ``root/entries.toml`` and a frontend on ``root/frontend.toml``
    (named ``demo-factory`` and ``demo-frontend``), each with its own token; ``stack``
    stops them and removes the pilots left."""
    factory_token = _token_file(client, root, "demo-factory", "factory")
    frontend_token = _token_file(client, root, "demo-frontend", "frontend")
    factory_args = ["factory", "--entries", str(root / "entries.toml")]
    factory_args += ["--workdir", str(root / "factory")]
    factory = _service(state, root, factory_token, factory_args, "factory")
    stack.callback(_cleanup_pilots, root / "factory" / "pilots")
    stack.callback(_stop, factory)
    frontend_args = ["frontend", "--config", str(root / "frontend.toml")]
    frontend = _service(state, root, frontend_token, frontend_args, "frontend")
    stack.callback(_stop, frontend)
    return factory, frontend


def run_with_server(
    state: StateDir, root: Path, console: Console, *, jobs: int = 4, timeout_s: float = 90
) -> int:
    """Run the demo against the server of ``state``; see the module docstring."""
    (root / "entries.toml").write_text(ENTRIES, encoding="utf-8")
    (root / "frontend.toml").write_text(FRONTEND, encoding="utf-8")
    work = root / "work"
    (work / "out").mkdir(parents=True)
    (work / "job.sh").write_text(JOB, encoding="utf-8")
    (work / "job.sh").chmod(0o755)
    (work / "job.submit").write_text(SUBMIT.format(jobs=jobs), encoding="utf-8")
    watch = Watch()
    with Client(locate(state, None, None, None)) as client, ExitStack() as stack:
        factory, frontend = start_services(state, root, client, stack)
        watch.note("start", (), "factory (entries alpha, beta) and frontend started", console)

        submitted_at: float | None = None
        cluster = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process, name in ((factory, "factory"), (frontend, "frontend")):
                if process.poll() is not None:
                    console.print(f"[red]the {name} exited ({process.returncode}); see {root}[/]")
                    return 1
            entries = {e["name"]: e for e in client.call("GET", "/api/v1/entries")}
            if submitted_at is None and {"alpha", "beta"} <= set(entries):
                previous = Path.cwd()
                os.chdir(work)
                try:
                    me = client.call("GET", "/api/v1/whoami")["name"]
                    cluster, count = submit(client, work / "job.submit", me)
                finally:
                    os.chdir(previous)
                submitted_at = time.monotonic()
                watch.note(
                    "submit",
                    (),
                    f"submitted cluster {cluster}: {count} jobs "
                    'requiring Site == "beta" and 1500 MB',
                    console,
                )
            for name, e in sorted(entries.items()):
                live = _live(e)
                watch.most[name] = max(watch.most.get(name, 0), live)
                reg = e["registered"]
                watch.note(
                    name,
                    (live, reg["total"], reg["busy"]),
                    f"{name}: {live} pilots at the entry, {reg['total']} joined the "
                    f"pool, {reg['busy']} running jobs",
                    console,
                )
            if submitted_at is None:
                time.sleep(0.5)
                continue
            queue = client.call("GET", "/api/v1/jobs", params={"id": [str(cluster)]})
            states = sorted(j["state"] for j in queue)
            watch.note(
                "jobs",
                tuple(states),
                "jobs: " + ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states))),
                console,
            )
            drained = all(j["state"] in ("COMPLETED", "REMOVED", "HELD") for j in queue)
            if drained and all(_live(e) == 0 for e in entries.values()):
                break
            time.sleep(0.5)
        else:
            console.print(f"[red]not done within {timeout_s:.0f} s; logs in {root}[/]")
            return 1
        stack.pop_all()
        codes = {"frontend": _stop(frontend), "factory": _stop(factory)}
        watch.note(
            "stop",
            (),
            f"SIGTERM: frontend exited {codes['frontend']}, factory exited {codes['factory']}",
            console,
        )
        return _verdict(queue, watch, codes, console)


def _verdict(
    queue: list[dict[str, Any]], watch: Watch, codes: dict[str, int], console: Console
) -> int:
    checks = {
        "pilots appeared at beta": watch.most.get("beta", 0) > 0,
        "no pilot ever at alpha": watch.most.get("alpha", 0) == 0,
        "every job completed at beta": all(
            j["state"] == "COMPLETED" and j["exit_code"] == 0 and j["site"] == "beta" for j in queue
        ),
        "the pilots went away when the queue drained": True,
        "factory and frontend stopped cleanly": set(codes.values()) == {0},
    }
    for text, ok in checks.items():
        console.print(f"{'[green]ok[/]' if ok else '[red]FAILED[/]'}  {text}")
    return 0 if all(checks.values()) else 1


def _cleanup_pilots(root: Path) -> None:
    """Remove every local pilot still running (after a failed demo)."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        batch = LocalBatch(entry, grace_s=2)
        batch.remove([d.name for d in entry.iterdir() if d.is_dir()])


def run_provisioning_demo(*, db: str | None, jobs: int = 4) -> int:
    """The whole demo in a throwaway state directory; the exit code."""
    from pilotage.demo import _stop as stop_server
    from pilotage.demo import start_server

    console = Console()
    # Removed at the end, and when interrupted; kept (for its logs) only after a failure.
    with scratch_dir("pilotage-provisioning-") as scratch:
        root = scratch.path
        state = StateDir(root / "state")
        state.init(pool_name="demo")
        console.print(f"[bold]pilotage demo --provisioning[/] in {root}")
        server = start_server(state, db, root / "server.log", SERVER_ENV)
        try:
            code = run_with_server(state, root, console, jobs=jobs)
        finally:
            stop_server(server)
        scratch.keep = code != 0
        return code
