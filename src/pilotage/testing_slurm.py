"""A throwaway one-node Slurm cluster (munged, slurmctld, slurmd) for tests and benchmarks.

Runs as root from a minimal ``slurm.conf`` in a temporary directory, on free ports, and
removes everything when the context ends. The test suite's ``slurm_cluster`` fixture
and ``bench/e2e.py``'s side-by-side runs both start it through :func:`slurm_cluster`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here: a program is missing, or we are not root."""


@dataclass(frozen=True)
class Slurm:
    """A running one-node Slurm cluster."""

    conf: Path
    base: Path

    def env(self) -> dict[str, str]:
        """The environment for Slurm's client commands (``sbatch``, ``squeue``, ...)."""
        return dict(os.environ, SLURM_CONF=str(self.conf))


SLURM_CONF = """\
ClusterName=pilotage
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge.sock
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge={min_job_age}
KillWait=2
{extra}
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP {oversubscribe}
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, log: Path | None) -> None:
    """Poll ``check`` until true; after ``timeout_s``, fail with the tail of ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s\n{text}")


def stop_pid_file(path: Path) -> None:
    """SIGTERM the daemon whose pid is in ``path``, then SIGKILL if it lingers."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def slurm_cluster(
    *, oversubscribe: int = 8, scheduler_parameters: str = "", min_job_age: int = 600
) -> Iterator[Slurm]:
    """Start munged, slurmctld and slurmd for this host; stop them and clean up at exit.

    ``oversubscribe`` jobs may share each core; ``scheduler_parameters`` is written as
    ``SchedulerParameters`` when given (e.g. ``batch_sched_delay=0``).
    """
    daemons = {
        name: shutil.which(name) or f"/usr/sbin/{name}"
        for name in ("munged", "slurmctld", "slurmd")
    }
    missing = [n for n, p in daemons.items() if not os.path.exists(p)]
    missing += [c for c in ("sbatch", "squeue", "scancel", "sinfo") if shutil.which(c) is None]
    if missing:
        raise SlurmUnavailable(
            f"missing {', '.join(missing)}: install slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test cluster's daemons run as root")
    base = Path(tempfile.mkdtemp(prefix="pilotage-slurm-"))
    os.chmod(base, 0o755)  # noqa: S103  (job logs are written as their owners)
    for sub in ("state", "spool", "logs"):
        (base / sub).mkdir()
    (base / "munge.key").write_bytes(os.urandom(1024))
    os.chmod(base / "munge.key", 0o600)
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    extra = f"SchedulerParameters={scheduler_parameters}" if scheduler_parameters else ""
    conf.write_text(
        SLURM_CONF.format(
            host=host,
            base=base,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            cpus=os.cpu_count() or 1,
            memory_mb=1024,
            oversubscribe=f"OverSubscribe=FORCE:{oversubscribe}",
            min_job_age=min_job_age,
            extra=extra,
        )
    )
    cluster = Slurm(conf, base)
    env = cluster.env()
    try:
        subprocess.run(
            [
                daemons["munged"],
                f"--key-file={base / 'munge.key'}",
                f"--socket={base / 'munge.sock'}",
                f"--pid-file={base / 'munged.pid'}",
                f"--log-file={base / 'munged.log'}",
                f"--seed-file={base / 'munge.seed'}",
                "--force",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [daemons["slurmctld"], "-f", str(conf)], check=True, env=env, capture_output=True
        )
        subprocess.run(
            [daemons["slurmd"], "-f", str(conf)], check=True, env=env, capture_output=True
        )

        def node_idle() -> bool:
            out = subprocess.run(
                ["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True, text=True
            )
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mix")

        wait_for(node_idle, 60, "Slurm (node idle in sinfo)", base / "slurmctld.log")
        yield cluster
    finally:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            stop_pid_file(base / pid_file)
        shutil.rmtree(base, ignore_errors=True)
