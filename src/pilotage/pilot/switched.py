"""Running a claim through the switch (``--switch``): every action in the owner's name.

With ``--switch COMMAND`` (e.g. ``sudo -n -C 5 /opt/pilotage-exec/bin/pilotage-exec``,
split like a shell would) each claim runs as :class:`SwitchedRun` instead of
:class:`~pilotage.pilot.jobrun.JobRun`. The agent stays at the pilot's uid; what touches
the job's files runs through ``pilotage-exec`` as the account the site maps the job's
credential to (docs/switch.md, DESIGN.md step 5).

Every action the user runs is the same command, ``python3 -I -S <workdir>/<wrapper>``
(:mod:`pilotage.pilot.wrapper`, written by the agent, 0644): its standard input is a Unix
socket over which the agent sends the request (the job's argv, environment and stdio) and,
as ``SCM_RIGHTS``, an exec-status pipe only the wrapper holds. So nothing of the job shows
in any command line, in the switch's audit or in syslog (seed 000 §3.1; review finding 1),
and the agent learns that the job started (end-of-file) or why it could not (a line), in
linger mode or not (seed 000 §4.1).

The claim's directory ``workdir/<claim_id>/`` is the pilot's, mode 0711 at all times: no
other account can create anything in it (finding 3).

- ``proxy`` (the pilot's, 0600): the job's credential, fetched with the claim's one-time key
  (docs/pilot-protocol.md, "The job's credential"); ``PILOTAGE_EXEC_USER_CREDENTIAL``. The
  pilot's own credential (``--token``) goes as ``PILOTAGE_EXEC_PILOT_CREDENTIAL``, for the
  sites that authorize both (seed 000 §4.2).
- ``x509_proxy`` (the user's, 0600): the user's copy, written by the switch, which is given
  the claim's directory as ``PILOTAGE_EXEC_TARGET_DIR``; ``X509_USER_PROXY`` names it. It
  sits outside the job's directory so it is never taken for an output.
- ``stage/`` (the pilot's, 0700): the input sandbox, unpacked and checked exactly as
  without the switch (hold codes 10, 11, 13), then removed.
- ``job/`` (the user's, 0700): made by the switch for a call with a target directory; the
  wrapper unpacks the stage, re-packed, into it with ``tar -xf -`` (seed 000 §3.1). So
  every file of the job is the user's and no privilege is needed to hand anything over.
- ``out/`` (the pilot's, 0700): the outputs, packed by the wrapper as the user and read
  through a pipe with every check of :func:`pilotage.queue.sandbox.extract`; selection,
  the credential check (finding 10) and upload are then those of the plain agent. Input
  files the job did not change are recognised by size and modification time in whole
  seconds (inodes differ across the copies).

The job's family is keyed by the claim id (``PILOTAGE_EXEC_JOB_ID``, unique per pool and
claim); the job id goes as ``PILOTAGE_EXEC_JOB_NAME``, for the audit. Signals go through
``pilotage-exec --signal SIG --job <claim id>``; after the job ends a SIGKILL to its family
takes any straggler. Clean-up runs the wrapper's ``clean`` as the user: it truncates the
user's credential copy and empties ``job/`` whatever modes the job left (finding 5); the
agent then deletes the claim's directory. A job that filled the disk has its files deleted
before its result is reported.

Each switch call (:mod:`pilotage.pilot.switchcall`) reads the switch's status line: ``0
started <pid>``, or ``<code> <message>``. A refusal holds the job only when its owner must
act (a 201 on its credential, a 203 on its identity); any other is the node's: the claim
is given back uncounted (``POST .../vacate``) and the pilot takes no more jobs; after a
202 or no line the agent may run the job as the pilot account where the site allows it
(:mod:`pilotage.pilot.nodepolicy`; docs/pilot.md, "Switch exit codes"; seed 000 §4.5,
§4.7). A wrapper that never took its request (unreadable work path, no ``python3``) is
the node's fault too. The job's credential needs ``cryptography``
(:mod:`pilotage.pilot.jobcredential`), imported only in this mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import posixpath
import re
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from pilotage.errors import Transient, UserError
from pilotage.queue.sandbox import SandboxError, extract, pack

from . import switchcall
from .client import retrying
from .container import NoRuntime, job_argv
from .jobcredential import check_switch_mode, install_wrapper, refusal_hold
from .jobcredential import fetch as fetch_credential
from .jobrun import DEFAULT_PATH, DISK_FULL, JobRun, _Gone, build_environment, remove_tree
from .nodepolicy import Cause, classify, outcome
from .outputs import OutputError, is_safe_relpath, pack_outputs, select_outputs, snapshot
from .renewal import Grant, Keeper, RefreshRefused, RenewalSettings
from .streaming import LAST_PIECES_S, WrapperStream, wrapper_request
from .switchcall import NO_LINE, Refused
from .switchretry import SwitchRetry
from .urlinputs import fetch_all as fetch_urls
from .wire import Failure, HoldCode, JobResult

__all__ = ["SwitchedRun", "check_switch_mode"]

log = logging.getLogger("pilotage.pilot")
T = TypeVar("T")

#: The interpreter the switch runs the wrapper with, found in the switch's own PATH.
PYTHON = ("python3", "-I", "-S")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: The names the switch gives the user's credential copy in the target directory.
_COPIES = ("x509_proxy", "bearer_token")


class _CannotStart(Exception):
    """The wrapper ran but could not start the job: its sentence (the owner's to fix)."""


class SwitchedRun(JobRun):
    """A claim whose job, files and signals are handled as its owner, through the switch."""

    def __init__(
        self, *args: Any, switch: tuple[str, ...],
        renewal: RenewalSettings | None = None, retry: SwitchRetry | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.switch = switch
        #: How a passing 202 is retried, then given back (pilot/switchretry.py).
        self.retry = retry or SwitchRetry()
        #: Switch calls retried after a passing 202, for the log and the give-back.
        self.retried = 0
        #: When the job's credential is renewed, and when the job is stopped without one.
        self.renewal = renewal or RenewalSettings()
        self._grant: Grant | None = None
        self._keeper: Keeper | None = None
        #: Set (under ``_lock``) when the job is stopped because its credential runs out.
        self._expired: Failure | None = None
        self._program = shutil.which(switch[0]) or switch[0]
        self.home = self.scratch  # workdir/<claim_id>: the pilot's, 0711
        self.scratch = self.home / "job"  # the user's, made by the switch
        self.proxy = self.home / "proxy"
        self._pid: int | None = None
        self._started_at = 0.0
        #: Whether the switch ever started the wrapper: only then is there anything of the
        #: user's to clean (a ``job/``, a credential copy).
        self._ran_as_user = False
        #: The job's stdout as its wrapper reads it (``stream_output``), once it runs.
        self._stream: WrapperStream | None = None

    def credential_files(self) -> list[Path]:
        """The job's proxy (the same bytes as the user's copy) and the pilot's credential."""
        return [self.proxy, *super().credential_files()]

    # -- the switch ------------------------------------------------------------------

    def _env(self, *, target: bool, family: bool) -> dict[str, str]:
        """The switch's environment: credentials, and the target dir and family if asked."""
        env = {
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            "PILOTAGE_EXEC_USER_CREDENTIAL": str(self.proxy),
            "PILOTAGE_EXEC_JOB_NAME": self.claim.job_id,
            "PILOTAGE_EXEC_STATUS_FD": str(switchcall.STATUS_FD),
        }
        if self.pilot_credential is not None:
            env["PILOTAGE_EXEC_PILOT_CREDENTIAL"] = str(self.pilot_credential)
        if target:
            env["PILOTAGE_EXEC_TARGET_DIR"] = str(self.home)
        if family:
            env["PILOTAGE_EXEC_JOB_ID"] = self.claim.claim_id
        return env

    def _wrapper(
        self, request: dict[str, Any], passed: tuple[int, ...] = (), *, job: bool = False
    ) -> tuple[int, int]:
        """:meth:`_wrapper_once`, again after a passing 202 (the site's service unreachable
        or overloaded) with randomised exponential back-off, within ``--switch-retry``'s
        count and total time (seed 000 §4.5); then the last refusal is raised. Each try
        gets copies of ``passed`` (nothing read them: the switch refused before the
        wrapper ran); they are closed here."""
        began = time.monotonic()
        try:
            while True:
                try:
                    copies = tuple(os.dup(fd) for fd in passed)
                    return self._wrapper_once(request, copies, job=job)
                except Refused as exc:
                    wait = self.retry.delay(self.retried, time.monotonic() - began)
                    if wait is None or classify(exc.code, exc.message) != (Cause.INTERNAL, False):
                        raise
                    self.retried += 1
                    log.warning("%s: pilotage-exec answered %d (%s); retry %d in %.1f s",
                                self.tag, exc.code, exc.message, self.retried, wait)  # fmt: skip
                    if self.wait_or_stopped(wait):
                        raise _Gone from None
        finally:
            for fd in passed:
                os.close(fd)

    def _wrapper_once(
        self, request: dict[str, Any], passed: tuple[int, ...] = (), *, job: bool = False
    ) -> tuple[int, int]:
        """Start the wrapper through the switch and hand it ``request``.

        Returns the switch's pid and the read end of the exec-status pipe. ``passed``
        descriptors follow the status pipe (``{"fd": 1}`` is the first of them); they are
        closed here. ``job``: the job itself (target directory and family set).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        status_r, status_w = os.pipe()
        args = ["--", *PYTHON, str(install_wrapper(self._workdir))]
        env = self._env(target=job or request.get("action") == "unpack", family=job)
        request = {"v": 1, **request, "action": "run" if request["action"] == "unpack"
                   else request["action"]}  # fmt: skip
        try:
            with theirs, ours:
                with self._lock:
                    if job and not self.alive:
                        raise _Gone
                    pid, switch_status = switchcall.launch(
                        self._program, [*self.switch, *args], theirs.fileno(), env
                    )
                    if job:
                        self._pid = pid
                theirs.close()
                code, message = switchcall.read_status(switch_status)
                if code != 0:
                    self._reap(pid)
                    raise Refused(code, message)
                self._ran_as_user = True
                if why := switchcall.hand_over(ours, request, (status_w, *passed)):
                    log.warning("%s: the job wrapper did not take its request (%s)", self.tag, why)
                    code = self._reap(pid)
                    raise OSError(
                        f"the job wrapper did not start as the job's owner (exit {code}); is "
                        f"every directory to {install_wrapper(self._workdir)} searchable by "
                        "others?"
                    )
                if job and "stream" in request:  # its pieces come on this socket
                    self._stream = WrapperStream(
                        self._client, self.claim, ours.dup(), self.credential_files
                    )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            for fd in (status_w, *passed):
                os.close(fd)
        return pid, status_r

    def _reap(self, pid: int) -> int:
        with self._lock:
            if pid == self._pid:
                self._exited = True
        _pid, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def _action(
        self, request: dict[str, Any], passed: tuple[int, ...] = (),
        reader: Callable[[], T] | None = None,
    ) -> T | None:  # fmt: skip
        """One short action as the user; what ``reader`` read. Raises on any failure."""
        pid, status_r = self._wrapper(request, passed)
        try:
            got = reader() if reader is not None else None
        finally:
            message = switchcall.read_to_end(status_r)
            code = self._reap(pid)
        if message or code != 0:
            raise _CannotStart(message or f"the wrapper's {request['action']} exited {code}")
        return got

    def _running(self) -> bool:
        return self._pid is not None and not self._exited

    def _signal(self, signum: int) -> None:
        self._send(signal.Signals(signum).name.removeprefix("SIG"))

    def _send(self, name: str) -> None:
        """``--signal``: only a refusal writes a line, so end-of-file is success."""
        argv = [*self.switch, "--signal", name, "--job", self.claim.claim_id]
        try:
            env = self._env(target=False, family=False)
            code, message, _exit = switchcall.call(self._program, argv, env)
            if code != NO_LINE:
                log.warning("%s: SIG%s not delivered through the switch (%d %s)",
                            self.tag, name, code, message)  # fmt: skip
        except OSError as exc:
            log.warning("%s: SIG%s not delivered through the switch (%s)", self.tag, name, exc)

    # -- the job's credential (pilot/renewal.py) ------------------------------------

    def hand_credential(self, data: bytes) -> None:
        """Give the running job a renewed credential: ``--refresh``, then the pilot's copy.

        The new file is written beside the pilot's copy (``O_EXCL``, 0600) and named to
        the switch, which replaces the user's copy atomically and refuses another
        identity; only then does it replace the pilot's copy (a rename), so both always
        hold the same credential.
        """
        tmp = self.home / f".proxy-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            env = {**self._env(target=True, family=False),
                   "PILOTAGE_EXEC_USER_CREDENTIAL": str(tmp)}  # fmt: skip
            argv = [*self.switch, "--refresh"]
            code, message, exit_code = switchcall.call(self._program, argv, env)
            if code != NO_LINE or exit_code != 0:
                raise RefreshRefused(f"{exit_code} {message}" if code == NO_LINE
                                     else f"{code} {message}")  # fmt: skip
            os.replace(tmp, self.proxy)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def expire(self, failure: Failure) -> bool:
        """Have the job reported with ``failure`` once it ends; false if it has ended."""
        with self._lock:
            if not self._running() or not self.alive:
                return False
            self._expired = failure
            return True

    def signal_job(self, name: str) -> None:
        """``--signal NAME`` to the job's family, as its owner."""
        self._send(name)

    def entry(self) -> tuple[str, list[str], dict[str, str], dict[str, str]]:
        """How an exec-in-job session enters the running job (pilot/sessionproc.py): the
        switch's program, argv (``--enter``) and environment, and the job's environment
        for the wrapper's request, as :meth:`_start_job` gave it."""
        argv = [*self.switch, "--enter", "--job", self.claim.claim_id, "--", *PYTHON,
                str(install_wrapper(self._workdir))]  # fmt: skip
        env = build_environment(self.claim, self.scratch)
        if "PATH" not in self.claim.environment:
            del env["PATH"]  # the switch's configured PATH
        job_env = {k: v for k, v in env.items() if _ENV_NAME.match(k)}
        return self._program, argv, self._env(target=True, family=False), job_env

    # -- the claim -------------------------------------------------------------------

    def execute(self) -> JobResult | None:
        """Run the claim to its end through the switch; the result, or None if none may be."""
        try:
            os.mkdir(self.home, 0o700)
            # Invariant: the claim's directory stays 0711 (pass, not list; no one else
            # creates anything in it) for its whole life.
            os.chmod(self.home, 0o711)  # noqa: S103
            failure = self._credential()
            if failure is not None:
                return JobResult(failure=failure)
            prepared = self._prepare()
            if isinstance(prepared, Failure):
                return JobResult(failure=prepared)
            before, program = prepared
            started = self._start_job(program)
            if isinstance(started, Failure):
                return JobResult(failure=started)
            result = self._wait_job()
            if not self.alive:
                return None
            if self._expired is not None:  # stopped, not ended: its outputs are not taken
                return dataclasses.replace(result, failure=self._expired)
            failure = self._collect(before)
            # An output failure is reported with how the job itself ended.
            return result if failure is None else dataclasses.replace(result, failure=failure)
        except Refused as exc:
            return self._refused(exc)
        except _Gone:
            return None
        except OSError as exc:  # a missing switch, a wrapper that never ran: the node's fault
            self.node_fault(f"the job cannot run on this node: {exc}")
            return None

    def _refused(self, exc: Refused) -> JobResult | None:
        """Hold the job for what its owner must fix; give it back for anything else
        (:func:`~pilotage.pilot.nodepolicy.outcome`, docs/pilot.md "Switch exit codes")."""
        code = None if exc.code == NO_LINE else exc.code
        exclude_s = self.retry.exclude_s
        done = outcome(code, exc.message, retried=self.retried, retry_exclude_s=exclude_s)
        log.warning("%s: %s", self.tag, done.reason)
        if isinstance(done, Failure):
            return JobResult(failure=done)
        self.give_back = done
        return None

    def _server(self, what: str, call: Callable[[], T]) -> T:
        try:
            return retrying(call, what=f"{self.tag}: {what}", wait=self.wait_or_stopped)
        except Transient:
            raise _Gone from None

    def _credential(self) -> Failure | None:
        """Fetch the job's proxy with the claim's one-time key; write it (0600)."""
        path = f"/pilot/v1/claims/{self.claim.claim_id}"

        def call(what: str, suffix: str, body: dict[str, Any] | None) -> Any:
            return self._server(what, lambda: self._client.request("POST", path + suffix, body))

        try:
            data, released = fetch_credential(call)
        except UserError as exc:
            hold = refusal_hold(exc)
            if hold is not None:
                return hold
            log.warning("%s: credential refused (%s); dropping the claim", self.tag, exc.message)
            self.stop("the server refused the job's credential")
            raise _Gone from None
        fd = os.open(self.proxy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        self._grant = Grant.from_wire(released)
        log.info("%s: credential of %s released", self.tag, released.get("identity"))
        return None

    def _prepare(self) -> Failure | tuple[dict[str, tuple[int, int]], str]:
        """Stage and check the sandbox, then have the user unpack it into ``job/``."""
        stage = self.home / "stage"
        if self.claim.has_input_sandbox:
            failure = self._fetch_input(stage)
            if failure is not None:
                return failure
        else:
            os.mkdir(stage, 0o700)
        failure = fetch_urls(self.claim, stage, stopped=self.wait_or_stopped)
        if failure is not None:  # the URL inputs are staged as the pilot, then handed over
            return failure
        program = self._checked_program(stage)
        if isinstance(program, Failure):
            return program
        if program.is_relative_to(stage):
            program = self.scratch / program.relative_to(stage)
        before = {n: (s.size, s.mtime_ns // 10**9) for n, s in snapshot(stage).items()}
        with open(self.home / "stage.tar", "w+b") as tar:
            try:
                members = [(name, name) for name in sorted(os.listdir(stage))]
                pack(members, cast(BinaryIO, tar), max_bytes=2 * self._max_bytes, base=stage)
            except SandboxError as exc:
                return Failure(HoldCode.INPUT_REFUSED, f"input sandbox refused: {exc.message}")
            tar.flush()
            tar.seek(0)
            remove_tree(stage)
            os.unlink(self.home / "stage.tar")  # the open descriptor still reads it
            request = {
                "action": "unpack", "dir": str(self.scratch), "argv": ["tar", "-xf", "-"],
                "stdin": {"fd": 1}, "umask": 0o077,
            }  # fmt: skip
            try:
                self._action(request, (os.dup(tar.fileno()),))
            except _CannotStart as exc:
                return Failure(
                    HoldCode.INPUT_REFUSED,
                    f"the input sandbox could not be unpacked as the job's owner ({exc})",
                )
        return before, str(program)

    def _start_job(self, program: str) -> Failure | None:
        """Start the job through the switch and the wrapper; a failure is the owner's."""
        claim = self.claim
        env = build_environment(claim, self.scratch)
        if "PATH" not in claim.environment:
            del env["PATH"]  # the switch's configured PATH
        error: str | None = claim.error
        if claim.error is not None and claim.error == claim.output:
            error = "&1"
        try:
            argv = job_argv(claim, [program, *claim.arguments], self.scratch)
        except NoRuntime as exc:
            return Failure(HoldCode.START, f"the job could not be started ({exc})")
        request = {
            "action": "run", "dir": str(self.scratch), "argv": argv,
            "env": {k: v for k, v in env.items() if _ENV_NAME.match(k)},
            "stdin": claim.input, "stdout": claim.output, "stderr": error,
            **wrapper_request(claim),
        }  # fmt: skip
        pid, status_r = self._wrapper(request, job=True)
        self._started_at = time.monotonic()
        message = switchcall.read_to_end(status_r)
        if self._stream is not None and not message:
            self._stream.start()
        if message:
            code = self._reap(pid)
            log.warning("%s: the job could not start (exit %d): %s", self.tag, code, message)
            return Failure(HoldCode.START, f"the job could not be started as its owner: {message}")
        log.info("%s: started through pilotage-exec (pid %d)", self.tag, pid)
        if not self.alive:  # stopped before the switch had recorded the job's family
            self._send("TERM")
        return None

    def _wait_job(self) -> JobResult:
        assert self._pid is not None
        if self._grant is not None:
            self._keeper = Keeper(self, self._client, self.renewal, self._grant)
            self._keeper.start()
        try:
            _pid, status, usage = os.wait4(self._pid, 0)
        finally:
            if self._keeper is not None:
                self._keeper.close()
        with self._lock:
            self._exited = True
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        wall_s = time.monotonic() - self._started_at
        if self._stream is not None:  # its reader sends the last pieces, then ends
            self._stream.close(LAST_PIECES_S)
        self._send("KILL")  # stragglers of the job die with it
        result = JobResult(
            exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            wall_s=wall_s,
            cpu_s=usage.ru_utime + usage.ru_stime,
            max_rss_kb=usage.ru_maxrss,
        )
        log.info(
            "%s: ended (exit %s, signal %s, wall %.1f s)",
            self.tag, result.exit_code, result.signal, wall_s,
        )  # fmt: skip
        return result

    def _collect(self, before: dict[str, tuple[int, int]]) -> Failure | None:
        """Bring the outputs over as the user, check them, then select and upload."""
        try:
            return self._collect_outputs(before)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            self._clean_job()  # room first: the report itself needs no disk
            remove_tree(self.home / "out")
            return self.disk_full(exc)

    def _collect_outputs(self, before: dict[str, tuple[int, int]]) -> Failure | None:
        claim = self.claim
        streams = [n for n in (claim.output, claim.error) if n is not None and is_safe_relpath(n)]
        top = claim.transfer_output_files is None
        listed = [*(claim.transfer_output_files or ()), *streams]
        names = sorted({posixpath.normpath(n) for n in listed if is_safe_relpath(n)})
        out = self.home / "out"
        os.mkdir(out, 0o700)
        if names or top:
            read_fd, write_fd = os.pipe()
            request = {"action": "collect", "dir": str(self.scratch), "names": names,
                       "top": top, "stdout": {"fd": 1}}  # fmt: skip
            pipe = os.fdopen(read_fd, "rb")

            def read() -> list[str]:
                # Closed before the wrapper is waited for: a reader that stops early
                # (refused, disk full) must not leave it blocked on a full pipe.
                with pipe:
                    return extract(cast(BinaryIO, pipe), out, max_bytes=2 * self._max_bytes)

            with pipe:
                try:
                    self._action(request, (write_fd,), reader=read)
                except SandboxError as exc:
                    log.warning("%s: outputs refused: %s", self.tag, exc.message)
                    return Failure(HoldCode.OUTPUT, f"the output sandbox is refused: {exc.message}")
                except _CannotStart as exc:
                    return Failure(HoldCode.OUTPUT, f"the outputs could not be read: {exc}")
        unchanged = {
            name: stamp
            for name, stamp in snapshot(out).items()
            if before.get(name) == (stamp.size, stamp.mtime_ns // 10**9)
        }
        try:
            chosen = select_outputs(
                out, unchanged, claim.transfer_output_files, claim.output, claim.error
            )
            if not chosen:
                return None
            tar = pack_outputs(out, chosen, self._max_bytes, self.home)
        except OutputError as exc:
            log.warning("%s: %s", self.tag, exc)
            return Failure(HoldCode.OUTPUT, str(exc))
        refused = self.refuse_credential(tar)
        if refused is not None:
            return refused
        return self._upload(tar, len(chosen))

    def _clean_job(self) -> None:
        """As the user: empty the credential copies and ``job/``, whatever their modes."""
        if not self._ran_as_user:
            return
        request = {
            "action": "clean", "dir": str(self.scratch),
            "credentials": [str(self.home / name) for name in _COPIES],
        }  # fmt: skip
        try:
            self._action(request)
        except (Refused, _CannotStart, OSError) as exc:
            log.warning("%s: the job's files not removed as its owner (%s)", self.tag, exc)

    def cleanup(self) -> None:
        """Clean as the job's owner, then delete the claim's directory (the pilot's)."""
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        if self._stream is not None:
            self._stream.close()
        self._clean_job()
        try:
            # ``job/`` is the user's (0700): the pilot cannot list it, only remove it empty.
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(self.scratch)
            remove_tree(self.home)
        except OSError as exc:
            log.warning("%s: %s not removed (%s)", self.tag, self.home, exc)
