"""The ``ssh`` backend: pilots started over SSH on a remote host, no batch system there.

Each call runs one short POSIX sh program on the remote host, whatever the number of
pilots, over one shared SSH connection (OpenSSH's connection multiplexing: a master
connection kept for ``persist_s`` after its last use, so a factory cycle pays for the
key exchange once). On the
remote host each pilot has a directory ``<remote_root>/<id>`` holding ``job.sh``,
``pilot.log``, ``pid`` and, once removed, ``removed`` — the same layout as the ``local``
backend, read the same way.

Entry parameters: ``host`` (required), ``user``, ``port`` (22), ``identity`` (a private
key file), ``known_hosts`` (a file; host keys are always checked, never learnt on the
fly), ``remote_root`` (``.pilotage-pilots``, relative to the login directory), and
``connect_timeout_s`` (10), ``persist_s`` (300).
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pilotage.errors import BadInput, NotFound, OperatorError, Transient
from pilotage.factory.backends.base import (
    MAX_LOG_BYTES,
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
)
from pilotage.factory.pilots import Observed, PilotState

PARAMS = (
    "host",
    "user",
    "port",
    "identity",
    "known_hosts",
    "remote_root",
    "connect_timeout_s",
    "persist_s",
)
_ID = re.compile(r"^[A-Za-z0-9._-]{1,80}$")

#: Starts one pilot: $1 is its id, the job script comes base64-encoded in $2.
_START = r"""
start() {
    dir="$root/$1"
    mkdir -p "$dir" && chmod 700 "$dir" || return 1
    printf '%s' "$2" | base64 -d > "$dir/job.sh" || return 1
    cd "$dir" || return 1
    nohup setsid /bin/sh job.sh </dev/null >>pilot.log 2>&1 &
    echo $! > pid
    cd - >/dev/null
}
"""

#: Prints "<id> <running|removed|exited|unknown>" per id.
_STATUS = r"""
for id in "$@"; do
    dir="$root/$id"
    if [ ! -d "$dir" ]; then echo "$id unknown"
    elif [ -e "$dir/removed" ]; then echo "$id removed"
    elif [ -s "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then echo "$id running"
    else echo "$id exited"
    fi
done
"""

_REMOVE = r"""
signalled=0
for id in "$@"; do
    dir="$root/$id"
    [ -d "$dir" ] || continue
    touch "$dir/removed"
    [ -s "$dir/pid" ] && kill -TERM -- "-$(cat "$dir/pid")" 2>/dev/null && signalled=1
done
[ "$signalled" = 1 ] && sleep "$grace"
for id in "$@"; do
    dir="$root/$id"
    [ -s "$dir/pid" ] && kill -KILL -- "-$(cat "$dir/pid")" 2>/dev/null
done
exit 0
"""


class SshBatch(BatchSystem):
    """Pilots on a remote host through ``ssh``; see the module docstring."""

    kind = "ssh"

    def __init__(self, params: Mapping[str, object], *, grace_s: int = 3) -> None:
        known_params(params, self.kind, PARAMS)
        self.host = param_str(params, "host")
        self.user = str(params["user"]) if "user" in params else None
        self.port = param_int(params, "port", 22)
        self.identity = str(params["identity"]) if "identity" in params else None
        self.known_hosts = str(params["known_hosts"]) if "known_hosts" in params else None
        self.remote_root = param_str(params, "remote_root", ".pilotage-pilots")
        self.connect_timeout_s = param_int(params, "connect_timeout_s", 10)
        self.persist_s = param_int(params, "persist_s", 300)
        self.grace_s = grace_s
        # Private to this process: the control socket is a live login to the host.
        self._control_dir = Path(tempfile.mkdtemp(prefix="pilotage-ssh-"))
        self._control = self._control_dir / "master"

    def _command(self) -> list[str]:
        command = [
            "ssh",
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout_s}",
            "-o",
            "LogLevel=ERROR",
            "-o",
            f"ControlPath={self._control}",
        ]
        if self.known_hosts:
            command += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            command += ["-o", "IdentitiesOnly=yes", "-i", self.identity]
        target = f"{self.user}@{self.host}" if self.user else self.host
        return [*command, target]

    def _master(self) -> None:
        """Start the shared connection if there is none (its errors show in the next call).

        Started apart with ``-f`` and no pipes of ours: a master forked by a captured
        call would hold that call's pipes open for ``persist_s``.
        """
        if self._control.exists():
            return
        command = self._command()
        command[1:1] = ["-o", "ControlMaster=yes", "-o", f"ControlPersist={self.persist_s}"]
        # Errors are not reported here: the call itself reports what is wrong.
        with contextlib.suppress(subprocess.TimeoutExpired, FileNotFoundError):
            subprocess.run(
                [*command[:-1], "-f", "-N", command[-1]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=self.connect_timeout_s + 5,
            )

    def close(self) -> None:
        """Close the shared connection."""
        if self._control.exists():
            subprocess.run(
                [*self._command()[:-1], "-O", "exit", self._command()[-1]],
                capture_output=True,
                timeout=10,
            )
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def _run(self, program: str, args: Sequence[str], *, timeout_s: float = 60) -> str:
        """Run ``program`` with ``sh -s`` remotely, ``args`` as its positional parameters."""
        self._master()
        prelude = f"root={shlex.quote(self.remote_root)}\ngrace={self.grace_s}\n"
        remote = "sh -s -- " + " ".join(shlex.quote(a) for a in args)
        try:
            result = subprocess.run(
                [*self._command(), remote],
                input=(prelude + program).encode(),
                capture_output=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise Transient(f"ssh to {self.host} timed out after {timeout_s:.0f} s") from None
        except FileNotFoundError:
            raise OperatorError("the ssh backend needs the ssh client (openssh-client)") from None
        if result.returncode == 255:
            message = result.stderr.decode(errors="replace").strip().splitlines()
            raise Transient(f"ssh to {self.host} failed: {message[-1] if message else 'no answer'}")
        if result.returncode != 0:
            raise OperatorError(
                f"remote command on {self.host} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def submit(self, count: int, launch: Launch) -> list[str]:
        """Start ``count`` pilots in one connection."""
        check_count(count)
        if count == 0:
            return []
        ids = [f"{launch.name}-{secrets.token_hex(4)}" for _ in range(count)]
        script = base64.b64encode(job_script(launch).encode()).decode()
        program = (
            _START + 'for id in "$@"; do start "$id" ' + shlex.quote(script) + " || exit 1; done\n"
        )
        self._run(program, ids)
        return ids

    def status(self, ids: Sequence[str]) -> dict[str, Observed]:
        """One connection for every id; ended pilots are read from their logs."""
        valid = [i for i in ids if _ID.match(i)]
        answer: dict[str, Observed] = {i: UNKNOWN for i in ids}
        if not valid:
            return answer
        for line in self._run(_STATUS, valid).splitlines():
            backend_id, _, word = line.partition(" ")
            if backend_id not in answer:
                continue
            if word == "running":
                answer[backend_id] = Observed(PilotState.RUNNING)
            elif word == "removed":
                answer[backend_id] = REMOVED
            elif word == "exited":
                answer[backend_id] = outcome_from_log(self.logs(backend_id)) or Observed(
                    PilotState.FAILED, "ended without an exit line"
                )
        return answer

    def remove(self, ids: Sequence[str]) -> None:
        """SIGTERM each pilot's session, then SIGKILL after the grace period."""
        valid = [i for i in ids if _ID.match(i)]
        if valid:
            self._run(_REMOVE, valid, timeout_s=60 + self.grace_s)

    def logs(self, backend_id: str) -> str:
        """The end of the remote ``pilot.log``."""
        if not _ID.match(backend_id):
            raise BadInput(f"{backend_id!r} is not an ssh pilot id")
        program = (
            'dir="$root/$1"\n[ -d "$dir" ] || exit 3\n'
            f'[ -f "$dir/pilot.log" ] && tail -c {MAX_LOG_BYTES} "$dir/pilot.log"\nexit 0\n'
        )
        try:
            return self._run(program, [backend_id])
        except OperatorError as exc:
            if "exited 3" in exc.message:
                raise NotFound(f"no pilot {backend_id} on {self.host}") from None
            raise
