"""A job's process family: its own session and process group, plus a cgroup where possible.

``pilotage-exec`` records each job it starts (with ``PILOTAGE_EXEC_JOB_ID``) in its state
directory: the session id, the uid it runs as, and its cgroup. ``--signal SIG --job ID``
then finds every process of the family in one invocation: the members of the cgroup
(which a process cannot leave by calling ``setsid``) and of the session. It signals them
only after switching to the job's uid, so the kernel itself stops it from touching any
process of another account, the pilot's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time

from .refusals import ClientError

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a safe file name; else ``ClientError``."""
    if not _JOB_ID.match(job_id):
        raise ClientError(
            f"The job id {job_id[:60]!r} is not 1-128 letters, digits, '.', '_', '-'."
        )
    return job_id


def parse_signal(name: str) -> signal.Signals:
    """``TERM``, ``SIGTERM`` or ``15`` → ``signal.SIGTERM``; else ``ClientError``."""
    text = name.upper()
    try:
        return (
            signal.Signals(int(text))
            if text.isdigit()
            else signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        )
    except (KeyError, ValueError):
        raise ClientError(f"The signal {name[:20]!r} is not a signal name or number.") from None


def make_cgroup(configured_root: str, job_id: str) -> str:
    """Create the job's cgroup (v2) and return its path; "" where the system offers none."""
    roots = (configured_root,) if configured_root else _CGROUP_ROOTS
    for root in roots:
        if os.path.exists(os.path.join(root, "cgroup.procs")) and os.path.exists(
            os.path.join(root, "cgroup.controllers")
        ):
            path = os.path.join(root, "pilotage", job_id)
            try:
                os.makedirs(path, exist_ok=True)
            except OSError:
                return ""
            return path
    return ""


def join_cgroup(path: str, pid: int) -> bool:
    """Move ``pid`` into the cgroup at ``path``; False if the system refuses."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        return True
    except OSError:
        return False


def remove_cgroup(path: str) -> None:
    """Remove the job's cgroup once empty; a cgroup with processes left stays."""
    with contextlib.suppress(OSError):
        os.rmdir(path)


def record(directory: str, job_id: str, entry: dict[str, object]) -> None:
    """Write the job's registry entry (session, uid, cgroup) in ``directory``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f".{job_id}.{os.getpid()}")
    with open(temporary, "w") as f:
        json.dump(entry, f)
    os.replace(temporary, os.path.join(directory, job_id + ".json"))


def lookup(directory: str, job_id: str) -> dict[str, object]:
    """The registry entry of ``job_id``; ``ClientError`` if this node never started it."""
    try:
        with open(os.path.join(directory, job_id + ".json")) as f:
            entry: dict[str, object] = json.load(f)
            return entry
    except (OSError, ValueError):
        raise ClientError(f"No job {job_id} was started by pilotage-exec on this node.") from None


def members(entry: dict[str, object]) -> set[int]:
    """The pids of the family: the cgroup's processes and the session's, of the job's uid."""
    pids: set[int] = set()
    cgroup = entry.get("cgroup")
    if isinstance(cgroup, str) and cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                pids.update(int(line) for line in f if line.strip())
        except OSError:
            pass
    sid, pgid = entry.get("sid"), entry.get("pgid")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # Fields after the command: state, ppid, pgrp, session, ...; zombies are dead already.
        if fields[0] != b"Z" and (int(fields[3]) == sid or int(fields[2]) == pgid):
            pids.add(int(name))
    pids.discard(os.getpid())
    return pids


def signal_family(entry: dict[str, object], sig: signal.Signals) -> int:
    """Send ``sig`` to every member of the family; return how many were signalled.

    For SIGKILL, rescan until nothing is left (a family may be forking as it dies).
    """
    sent: set[int] = set()
    for _ in range(20 if sig == signal.SIGKILL else 1):
        pids = members(entry) - (sent if sig != signal.SIGKILL else set())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
                sent.add(pid)
            except (ProcessLookupError, PermissionError):
                continue
        if sig == signal.SIGKILL:
            time.sleep(0.01)
    return len(sent)
