"""Running a claim through the switch (``--switch``): every action in the owner's name.

Opt-in. With ``--switch COMMAND`` (e.g. ``sudo -n -C 5 /opt/pilotage-exec/bin/pilotage-exec``,
split like a shell would) each claim runs as :class:`SwitchedRun` instead of
:class:`~pilotage.pilot.jobrun.JobRun`; without it nothing here is used. The agent stays at
the pilot's uid; what touches the job's files runs through ``pilotage-exec`` as the account
the site maps the job's credential to (docs/switch.md, DESIGN.md step 5).

The claim's directory ``workdir/<claim_id>/`` is the pilot's, mode 0711 (others may pass,
not list):

- ``proxy`` (the pilot's, 0600): the job's credential, fetched with the claim's one-time key
  (docs/pilot-protocol.md, "The job's credential"); ``PILOTAGE_EXEC_USER_CREDENTIAL``.
- ``x509_proxy`` (the user's, 0600): the user's copy, written by the switch, which is given
  the claim's directory as ``PILOTAGE_EXEC_TARGET_DIR``; ``X509_USER_PROXY`` names it. It
  sits outside the job's directory so it is never taken for an output.
- ``stage/`` (the pilot's, 0700): the input sandbox, unpacked and checked exactly as
  without the switch (hold codes 10, 11, 13), then removed.
- ``job/`` (the user's, 0700): the job's scratch directory. The user makes it: for one
  switch call (``mkdir job && cd job && tar -xf -``, fed with the stage re-packed, seed 000
  §3.1) the claim's directory is 1733, like ``/tmp`` (others may create, not list; the
  sticky bit keeps them from removing or renaming what is not theirs), then 0711 again. So
  every file of the job is the user's and no privilege is needed to hand anything over;
  the only thing another local account could do in that window is take the name ``job``
  first, which fails the unpacking (the job is held, nothing is exposed).
- ``out/`` (the pilot's, 0700): the outputs, ``tar -cf -`` run as the user in ``job/`` and
  read through a pipe with every check of :func:`pilotage.queue.sandbox.extract`; selection
  and upload are then those of the plain agent. Input files the job did not change are
  recognised by size and modification time in whole seconds (inodes differ across the
  copies).

Signals go through ``pilotage-exec --signal SIG --job ID``; after the job ends a SIGKILL to
its family takes any straggler. Clean-up empties ``job/`` as the user, then the agent
deletes the claim's directory. Each call passes the status channel as descriptor 3
(hence ``sudo -C 4`` or more) and reads its line: ``0 started <pid>``, or ``<code>
<message>``; 201 and 203 hold the job with the switch's message, 202 (site or transient)
drops the claim unreported, so its lease lapses and the job is matched again elsewhere
(seed 000 §4.5, §4.7). Making the key and CSR of the job's credential needs
``cryptography``, imported here only in this mode (the switch needs it on the node anyway).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import posixpath
import re
import shutil
import signal
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar, cast

from pilotage.errors import OperatorError, Transient, UserError
from pilotage.queue.sandbox import SandboxError, extract, pack

from .client import error_kind, retrying
from .jobrun import DEFAULT_PATH, JobRun, _Gone, build_environment, remove_tree
from .outputs import OutputError, is_safe_relpath, pack_outputs, select_outputs, snapshot
from .wire import Failure, HoldCode, JobResult

log = logging.getLogger("pilotage.pilot")
T = TypeVar("T")

#: The descriptor the switch writes its status line to, in its own process.
STATUS_FD = 3
SHELL = "/bin/sh"
NO_CREDENTIAL = (
    "this pilot runs jobs only under their owner's identity; submit with use_x509userproxy"
)
#: Refusals of a credential release that hold the job (the credential, not the pilot, is bad).
_HOLDING = ("NoStoredCredential", "IdentityChanged", "StoredCredentialUnusable")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.S)
#: No status line at all (a dead switch: 202, or ``--signal``'s success).
_NO_LINE = -202
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# The user's side of each action: fixed scripts, every value a positional argument.
_UNPACK = 'umask 077 && mkdir -- "$1" && cd -- "$1" && exec tar -xf -'
_RUN = """cd -- "$1" || exit 125
case $3 in */*) mkdir -p -- "${3%/*}" ;; esac
case $4 in */*) mkdir -p -- "${4%/*}" ;; esac
exec <"$2" >"$3"
if [ "$4" = "&1" ]; then exec 2>&1; else exec 2>"$4"; fi
n=$5
shift 5
while [ "$n" -gt 0 ]; do export "$1"; n=$((n - 1)); shift; done
exec "$@"
"""
_COLLECT_TOP = """cd -- "$1" || exit 1
shift
{ find . -mindepth 1 -maxdepth 1 -type f -printf '%P\\0'
  for f in "$@"; do if [ -e "$f" ]; then printf '%s\\0' "$f"; fi; done
} | sort -zu | exec tar -cf - --null --no-recursion -T -
"""
_COLLECT_LISTED = 'cd -- "$1" || exit 1; shift; exec tar -cf - --ignore-failed-read -- "$@"'
_CLEAN = 'cd -- "$1" || exit 1; chmod -R u+rwX . 2>/dev/null; exec find . -mindepth 1 -delete'


def check_switch_mode() -> None:
    """Refuse ``--switch`` at start on a node without ``cryptography``."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise OperatorError(
            "--switch needs the Python package cryptography (the switch needs it too): "
            "the agent makes the key of each job's credential"
        ) from None


def make_key_request() -> tuple[bytes, str]:
    """A new RSA key (PEM) and a CSR for it (PEM); the subject is ignored by the server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pilotage-agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def proxy_file_bytes(chain_pem: str, key_pem: bytes) -> bytes:
    """The grid order: the released proxy certificate, its key, then the rest of the chain."""
    certs = _PEM_CERT.findall(chain_pem.encode())
    if not certs:
        raise OperatorError("the server's credential release holds no certificate")
    return b"".join(_line_ended(c) for c in (certs[0], key_pem, *certs[1:]))


def _line_ended(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


class _Refused(Exception):
    """The switch refused a call: its exit code (201-203) and its sentence."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SwitchedRun(JobRun):
    """A claim whose job, files and signals are handled as its owner, through the switch."""

    def __init__(self, *args: Any, switch: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.switch = switch
        self._program = shutil.which(switch[0]) or switch[0]
        self.home = self.scratch  # workdir/<claim_id>: the pilot's
        self.scratch = self.home / "job"  # the user's
        self.proxy = self.home / "proxy"
        self._pid: int | None = None
        self._started_at = 0.0
        self._unpacked = False

    # -- the switch ------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            "PILOTAGE_EXEC_USER_CREDENTIAL": str(self.proxy),
            "PILOTAGE_EXEC_TARGET_DIR": str(self.home),
            "PILOTAGE_EXEC_JOB_ID": self.claim.job_id,
            "PILOTAGE_EXEC_STATUS_FD": str(STATUS_FD),
        }

    def _launch(self, args: list[str], stdin: int, stdout: int, stderr: int) -> tuple[int, int]:
        """Start the switch with ``args`` in a new session; its pid and status read end.

        ``posix_spawn`` places the descriptors (0, 1, 2 and the status channel at 3) in
        the child only, so concurrent claims never see each other's.
        """
        read_fd, write_fd = os.pipe()
        high: list[int] = []
        try:
            for fd in (stdin, stdout, stderr, write_fd):
                high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high)]
            pid = os.posix_spawn(
                self._program, [*self.switch, *args], self._env(),
                file_actions=actions, setsid=True,
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            for fd in (*high, write_fd):
                os.close(fd)
        return pid, read_fd

    @staticmethod
    def _status(read_fd: int) -> tuple[int, str]:
        """Read the status line (not end-of-file: sudo keeps a copy open) and close."""
        data = b""
        try:
            while b"\n" not in data and len(data) < 8192:
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read_fd)
        line = data.split(b"\n", 1)[0].decode(errors="replace")
        code, _, message = line.partition(" ")
        if not line:
            return _NO_LINE, "pilotage-exec ended without a status line"
        if not code.isdigit():
            return 202, f"pilotage-exec sent an unreadable status line {line[:200]!r}"
        return int(code), message

    def _call_switch(
        self, args: list[str], *, stdin: int | None = None, stdout: int | None = None,
        reader: Callable[[], T] | None = None, started: bool = True,
    ) -> tuple[int, T | None]:  # fmt: skip
        """One short action through the switch; its exit code and what ``reader`` read.

        ``started=False`` for ``--signal``, which starts nothing: only a refusal writes a
        line, so end-of-file is success.
        """
        with open(os.devnull, "r+b") as null:
            pid, status_fd = self._launch(
                args,
                null.fileno() if stdin is None else stdin,
                null.fileno() if stdout is None else stdout,
                null.fileno(),
            )
        if stdout is not None:
            os.close(stdout)  # the child has its copy; end-of-file must reach ``reader``
        try:
            code, message = self._status(status_fd)
            if code != 0 and (started or code != _NO_LINE):
                raise _Refused(code, message)
            got = reader() if reader is not None else None
        finally:
            _pid, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), got

    def _running(self) -> bool:
        return self._pid is not None and not self._exited

    def _signal(self, signum: int) -> None:
        self._send(signal.Signals(signum).name.removeprefix("SIG"))

    def _send(self, name: str) -> None:
        try:
            self._call_switch(["--signal", name, "--job", self.claim.job_id], started=False)
        except (_Refused, OSError) as exc:
            log.warning("%s: SIG%s not delivered through the switch (%s)", self.tag, name, exc)

    # -- the claim -------------------------------------------------------------------

    def execute(self) -> JobResult | None:
        """Run the claim to its end through the switch; the result, or None if none may be."""
        try:
            os.mkdir(self.home, 0o700)
            os.chmod(self.home, 0o711)  # noqa: S103 - passable, not listable
            failure = self._credential()
            if failure is not None:
                return JobResult(failure=failure)
            prepared = self._prepare()
            if isinstance(prepared, Failure):
                return JobResult(failure=prepared)
            before, program = prepared
            self._start_job(program)
            result = self._wait_job()
            if not self.alive:
                return None
            failure = self._collect(before)
            # An output failure is reported with how the job itself ended.
            return result if failure is None else dataclasses.replace(result, failure=failure)
        except _Refused as exc:
            return self._refused(exc)
        except _Gone:
            return None
        except OSError as exc:  # the node's fault, not the job's: drop it
            log.error("%s: cannot run here (%s); dropping the claim", self.tag, exc)
            self.stop(f"node error: {exc}")
            return None

    def _refused(self, exc: _Refused) -> JobResult | None:
        exc.code = 202 if exc.code == _NO_LINE else exc.code
        log.warning("%s: pilotage-exec refused (%d): %s", self.tag, exc.code, exc.message)
        if exc.code == 202 or exc.code not in (201, 203):
            self.stop(f"pilotage-exec failed on this node ({exc.code} {exc.message})")
            return None
        code = HoldCode.IDENTITY if exc.code == 203 else HoldCode.START
        return JobResult(
            failure=Failure(code, f"pilotage-exec refused ({exc.code}): {exc.message}")
        )

    def _server(self, what: str, call: Callable[[], T]) -> T:
        try:
            return retrying(call, what=f"{self.tag}: {what}", wait=self.wait_or_stopped)
        except Transient:
            raise _Gone from None

    def _credential(self) -> Failure | None:
        """Fetch the job's proxy with the claim's one-time key; write it (0600)."""
        path = f"/pilot/v1/claims/{self.claim.claim_id}"
        try:
            issued = self._server(
                "credential key", lambda: self._client.request("POST", path + "/credential-key")
            )
            key_pem, csr_pem = make_key_request()
            body = {"v": 1, "key": str(issued["key"]), "csr_pem": csr_pem}
            released = self._server(
                "credential", lambda: self._client.request("POST", path + "/credential", body)
            )
        except UserError as exc:
            kind = error_kind(exc)
            if kind == "JobWithoutCredential":
                return Failure(HoldCode.IDENTITY, NO_CREDENTIAL)
            if kind in _HOLDING:
                return Failure(
                    HoldCode.IDENTITY, f"the job's credential cannot be released: {exc.message}"
                )
            log.warning("%s: credential refused (%s); dropping the claim", self.tag, exc.message)
            self.stop("the server refused the job's credential")
            raise _Gone from None
        data = proxy_file_bytes(str(released["chain_pem"]), key_pem)
        fd = os.open(self.proxy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        log.info("%s: credential of %s released", self.tag, released.get("identity"))
        return None

    def _prepare(self) -> Failure | tuple[dict[str, tuple[int, int]], str]:
        """Stage and check the sandbox, then hand it to the user as ``job/``."""
        stage = self.home / "stage"
        if self.claim.has_input_sandbox:
            failure = self._fetch_input(stage)
            if failure is not None:
                return failure
        else:
            os.mkdir(stage, 0o700)
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
            os.chmod(self.home, 0o1733)  # noqa: S103 - one call; see the docstring
            try:
                code, _ = self._call_switch(
                    ["--", SHELL, "-c", _UNPACK, "sh", str(self.scratch)], stdin=tar.fileno()
                )
                self._unpacked = self.scratch.exists()
            finally:
                os.chmod(self.home, 0o711)  # noqa: S103 - passable, not listable
        if code != 0:
            return Failure(
                HoldCode.INPUT_REFUSED,
                f"the input sandbox could not be unpacked as the job's owner (exit {code})",
            )
        return before, str(program)

    def _start_job(self, program: str) -> None:
        """Start the job through the switch and read its status line."""
        claim = self.claim
        env = build_environment(claim, self.scratch)
        if "PATH" not in claim.environment:
            del env["PATH"]  # the switch's configured PATH
        pairs = [f"{k}={v}" for k, v in env.items() if _ENV_NAME.match(k)]
        error = claim.error or os.devnull
        if claim.error is not None and claim.error == claim.output:
            error = "&1"
        args = [
            "--", SHELL, "-c", _RUN, "sh", str(self.scratch), claim.input or os.devnull,
            claim.output or os.devnull, error, str(len(pairs)), *pairs, program,
            *claim.arguments,
        ]  # fmt: skip
        with open(os.devnull, "r+b") as null, self._lock:
            if not self.alive:
                raise _Gone
            self._pid, status_fd = self._launch(args, null.fileno(), null.fileno(), null.fileno())
        self._started_at = time.monotonic()
        code, message = self._status(status_fd)
        if code != 0:
            with self._lock:
                self._exited = True
            os.waitpid(self._pid, 0)
            raise _Refused(code, message)
        log.info("%s: started through pilotage-exec (%s)", self.tag, message)
        if not self.alive:  # stopped before the switch had recorded the job's family
            self._send("TERM")

    def _wait_job(self) -> JobResult:
        assert self._pid is not None
        _pid, status, usage = os.wait4(self._pid, 0)
        with self._lock:
            self._exited = True
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        wall_s = time.monotonic() - self._started_at
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
        """Bring the outputs over as the user (``tar -cf -``), then select and upload."""
        claim = self.claim
        streams = [n for n in (claim.output, claim.error) if n is not None and is_safe_relpath(n)]
        if claim.transfer_output_files is None:
            script, names = _COLLECT_TOP, streams
        else:
            script = _COLLECT_LISTED
            listed = [*claim.transfer_output_files, *streams]
            names = sorted({posixpath.normpath(n) for n in listed if is_safe_relpath(n)})
        out = self.home / "out"
        os.mkdir(out, 0o700)
        if names or claim.transfer_output_files is None:
            read_fd, write_fd = os.pipe()
            with os.fdopen(read_fd, "rb") as pipe:
                try:
                    self._call_switch(
                        ["--", SHELL, "-c", script, "sh", str(self.scratch), *names],
                        stdout=write_fd,
                        reader=lambda: extract(
                            cast(BinaryIO, pipe), out, max_bytes=2 * self._max_bytes
                        ),
                    )
                except SandboxError as exc:
                    log.warning("%s: outputs refused: %s", self.tag, exc.message)
                    return Failure(HoldCode.OUTPUT, f"the output sandbox is refused: {exc.message}")
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
        return self._upload(tar, len(chosen))

    def cleanup(self) -> None:
        """Empty the job's directory as its owner, then delete the claim's directory."""
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        if self._unpacked:
            try:
                self._call_switch(["--", SHELL, "-c", _CLEAN, "sh", str(self.scratch)])
                os.rmdir(self.scratch)  # empty now; the parent is the pilot's
            except (_Refused, OSError) as exc:
                log.warning("%s: the job's directory not emptied (%s)", self.tag, exc)
        try:
            remove_tree(self.home)
        except OSError as exc:
            log.warning("%s: %s not removed (%s)", self.tag, self.home, exc)
