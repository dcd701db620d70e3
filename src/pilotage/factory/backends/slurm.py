"""The ``slurm`` backend: pilots as Slurm batch jobs (``sbatch``, ``squeue``, ``scancel``).

The factory runs on a host where Slurm's client commands work (a login node, or the
CE's host). A pilot's log is ``<log_dir>/<jobid>.log``, written by Slurm on the node;
``log_dir`` must be on a file system the node and the factory share (as Slurm's own
``--output`` needs). Once Slurm has forgotten a job (``MinJobAge``), its state comes
from the log's exit line.

Slurm states map to pilot states: PENDING is idle (held when its reason is
``JobHeld*``), RUNNING / CONFIGURING / COMPLETING / SUSPENDED are running, COMPLETED
is finished, CANCELLED is finished with reason "removed", and every other end (FAILED,
TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE) is failed.

Entry parameters: ``log_dir`` (required), ``partition``, ``account``, ``qos``,
``slurm_conf`` (sets ``SLURM_CONF`` for the commands), ``cpus``, ``memory_mb``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pilotage.errors import BadInput, NotFound, OperatorError, Transient
from pilotage.factory.backends.base import (
    REMOVED,
    UNKNOWN,
    BatchSystem,
    Launch,
    check_count,
    job_script,
    known_params,
    outcome_from_log,
    param_str,
    run_tool,
    tail,
)
from pilotage.factory.pilots import Observed, PilotState

PARAMS = ("log_dir", "partition", "account", "qos", "slurm_conf", "cpus", "memory_mb")
_JOB_ID = re.compile(r"^\d+$")
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "RESIZING"}
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"}


def observed_from_slurm(state: str, reason: str) -> Observed:
    """A pilot state from squeue's ``%T`` (state) and ``%r`` (reason)."""
    if state in _PENDING:
        if reason.startswith("JobHeld") or state == "REQUEUE_HOLD":
            return Observed(PilotState.HELD, reason)
        return Observed(PilotState.IDLE, reason)
    if state in _RUNNING:
        return Observed(PilotState.RUNNING)
    if state == "COMPLETED":
        return Observed(PilotState.FINISHED, "exit code 0")
    if state == "CANCELLED":
        return REMOVED
    return Observed(PilotState.FAILED, f"{state.lower()}: {reason}")


class SlurmBatch(BatchSystem):
    """Pilots as Slurm jobs; see the module docstring."""

    kind = "slurm"

    def __init__(self, params: Mapping[str, object]) -> None:
        known_params(params, self.kind, PARAMS)
        self.log_dir = Path(param_str(params, "log_dir"))
        self.options: list[str] = []
        for key, flag in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos")):
            if key in params:
                self.options.append(f"{flag}={param_str(params, key)}")
        if "cpus" in params:
            self.options.append(f"--cpus-per-task={int(str(params['cpus']))}")
        if "memory_mb" in params:
            self.options.append(f"--mem={int(str(params['memory_mb']))}M")
        self.env = dict(os.environ)
        if "slurm_conf" in params:
            self.env["SLURM_CONF"] = param_str(params, "slurm_conf")

    def _run(
        self, command: list[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(command, env=self.env, stdin=stdin, package="slurm-client")

    def submit(self, count: int, launch: Launch) -> list[str]:
        """One ``sbatch`` per pilot; the script comes on its standard input."""
        check_count(count)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        minutes = max(1, (launch.walltime_s + 59) // 60)
        command = [
            "sbatch",
            "--parsable",
            f"--job-name={launch.name}",
            f"--output={self.log_dir}/%j.log",
            f"--chdir={self.log_dir}",
            f"--time={minutes}",
            "--export=NONE",
            *self.options,
        ]
        ids = []
        script = job_script(launch)
        for _ in range(count):
            result = self._run(command, script)
            if result.returncode != 0:
                raise Transient(f"sbatch failed: {result.stderr.strip()}")
            job_id = result.stdout.strip().split(";")[0]
            if not _JOB_ID.match(job_id):
                raise OperatorError(f"sbatch answered {result.stdout.strip()!r}, not a job id")
            ids.append(job_id)
        return ids

    def status(self, ids: Sequence[str]) -> dict[str, Observed]:
        """One ``squeue`` for all ids; jobs Slurm forgot are read from their logs."""
        answer: dict[str, Observed] = {i: UNKNOWN for i in ids}
        valid = [i for i in ids if _JOB_ID.match(i)]
        if not valid:
            return answer
        result = self._run(
            [
                "squeue",
                "--noheader",
                "--states=all",
                "--format=%i|%T|%r",
                f"--jobs={','.join(valid)}",
            ]
        )
        # squeue exits 1 when it knows none of the ids: they are all read from logs below.
        if result.returncode != 0 and "Invalid job id" not in result.stderr:
            raise Transient(f"squeue failed: {result.stderr.strip()}")
        seen: set[str] = set()
        for line in result.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in answer:
                observed = observed_from_slurm(parts[1], parts[2])
                if parts[1] in ("COMPLETED", "FAILED"):
                    # The script's own exit line is more precise than Slurm's reason.
                    observed = self._from_log(parts[0]) or observed
                answer[parts[0]] = observed
                seen.add(parts[0])
        for job_id in valid:
            if job_id not in seen:
                answer[job_id] = self._from_log(job_id) or UNKNOWN
        return answer

    def _from_log(self, job_id: str) -> Observed | None:
        path = self.log_dir / f"{job_id}.log"
        return outcome_from_log(tail(path.read_bytes())) if path.exists() else None

    def remove(self, ids: Sequence[str]) -> None:
        """``scancel`` the jobs (Slurm signals, then kills, the whole job)."""
        valid = [i for i in ids if _JOB_ID.match(i)]
        if not valid:
            return
        result = self._run(["scancel", *valid])
        if result.returncode != 0 and "Invalid job id" not in result.stderr:
            raise Transient(f"scancel failed: {result.stderr.strip()}")

    def release(self, ids: Sequence[str]) -> None:
        """``scontrol release`` held jobs."""
        valid = [i for i in ids if _JOB_ID.match(i)]
        if valid:
            result = self._run(["scontrol", "release", ",".join(valid)])
            if result.returncode != 0:
                raise Transient(f"scontrol release failed: {result.stderr.strip()}")

    def hold(self, ids: Sequence[str]) -> None:
        """``scontrol hold`` (what a site's operator may do; the tests use it)."""
        valid = [i for i in ids if _JOB_ID.match(i)]
        if valid:
            result = self._run(["scontrol", "hold", ",".join(valid)])
            if result.returncode != 0:
                raise Transient(f"scontrol hold failed: {result.stderr.strip()}")

    def logs(self, backend_id: str) -> str:
        """The end of ``<log_dir>/<jobid>.log``."""
        if not _JOB_ID.match(backend_id):
            raise BadInput(f"{backend_id!r} is not a Slurm job id")
        path = self.log_dir / f"{backend_id}.log"
        try:
            return tail(path.read_bytes())
        except FileNotFoundError:
            pass
        # No log yet: a queued job has none, an unknown one never will.
        result = self._run(["squeue", "--noheader", "--states=all", f"--jobs={backend_id}"])
        if result.returncode == 0 and result.stdout.strip():
            return ""
        raise NotFound(f"no Slurm job {backend_id} and no log for it")
