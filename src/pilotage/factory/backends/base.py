"""The one interface every batch-system backend implements, and what they share.

A backend starts pilots at one entry and reports on them; it knows nothing of pressure
or policy (the factory decides how many, which to remove). Four calls::

    submit(count, launch) -> backend ids       start ``count`` pilots running ``launch``
    status(ids)           -> {id: Observed}    where each is (idle, running, held, ended)
    remove(ids)                                stop them, queued or running
    logs(id)              -> str               what the pilot wrote (stdout and stderr)

and ``release(ids)`` for held pilots where the batch system can hold them.

Every backend runs the same job script, :func:`job_script`: the launch's POSIX sh text
in a subshell with the launch's environment, followed by one line
``pilotage-exit: <code>`` in the log. That line is how a backend whose batch system has
forgotten a job (Slurm after ``MinJobAge``, a reaped process) still tells *finished*
from *failed*: :func:`outcome_from_log`.

The shared conformance suite in ``tests/factory/test_backend_conformance.py`` holds
every backend to the same behaviour.
"""

from __future__ import annotations

import abc
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pilotage.errors import BadInput, OperatorError, Transient
from pilotage.factory.pilots import Observed, PilotState

#: The line the job script ends its log with.
EXIT_MARKER = "pilotage-exit:"
_EXIT_LINE = re.compile(rf"^{EXIT_MARKER} (\d+)\s*$", re.MULTILINE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: How much of a pilot's log ``logs()`` returns at most (its end).
MAX_LOG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Launch:
    """What each pilot of one submission runs.

    ``script`` is POSIX sh, run with ``sh`` in the pilot's own directory at the entry;
    ``env`` is exported before it. ``walltime_s`` is the batch system's limit where it
    has one (the pilot bounds its own lifetime too).
    """

    script: str
    env: Mapping[str, str] = field(default_factory=dict)
    walltime_s: int = 3600
    #: A short label for the batch system's job name.
    name: str = "pilot"

    def __post_init__(self) -> None:
        for key in self.env:
            if not _ENV_NAME.match(key):
                raise BadInput(f"launch environment variable name {key!r} is not valid")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.name):
            raise BadInput(f"launch name {self.name!r} must be 1-64 of A-Z a-z 0-9 . _ -")
        if self.walltime_s < 60:
            raise BadInput("launch walltime_s must be at least 60")


def job_script(launch: Launch) -> str:
    """The whole job script a backend submits: env, the launch's script, the exit line."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(launch.env.items()))
    return (
        "#!/bin/sh\n"
        f"# pilotage pilot: {launch.name}\n"
        f"{exports}"
        "(\n"
        f"{launch.script.rstrip()}\n"
        ")\n"
        "pilotage_rc=$?\n"
        f'echo "{EXIT_MARKER} $pilotage_rc"\n'
        "exit $pilotage_rc\n"
    )


def outcome_from_log(text: str) -> Observed | None:
    """FINISHED or FAILED from the exit line in a pilot's log; None if it has none."""
    found = _EXIT_LINE.findall(text)
    if not found:
        return None
    code = int(found[-1])
    if code == 0:
        return Observed(PilotState.FINISHED, "exit code 0")
    return Observed(PilotState.FAILED, f"exit code {code}")


#: What a backend reports for an id it has no trace of.
UNKNOWN = Observed(PilotState.FAILED, "unknown to the backend")
#: What a backend reports for a pilot it removed.
REMOVED = Observed(PilotState.FINISHED, "removed")


class BatchSystem(abc.ABC):
    """A backend: one way to start pilots at an entry. See the module docstring."""

    #: The backend's name in entries files (``local``, ``slurm``, ``ssh``, ``condor``).
    kind: str = ""

    @abc.abstractmethod
    def submit(self, count: int, launch: Launch) -> list[str]:
        """Start ``count`` pilots; return their backend ids (as many, all distinct)."""

    @abc.abstractmethod
    def status(self, ids: Sequence[str]) -> dict[str, Observed]:
        """Where each of ``ids`` is; every id gets an answer (:data:`UNKNOWN` if need be)."""

    @abc.abstractmethod
    def remove(self, ids: Sequence[str]) -> None:
        """Stop the pilots ``ids``, queued or running; ids already ended are ignored."""

    @abc.abstractmethod
    def logs(self, backend_id: str) -> str:
        """The end of the pilot's log (at most :data:`MAX_LOG_BYTES`); "" if none yet."""

    def release(self, ids: Sequence[str]) -> None:  # noqa: B027 - optional, no-op default
        """Release held pilots; a batch system that never holds has nothing to do."""

    def close(self) -> None:  # noqa: B027 - optional, no-op default
        """Free what the backend holds (connections, child processes' handles)."""


def run_tool(
    command: list[str], *, env: Mapping[str, str], stdin: str | None, package: str
) -> subprocess.CompletedProcess[str]:
    """Run a batch system's command-line tool (``sbatch``, ``condor_q``...) with a time
    limit; a missing tool is the operator's to install (``package``), a hung one transient."""
    try:
        return subprocess.run(
            command, input=stdin, capture_output=True, text=True, env=dict(env), timeout=120
        )
    except FileNotFoundError:
        raise OperatorError(f"this backend needs {command[0]} ({package})") from None
    except subprocess.TimeoutExpired:
        raise Transient(f"{command[0]} did not answer within 120 s") from None


def check_count(count: int) -> None:
    """Refuse a negative count (zero is allowed and submits nothing)."""
    if count < 0:
        raise BadInput(f"cannot submit {count} pilots")


def tail(data: bytes) -> str:
    """The last :data:`MAX_LOG_BYTES` of ``data`` as text."""
    return data[-MAX_LOG_BYTES:].decode("utf-8", errors="replace")


def param_str(params: Mapping[str, object], key: str, default: str | None = None) -> str:
    """A string parameter of an entry's backend, or :class:`BadInput` naming it."""
    value = params.get(key, default)
    if not isinstance(value, str) or not value:
        raise BadInput(f"backend parameter '{key}' must be a non-empty string")
    return value


def param_int(params: Mapping[str, object], key: str, default: int | None = None) -> int:
    """An integer parameter of an entry's backend, or :class:`BadInput` naming it."""
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"backend parameter '{key}' must be an integer")
    return value


def known_params(params: Mapping[str, object], kind: str, allowed: Sequence[str]) -> None:
    """Refuse parameters a backend does not know (a typo must not pass silently)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BadInput(
            f"{kind} backend: unknown parameter '{unknown[0]}'; known: {', '.join(allowed)}"
        )
