"""The ``condor`` backend: pilots as HTCondor jobs (``condor_submit``, ``condor_q``, ``condor_rm``).

The factory runs where HTCondor's client commands reach a schedd (an access point, or
an HTCondor-CE's host). One ``condor_submit`` per submission queues all its pilots as
one cluster; a pilot's backend id is ``<ClusterId>.<ProcId>``.

The submit description (:func:`submit_description`) runs the job script
(:func:`~pilotage.factory.backends.base.job_script`, without its ``export`` lines),
written once per distinct script to ``<log_dir>/pilot-<sha256>.sh``; the launch's
environment goes in ``environment``, quoted by HTCondor's new-style rules
(:func:`quote_environment`, :func:`quote_arguments`). The job's output and error are
streamed to ``<log_dir>/<id>.out`` and ``<id>.err`` (``logs()`` returns both), the job
event log to ``<log_dir>/<ClusterId>.log``; a running pilot past its walltime is removed
by ``periodic_remove``.

Where each pilot is comes from ``condor_q -json`` for queued and running jobs, then
``condor_history -json`` for the ones that have left the queue, then the log's exit line
(history rotated away). HTCondor's ``JobStatus`` maps to pilot states
(:func:`observed_from_condor`): 1 idle → idle, 2 running, 6 transferring output and
7 suspended → running, 5 held → held with its ``HoldReason``, 3 removed → finished
"removed", 4 completed → finished (exit code 0) or failed (its exit code or signal).

The environment, with the pilot token, is part of the job's ad: whoever may read the
schedd's queue (``condor_q -l``) sees it, as a site's batch system sees it in every
backend (docs/provisioning.md).

Entry parameters: ``log_dir`` (required; on the access point), ``schedd`` (``-name``),
``pool`` (``-pool``), ``condor_config`` (sets ``CONDOR_CONFIG`` for the commands),
``requirements`` (a ClassAd expression), ``cpus``, ``memory_mb``, ``disk_mb``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    param_int,
    param_str,
    run_tool,
    tail,
)
from pilotage.factory.pilots import Observed, PilotState

PARAMS = (
    "log_dir",
    "schedd",
    "pool",
    "condor_config",
    "requirements",
    "cpus",
    "memory_mb",
    "disk_mb",
)
#: The job ad attributes ``status`` asks for.
ATTRIBUTES = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "HoldReason",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
)
_JOB_ID = re.compile(r"^\d+\.\d+$")
_TERSE = re.compile(r"^(\d+)\.(\d+) - (\d+)\.(\d+)$", re.MULTILINE)
#: Characters a submit description value cannot carry (it is one line).
_LINE_BREAKS = re.compile(r"[\r\n\x00]")


class JobStatus:
    """HTCondor's ``JobStatus`` codes."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4
    HELD = 5
    TRANSFERRING_OUTPUT = 6
    SUSPENDED = 7


# --- the submit description, pure -------------------------------------------------------


def _plain(value: str, what: str) -> str:
    """``value`` made safe for one submit description line: no line breaks, no macros.

    ``$`` starts a macro (``$(Cluster)``) everywhere in a submit description;
    ``$(DOLLAR)`` is HTCondor's own literal dollar sign.
    """
    if _LINE_BREAKS.search(value):
        raise BadInput(f"{what} cannot contain a line break for HTCondor")
    return value.replace("$", "$(DOLLAR)")


def _quote_word(word: str) -> str:
    """One argument or environment value by the new-style rules, without the outer ``"``.

    Inside single quotes whitespace is kept and a single quote is written twice; a
    double quote is written twice anywhere within the outer double quotes.
    """
    return "'" + word.replace("'", "''").replace('"', '""') + "'"


def quote_arguments(arguments: Sequence[str]) -> str:
    """``arguments`` as the value of ``arguments =`` in the new (double-quoted) syntax."""
    words = [_quote_word(_plain(a, "an argument")) for a in arguments]
    return '"' + " ".join(words) + '"'


def quote_environment(env: Mapping[str, str]) -> str:
    """``env`` as the value of ``environment =`` in the new (double-quoted) syntax."""
    pairs = []
    for name, value in sorted(env.items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise BadInput(f"environment variable name {name!r} is not valid")
        pairs.append(f"{name}={_quote_word(_plain(value, f'environment variable {name}'))}")
    return '"' + " ".join(pairs) + '"'


@dataclass(frozen=True)
class SubmitSpec:
    """What one ``condor_submit`` queues: ``count`` pilots running ``executable``."""

    executable: str
    log_dir: str
    count: int
    name: str
    walltime_s: int
    arguments: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    requirements: str | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None


def submit_description(spec: SubmitSpec) -> str:
    """The submit description of ``spec``, ending with ``queue <count>``."""
    out = f"{_plain(spec.log_dir, 'log_dir')}/$(Cluster).$(Process)"
    lines = [
        "universe = vanilla",
        f"executable = {_plain(spec.executable, 'the executable')}",
    ]
    if spec.arguments:
        lines.append(f"arguments = {quote_arguments(spec.arguments)}")
    if spec.env:
        lines.append(f"environment = {quote_environment(spec.env)}")
    lines += [
        f"batch_name = {spec.name}",
        f"output = {out}.out",
        f"error = {out}.err",
        f"log = {_plain(spec.log_dir, 'log_dir')}/$(Cluster).log",
        "stream_output = true",
        "stream_error = true",
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT_OR_EVICT",
        # The walltime counts from the start of the current run, as a batch limit does.
        "periodic_remove = JobStatus == 2 && "
        f"(time() - JobCurrentStartDate) > {int(spec.walltime_s)}",
    ]
    if spec.requirements:
        lines.append(f"requirements = {_plain(spec.requirements, 'requirements')}")
    for key, value in (
        ("request_cpus", spec.cpus),
        ("request_memory", spec.memory_mb),
        ("request_disk", None if spec.disk_mb is None else spec.disk_mb * 1024),
    ):
        if value is not None:
            lines.append(f"{key} = {int(value)}")
    lines.append(f"queue {int(spec.count)}")
    return "".join(line + "\n" for line in lines)


def ids_from_terse(text: str) -> list[str]:
    """The job ids of ``condor_submit -terse``'s ``12.0 - 12.4`` lines."""
    ids = []
    for found in _TERSE.finditer(text):
        first_cluster, first, last_cluster, last = (int(g) for g in found.groups())
        if first_cluster != last_cluster or last < first:
            raise OperatorError(f"condor_submit answered {found.group(0)!r}")
        ids += [f"{first_cluster}.{proc}" for proc in range(first, last + 1)]
    return ids


# --- job ads to pilot states, pure ------------------------------------------------------


def job_ads(text: str) -> dict[str, dict[str, Any]]:
    """The ads of ``condor_q -json`` / ``condor_history -json`` by job id.

    Both print nothing at all, rather than ``[]``, when no job matches.
    """
    if not text.strip():
        return {}
    try:
        ads = json.loads(text)
    except ValueError as exc:
        raise Transient(f"HTCondor answered JSON that does not parse: {exc}") from None
    if not isinstance(ads, list):
        raise Transient("HTCondor answered JSON that is not a list of job ads")
    found = {}
    for ad in ads:
        if isinstance(ad, dict) and "ClusterId" in ad and "ProcId" in ad:
            found[f"{int(ad['ClusterId'])}.{int(ad['ProcId'])}"] = ad
    return found


def observed_from_condor(ad: Mapping[str, Any]) -> Observed:
    """A pilot state from a job ad's ``JobStatus`` (and its hold reason or exit)."""
    status = ad.get("JobStatus")
    if status == JobStatus.IDLE:
        return Observed(PilotState.IDLE)
    if status in (JobStatus.RUNNING, JobStatus.TRANSFERRING_OUTPUT, JobStatus.SUSPENDED):
        return Observed(PilotState.RUNNING)
    if status == JobStatus.HELD:
        return Observed(PilotState.HELD, str(ad.get("HoldReason") or "held"))
    if status == JobStatus.REMOVED:
        return REMOVED
    if status == JobStatus.COMPLETED:
        if ad.get("ExitBySignal") is True:
            return Observed(PilotState.FAILED, f"signal {ad.get('ExitSignal', '?')}")
        code = ad.get("ExitCode")
        if code == 0:
            return Observed(PilotState.FINISHED, "exit code 0")
        return Observed(PilotState.FAILED, f"exit code {code}")
    return Observed(PilotState.FAILED, f"JobStatus {status}")


# --- the backend ------------------------------------------------------------------------


class CondorBatch(BatchSystem):
    """Pilots as HTCondor jobs; see the module docstring."""

    kind = "condor"

    def __init__(self, params: Mapping[str, object]) -> None:
        known_params(params, self.kind, PARAMS)
        self.log_dir = Path(param_str(params, "log_dir"))
        _plain(str(self.log_dir), "log_dir")
        self.target: list[str] = []
        for key, flag in (("schedd", "-name"), ("pool", "-pool")):
            if key in params:
                self.target += [flag, param_str(params, key)]
        self.requirements = param_str(params, "requirements") if "requirements" in params else None
        self.resources = {
            key: param_int(params, key) if key in params else None
            for key in ("cpus", "memory_mb", "disk_mb")
        }
        self.env = dict(os.environ)
        if "condor_config" in params:
            self.env["CONDOR_CONFIG"] = param_str(params, "condor_config")

    def _run(
        self, command: list[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(command, env=self.env, stdin=stdin, package="HTCondor")

    def _executable(self, launch: Launch) -> Path:
        """The job script without its exports, written once per distinct text."""
        text = job_script(dataclasses.replace(launch, env={}))
        path = self.log_dir / f"pilot-{hashlib.sha256(text.encode()).hexdigest()[:32]}.sh"
        if not path.exists():
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text, encoding="utf-8")
            partial.chmod(0o755)
            partial.replace(path)
        return path

    def submit(self, count: int, launch: Launch) -> list[str]:
        """One ``condor_submit`` queues all ``count`` pilots as one cluster."""
        check_count(count)
        if count == 0:
            return []
        self.log_dir.mkdir(parents=True, exist_ok=True)
        spec = SubmitSpec(
            executable=str(self._executable(launch)),
            log_dir=str(self.log_dir),
            count=count,
            name=launch.name,
            walltime_s=launch.walltime_s,
            env=launch.env,
            requirements=self.requirements,
            cpus=self.resources["cpus"],
            memory_mb=self.resources["memory_mb"],
            disk_mb=self.resources["disk_mb"],
        )
        result = self._run(["condor_submit", "-terse", *self.target, "-"], submit_description(spec))
        if result.returncode != 0:
            raise Transient(f"condor_submit failed: {result.stderr.strip()}")
        ids = ids_from_terse(result.stdout)
        if len(ids) != count:
            raise OperatorError(f"condor_submit answered {result.stdout.strip()!r} for {count}")
        return ids

    def _ads(self, command: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        result = self._run(
            [command, "-json", "-attributes", ",".join(ATTRIBUTES), *self.target, *ids]
        )
        if result.returncode != 0:
            raise Transient(f"{command} failed: {result.stderr.strip()}")
        return job_ads(result.stdout)

    def status(self, ids: Sequence[str]) -> dict[str, Observed]:
        """``condor_q`` for all ids, ``condor_history`` for those gone, then the logs."""
        answer: dict[str, Observed] = {i: UNKNOWN for i in ids}
        valid = [i for i in ids if _JOB_ID.match(i)]
        if not valid:
            return answer
        ads = self._ads("condor_q", valid)
        gone = [i for i in valid if i not in ads]
        if gone:
            ads.update(self._ads("condor_history", gone))
        for job_id in valid:
            ad = ads.get(job_id)
            if ad is None:
                answer[job_id] = self._from_log(job_id) or UNKNOWN
                continue
            observed = observed_from_condor(ad)
            if ad.get("JobStatus") == JobStatus.COMPLETED:
                # The script's own exit line is more precise than HTCondor's exit code.
                observed = self._from_log(job_id) or observed
            answer[job_id] = observed
        return answer

    def _from_log(self, job_id: str) -> Observed | None:
        path = self.log_dir / f"{job_id}.out"
        return outcome_from_log(tail(path.read_bytes())) if path.exists() else None

    def remove(self, ids: Sequence[str]) -> None:
        """``condor_rm`` the jobs; ids no longer in the queue are ignored."""
        self._act("condor_rm", ids)

    def release(self, ids: Sequence[str]) -> None:
        """``condor_release`` held jobs."""
        self._act("condor_release", ids)

    def hold(self, ids: Sequence[str]) -> None:
        """``condor_hold`` (what a site's operator may do; for tests)."""
        self._act("condor_hold", ids)

    def _act(self, command: str, ids: Sequence[str]) -> None:
        valid = [i for i in ids if _JOB_ID.match(i)]
        if not valid:
            return
        result = self._run([command, *self.target, *valid])
        said = (result.stdout + result.stderr).lower()
        # Jobs that already left the queue: "Job 12.0 not found", "Couldn't find/...".
        if result.returncode != 0 and "not found" not in said and "couldn't find" not in said:
            raise Transient(f"{command} failed: {result.stderr.strip()}")

    def logs(self, backend_id: str) -> str:
        """The end of the job's output followed by its error (``<id>.out``, ``<id>.err``)."""
        if not _JOB_ID.match(backend_id):
            raise BadInput(f"{backend_id!r} is not an HTCondor job id (cluster.proc)")
        parts = [self.log_dir / f"{backend_id}.{kind}" for kind in ("out", "err")]
        found = [p.read_bytes() for p in parts if p.exists()]
        if found:
            return tail(b"".join(found))
        # No output yet: a queued job has none, an unknown one never will.
        if self._ads("condor_q", [backend_id]) or self._ads("condor_history", [backend_id]):
            return ""
        raise NotFound(f"no HTCondor job {backend_id} and no log for it")
