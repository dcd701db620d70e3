"""One claim's job, from its scratch directory to its outputs, on its own thread.

:meth:`JobRun.execute` sets up ``workdir/<claim_id>/``, fetches and unpacks the input
sandbox, starts the job in its own session with a clean environment, waits for it
(``waitid`` without reaping, so a concurrent :meth:`JobRun.stop` can never signal a
recycled process group), measures its usage, and uploads its outputs. It returns the
:class:`~pilotage.pilot.wire.JobResult` to report, or ``None`` when nothing may be
reported: the claim was revoked, its lease lost, the agent stopping, or the server
forgot it.

No output may carry a credential: the packed outputs are searched for the key material of
every credential file the agent holds for the claim (:meth:`JobRun.credential_files`: the
pilot's own token, and in :class:`~pilotage.pilot.switched.SwitchedRun` the job's proxy);
a hit holds the job (code 12) and nothing is uploaded. A job that fills the disk gets its
files deleted first, then its result reported: reporting needs no disk space.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from pilotage.errors import BadInput, Transient, UserError
from pilotage.queue.sandbox import SandboxError

from .client import Client, retrying
from .container import job_argv, program_in_image
from .forkgate import TRANSIENT_START, spawn
from .nodepolicy import GIVE_BACK_EXCLUDE_S
from .outputs import (
    OutputError,
    credential_needles,
    find_credential,
    is_safe_relpath,
    pack_outputs,
    select_outputs,
    snapshot,
)
from .staging import download, staging_file, unpack
from .streaming import stream_stdout
from .urlinputs import fetch_all as fetch_urls
from .wire import Claim, Failure, GiveBack, HoldCode, JobResult

log = logging.getLogger("pilotage.pilot")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
KILL_GRACE_S = 10.0
#: How long the server keeps a job this pilot gave back after a passing failure of the
#: node (a start that failed with EAGAIN...).
TRANSIENT_EXCLUDE_S = 10.0
#: Write failures that mean the node's disk (or the account's quota) is full.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class _Gone(Exception):
    """The claim can no longer be reported: stopped here, or unknown to the server."""


def build_environment(claim: Claim, scratch: Path) -> dict[str, str]:
    """The job's whole environment: its own variables plus the agent's few, nothing else.

    Nothing of the pilot's environment passes (not its token, not its proxy settings).
    ``PATH`` defaults to a sane value the job may override; the job id, scratch directory
    (also as ``_CONDOR_SCRATCH_DIR``, ``HOME`` and ``TMPDIR``) and its GPU devices
    (``CUDA_VISIBLE_DEVICES``, ``_CONDOR_AssignedGPUs``) are set by the agent.
    """
    env = {"PATH": DEFAULT_PATH}
    for key, value in claim.environment.items():
        if key and "=" not in key and "\x00" not in key + value:
            env[key] = value
    scratch_dir = str(scratch)
    if claim.assigned_gpus:  # its devices only, as HTCondor names them
        env["CUDA_VISIBLE_DEVICES"] = ",".join(claim.assigned_gpus)
        env["_CONDOR_AssignedGPUs"] = ",".join(claim.assigned_gpus)
    env.update(
        {
            "PILOTAGE_JOB_ID": claim.job_id,
            "PILOTAGE_SCRATCH_DIR": scratch_dir,
            "_CONDOR_SCRATCH_DIR": scratch_dir,
            "HOME": scratch_dir,
            "TMPDIR": scratch_dir,
        }
    )
    return env


def remove_tree(path: Path) -> None:
    """Delete a job's directory even where the job removed its own write permission."""

    def fix(function: Any, name: str, _exc: Any) -> None:
        parent = os.path.dirname(name)
        os.chmod(parent, 0o700)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, 0o700)
            shutil.rmtree(name, ignore_errors=True)
        else:
            os.unlink(name)

    if not path.exists():
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:  # pragma: no cover - the 3.11 spelling, deprecated from 3.12
        shutil.rmtree(path, onerror=fix)


class JobRun:
    """The life of one claim on this pilot.

    Invariant: once ``_proc`` is set, the process is signalled only while ``_exited`` is
    false, both read and written under ``_lock``; ``_exited`` turns true before the
    process is reaped, so its pid (the group id) is never recycled under a signal.
    """

    def __init__(
        self,
        claim: Claim,
        *,
        client: Client,
        workdir: Path,
        max_sandbox_bytes: int,
        granted_at: float,
        pilot_credential: Path | None = None,
    ) -> None:
        self.claim = claim
        #: The pilot's own credential file (``--token``): never sent out in an output.
        self.pilot_credential = pilot_credential
        self.scratch = workdir / claim.claim_id
        self._workdir = workdir
        self._client = client
        self._max_bytes = max_sandbox_bytes
        #: Monotonic time by which the lease ends, counted from when it was requested.
        self.lease_deadline = granted_at + claim.lease_s
        self.stop_reason: str | None = None
        #: Set (under ``_lock``) once the job's result has gone to the server at least
        #: once: the job has ended, and a later stop has nothing left to stop.
        self._result_sent = False
        #: Set when the claim is to be given back rather than reported (the agent does it).
        self.give_back: GiveBack | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited = False
        self._kill_timer: threading.Timer | None = None

    @property
    def tag(self) -> str:
        """How log lines name this claim."""
        return f"claim {self.claim.claim_id} job {self.claim.job_id}"

    @property
    def alive(self) -> bool:
        """Whether the claim may still run and be reported."""
        return self.stop_reason is None

    def renew(self, requested_at: float) -> None:
        """Record a renewal granted by a heartbeat sent at monotonic ``requested_at``."""
        self.lease_deadline = max(self.lease_deadline, requested_at + self.claim.lease_s)

    def result_sending(self) -> None:
        """Record that the job's result is being sent to the server (before the call)."""
        with self._lock:
            self._result_sent = True

    def stop(self, reason: str) -> None:
        """Stop the claim: SIGTERM to the job's group, SIGKILL after 10 s; report nothing.

        Once its result was sent, the job has ended and nothing is stopped: the claim is
        only marked over (its report is not sent again). A heartbeat that crossed that
        report is answered "revoked" for the very exit it reported: that stops no job."""
        with self._lock:
            if self.stop_reason is not None:
                return
            self.stop_reason = reason
            self._stopped.set()
            if self._result_sent:
                log.info(
                    "%s: %s; its job ended, its result went: nothing to stop", self.tag, reason
                )
                return
            log.info("%s: stopping (%s)", self.tag, reason)
            if self._running():
                self._signal(signal.SIGTERM)
                self._kill_timer = threading.Timer(KILL_GRACE_S, self._kill)
                self._kill_timer.daemon = True
                self._kill_timer.start()

    def _kill(self) -> None:
        with self._lock:
            if self._running():
                log.info("%s: still running %.0f s after SIGTERM: SIGKILL", self.tag, KILL_GRACE_S)
                self._signal(signal.SIGKILL)

    def _running(self) -> bool:
        """Whether the job was started and has not exited (the caller holds ``_lock``)."""
        return self._proc is not None and not self._exited

    def job_running(self) -> bool:
        """Whether the job was started and has not exited (an exec-in-job session asks)."""
        with self._lock:
            return self._running()

    def _signal(self, signum: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    def execute(self) -> JobResult | None:
        """Run the claim to its end; the result to report, or None if none may be."""
        try:
            os.mkdir(self.scratch, 0o700)
            if self.claim.has_input_sandbox:
                failure = self._fetch_input()
                if failure is not None:
                    return JobResult(failure=failure)
            failure = fetch_urls(self.claim, self.scratch, stopped=self.wait_or_stopped)
            if failure is not None:
                return JobResult(failure=failure)
            before = snapshot(self.scratch)
            started = self._start()
            if isinstance(started, Failure):
                return JobResult(failure=started)
            streamed = stream_stdout(  # stream_output
                self._client, self.claim, self.scratch, self.credential_files
            )
            with streamed:
                result = self._wait(started)
            if not self.alive:
                return None
            failure = self._send_outputs(before)
            # An output failure is reported with how the job itself ended.
            return result if failure is None else dataclasses.replace(result, failure=failure)
        except _Gone:
            return None
        except OSError as exc:  # the node's fault (disk full...), not the job's
            self.node_fault(f"the job cannot run on this node: {exc}")
            return None

    def node_fault(self, reason: str) -> None:
        """Stop the claim and mark it to give back, not counted, with the pilot taking no
        more jobs: the node cannot run jobs, through no fault of this one (issue 9)."""
        log.error("%s: %s; giving the job back", self.tag, reason)
        self.give_back = GiveBack(reason, exclude_s=GIVE_BACK_EXCLUDE_S, stop_pilot=True)
        self.stop(reason)

    def give_back_transient(self, reason: str) -> None:
        """Stop the claim and mark it to give back, not counted, the pilot taking more
        jobs: a passing failure of this node (pilot/forkgate.py) that says nothing of the
        job, which goes elsewhere (kept from this pilot for a short while)."""
        log.warning("%s: %s; giving the job back", self.tag, reason)
        self.give_back = GiveBack(reason, exclude_s=TRANSIENT_EXCLUDE_S)
        self.stop(reason)

    def credential_files(self) -> list[Path]:
        """The credential files whose key material no output may carry."""
        return [self.pilot_credential] if self.pilot_credential is not None else []

    def refuse_credential(self, tar: IO[bytes]) -> Failure | None:
        """Hold (code 12) outputs that carry a credential, naming the file; else None."""
        name = find_credential(tar, credential_needles(self.credential_files()))
        if name is None:
            return None
        tar.close()
        log.warning("%s: the output %r carries a credential; nothing uploaded", self.tag, name)
        return Failure(
            HoldCode.OUTPUT,
            f"the output {name!r} carries the job's credential (its private key); "
            "nothing was uploaded: never return x509_proxy or a copy of it",
        )

    def disk_full(self, exc: OSError) -> Failure:
        """The failure to report when the outputs could not be written: the disk is full.

        The job's files were deleted first (by the caller), so the report can be sent.
        """
        log.warning("%s: the outputs cannot be written (%s); job files deleted", self.tag, exc)
        return Failure(
            HoldCode.OUTPUT,
            "the outputs could not be written on the node: "
            f"{exc.strerror or exc} (did the job fill the disk?); nothing was uploaded",
        )

    def cleanup(self) -> None:
        """Kill anything of the job still alive and delete its directory."""
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        remove_tree(self.scratch)

    def wait_or_stopped(self, delay_s: float) -> bool:
        """Sleep up to ``delay_s``; true (at once) if the claim is stopped."""
        return self._stopped.wait(delay_s)

    def _call(self, what: str, call: Any) -> Any:
        """Call the server, retrying transient failures while the claim lives."""
        try:
            return retrying(call, what=f"{self.tag}: {what}", wait=self.wait_or_stopped)
        except Transient:
            raise _Gone from None
        except UserError as exc:
            if isinstance(exc, BadInput):
                raise
            log.warning("%s: %s refused (%s); dropping the claim", self.tag, what, exc.message)
            self.stop(f"the server refused {what}")
            raise _Gone from None

    def _fetch_input(self, dest: Path | None = None) -> Failure | None:
        """Download and unpack the input sandbox (into ``dest``, by default the scratch
        directory); a refused one is a failure (code 10)."""
        where = dest or self.scratch
        path = f"/pilot/v1/claims/{self.claim.claim_id}/input"
        try:
            # Downloaded whole, then unpacked while no claim forks (pilot/forkgate.py).
            with staging_file(self._workdir) as staged:
                self._call(
                    "input sandbox download",
                    lambda: download(self._client, path, staged, self._max_bytes),
                )
                remove_tree(where)
                os.mkdir(where, 0o700)
                unpack(staged, where, self._max_bytes)
        except SandboxError as exc:
            log.warning("%s: input sandbox refused: %s", self.tag, exc.message)
            return Failure(HoldCode.INPUT_REFUSED, f"input sandbox refused: {exc.message}")
        except BadInput as exc:
            self.stop(f"the server refused the input download ({exc.message})")
            raise _Gone from None
        log.info("%s: input sandbox unpacked", self.tag)
        return None

    def _checked_program(self, root: Path) -> Path | Failure:
        """The program to run, the sandbox being unpacked in ``root``; or what is wrong."""
        claim = self.claim
        exe = claim.executable
        if exe.startswith("/") and ".." not in exe.split("/"):
            path = Path(exe)  # not transferred: a program of the node
        elif is_safe_relpath(exe):
            path = root / exe
        else:
            return Failure(HoldCode.EXECUTABLE, f"executable {exe!r} is not a usable path")
        in_image = program_in_image(claim)  # looked up in the container's image instead
        if not in_image and not path.is_file():
            return Failure(HoldCode.EXECUTABLE, f"executable {exe!r} is missing from the sandbox")
        if not in_image and not (os.access(path, os.X_OK) and path.stat().st_mode & 0o111):
            return Failure(HoldCode.EXECUTABLE, f"executable {exe!r} is not executable")
        for label, name in (
            ("input", claim.input),
            ("output", claim.output),
            ("error", claim.error),
        ):
            if name is not None and not is_safe_relpath(name):
                return Failure(HoldCode.START, f"{label} file {name!r} is not a usable path")
        if claim.input is not None and not (root / claim.input).is_file():
            return Failure(
                HoldCode.START, f"input file {claim.input!r} is missing from the sandbox"
            )
        return path

    def _start(self) -> subprocess.Popen[bytes] | Failure:
        """Check the executable and start the job; a failure names what is wrong."""
        claim = self.claim
        path = self._checked_program(self.scratch)
        if isinstance(path, Failure):
            return path
        streams: list[IO[bytes]] = []
        try:
            stdin = self._open(claim.input, "rb", streams)
            stdout = self._open(claim.output, "wb", streams)
            stderr = (
                stdout if claim.error == claim.output else self._open(claim.error, "wb", streams)
            )
            with self._lock:
                if not self.alive:
                    raise _Gone
                self._proc = spawn(
                    lambda: subprocess.Popen(
                        job_argv(claim, [str(path), *claim.arguments], self.scratch),
                        cwd=self.scratch,
                        env=build_environment(claim, self.scratch),
                        stdin=stdin,
                        stdout=stdout,
                        stderr=stderr,
                        start_new_session=True,
                        close_fds=True,
                    ),
                    self.tag,
                )
        except OSError as exc:
            if exc.errno in TRANSIENT_START:  # the node's moment, not the job: not held
                self.give_back_transient(f"the job could not be started ({exc.strerror})")
                raise _Gone from None
            return Failure(HoldCode.START, f"the job could not be started ({exc.strerror or exc})")
        finally:
            for stream in streams:
                stream.close()
        log.info("%s: started pid %d", self.tag, self._proc.pid)
        return self._proc

    def _open(self, name: str | None, mode: str, streams: list[IO[bytes]]) -> IO[bytes] | int:
        if name is None:
            return subprocess.DEVNULL
        path = self.scratch / name
        if "w" in mode:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        stream: IO[bytes] = open(path, mode)  # noqa: SIM115 - closed once the job has it
        streams.append(stream)
        return stream

    def _wait(self, proc: subprocess.Popen[bytes]) -> JobResult:
        """Wait for the job, kill what it left behind, and measure it."""
        started = time.monotonic()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            self._exited = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the job die with it
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        wall_s = time.monotonic() - started
        result = JobResult(
            exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            wall_s=wall_s,
            cpu_s=usage.ru_utime + usage.ru_stime,
            max_rss_kb=usage.ru_maxrss,
        )
        log.info(
            "%s: ended (exit %s, signal %s, wall %.1f s, cpu %.1f s, rss %d KiB)",
            self.tag, result.exit_code, result.signal, wall_s, result.cpu_s, result.max_rss_kb,
        )  # fmt: skip
        return result

    def _send_outputs(self, before: dict[str, Any]) -> Failure | None:
        """Pack and upload the outputs, if any; a missing or too large one is code 12."""
        claim = self.claim
        try:
            names = select_outputs(
                self.scratch, before, claim.transfer_output_files, claim.output, claim.error
            )
            if not names:
                return None
            tar = pack_outputs(self.scratch, names, self._max_bytes, self._workdir)
        except OutputError as exc:
            log.warning("%s: %s", self.tag, exc)
            return Failure(HoldCode.OUTPUT, str(exc))
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            remove_tree(self.scratch)  # room for whatever comes next; nothing is kept
            return self.disk_full(exc)
        refused = self.refuse_credential(tar)
        if refused is not None:
            return refused
        return self._upload(tar, len(names))

    def _upload(self, tar: IO[bytes], count: int) -> Failure | None:
        """Upload the packed output sandbox ``tar`` (closed after); code 12 if refused."""
        with tar:
            size = tar.seek(0, os.SEEK_END)
            path = f"/pilot/v1/claims/{self.claim.claim_id}/output"
            try:
                self._call(
                    "output upload",
                    lambda: self._client.put_file(path, tar, size, "application/x-tar"),
                )
            except BadInput as exc:
                return Failure(HoldCode.OUTPUT, f"the server refused the outputs: {exc.message}")
        log.info("%s: uploaded %d output files (%d bytes)", self.tag, count, size)
        return None
