"""A job's process family: its own session and process group, plus a cgroup where possible.

A family is named by the caller's uid and ``PILOTAGE_EXEC_JOB_ID`` (the agent's claim id):
the registry entry is ``<state>/jobs/<caller uid>/<key>.marshal`` and the cgroup
``<cgroup root>/pilotage/<caller uid>/<key>``. Two pools on one node thus never share a
family, and a caller can only ever address its own. ``--signal SIG --job KEY`` finds every
process of the family (the cgroup's members, which cannot leave it by ``setsid``, and the
session's) and signals them after switching to the job's uid, so the kernel itself stops
it from touching any process of another account. A SIGKILL that leaves the family empty
ends it: usage read from the cgroup, cgroup and entry removed.

Entries are ``marshal`` data read through ``state.read_private`` (see ``state``); an entry
``<key>.json`` that an earlier switch wrote for a job still running is read too. Signals
are named through ``_signal``, the C half of ``signal``, which the interpreter loaded at
start: ``signal`` itself would import ``enum`` (1-2 ms), for names this module can find.
"""

from __future__ import annotations

import os
import time

from .refusals import ClientError

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_KEY_CHARS = _ALNUM | {".", "_", "-"}
_CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def check_key(key: str, what: str = "job id") -> str:
    """``key`` if it is a safe file name (1-128 of ``[A-Za-z0-9._-]``, the first
    alphanumeric); else ``ClientError``."""
    if not (0 < len(key) <= 128 and key[0] in _ALNUM and _KEY_CHARS.issuperset(key)):
        raise ClientError(f"The {what} {key[:60]!r} is not 1-128 letters, digits, '.', '_', '-'.")
    return key


def parse_signal(name: str) -> tuple[int, str]:
    """``TERM``, ``SIGTERM`` or ``15`` → ``(15, "SIGTERM")``; else ``ClientError``.

    As ``signal.Signals`` reads them: a number must have a name, and of two names for one
    number the first in alphabetical order is its name (``IOT`` gives ``SIGABRT``).
    """
    import _signal  # type: ignore[import-not-found]  # no stub: the C half of signal

    known = {
        n: v for n, v in vars(_signal).items()
        if n.isupper() and n.startswith("SIG") and not n.startswith("SIG_")
    }  # fmt: skip
    names: dict[int, str] = {}
    for known_name in sorted(known):
        names.setdefault(known[known_name], known_name)
    text = name.upper()
    if text.isdigit():
        number = int(text)
    else:
        number = known.get(text if text.startswith("SIG") else "SIG" + text, -1)
    if number not in names:
        raise ClientError(f"The signal {name[:20]!r} is not a signal name or number.")
    return number, names[number]


def make_cgroup(configured_root: str, caller_uid: int, key: str, pids_max: int) -> tuple[str, bool]:
    """Create the family's cgroup (v2): its path ("" if none) and whether ``pids.max`` is set."""
    for root in (configured_root,) if configured_root else _CGROUP_ROOTS:
        if not os.path.exists(os.path.join(root, "cgroup.controllers")):
            continue
        path = os.path.join(root, "pilotage", str(caller_uid), key)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return "", False
        if pids_max <= 0:
            return path, False
        # Delegate the pids controller down to the family where the kernel offers it.
        for parent in (root, os.path.dirname(os.path.dirname(path)), os.path.dirname(path)):
            _write(os.path.join(parent, "cgroup.subtree_control"), "+pids")
        return path, _write(os.path.join(path, "pids.max"), str(pids_max))
    return "", False


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def join_cgroup(path: str, pid: int) -> bool:
    """Move ``pid`` into the cgroup at ``path``; False if the system refuses."""
    return _write(os.path.join(path, "cgroup.procs"), str(pid))


def usage(path: str) -> dict[str, float]:
    """The cgroup's cpu time (``cpu.stat``) and peak memory (``memory.peak``), where known."""
    found: dict[str, float] = {}
    try:
        with open(os.path.join(path, "cpu.stat")) as f:
            stats = {name: int(value) for name, value in (line.split() for line in f)}
        found.update(cpu_user_s=stats["user_usec"] / 1e6, cpu_sys_s=stats["system_usec"] / 1e6)
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(os.path.join(path, "memory.peak")) as f:
            found["max_rss_kb"] = int(f.read()) // 1024
    except (OSError, ValueError):
        pass
    return found


def remove_cgroup(path: str) -> None:
    """Remove the family's cgroup once empty (and its caller's, if that is empty too)."""
    try:
        os.rmdir(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def _entry_path(directory: str, caller_uid: int, key: str, suffix: str = ".marshal") -> str:
    return os.path.join(directory, str(caller_uid), key + suffix)


def record(directory: str, caller_uid: int, key: str, entry: dict[str, object]) -> None:
    """Write the family's registry entry (session, uid, cgroup, start time); ``OSError``
    if it cannot be written."""
    from .state import write_private

    path = _entry_path(directory, caller_uid, key)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_private(path, entry)


def lookup(directory: str, caller_uid: int, key: str) -> dict[str, object]:
    """The caller's registry entry for ``key``; ``ClientError`` if it started no such job."""
    from .state import read_private

    entry = read_private(_entry_path(directory, caller_uid, key))
    if entry is None:  # perhaps an entry an earlier switch wrote
        import json

        try:
            with open(_entry_path(directory, caller_uid, key, ".json"), "rb") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            pass
    if not isinstance(entry, dict):
        raise ClientError(f"No job {key} was started by pilotage-exec on this node.")
    return entry


def forget(directory: str, caller_uid: int, key: str) -> None:
    """Remove the family's registry entry."""
    for suffix in (".marshal", ".json"):
        try:
            os.unlink(_entry_path(directory, caller_uid, key, suffix))
        except OSError:
            pass


def members(entry: dict[str, object]) -> set[int]:
    """The live pids of the family: the cgroup's processes and the session's."""
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
        try:  # os.open and os.read: three system calls a process, where open() makes seven
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
            try:
                fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
            finally:
                os.close(fd)
        except (OSError, IndexError):
            continue
        # Fields after the command: state, ppid, pgrp, session, ...; zombies are dead already.
        if fields[0] != b"Z" and (int(fields[3]) == sid or int(fields[2]) == pgid):
            pids.add(int(name))
    pids.discard(os.getpid())
    return pids


def signal_family(entry: dict[str, object], sig: int) -> tuple[int, bool]:
    """Send ``sig`` to every member of the family: how many were signalled, and whether
    any member is left (for a SIGKILL; always True for another signal).

    For SIGKILL, rescan until nothing is left (a family may be forking as it dies). The
    session's leader goes first: were a child of it signalled first, the leader could reap
    it and exit on its own with status 0 before its own signal came.
    """
    kill = 9  # SIGKILL on every Unix
    sent: set[int] = set()
    leaders = (entry.get("sid"), entry.get("pgid"))
    for _ in range(50 if sig == kill else 1):
        pids = members(entry) - (sent if sig != kill else set())
        if not pids:
            return len(sent), sig != kill
        for pid in sorted(pids, key=lambda pid: pid not in leaders):
            try:
                os.kill(pid, sig)
                sent.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == kill:
            time.sleep(0.01)
    return len(sent), True


def end(directory: str, caller_uid: int, key: str, entry: dict[str, object]) -> dict[str, object]:
    """Close an empty family: its usage, then its cgroup and entry removed.

    A lingering run already recorded its usage in its ``exit`` record (``accounted``), so
    its end carries none: the accounting counts every job once.
    """
    cgroup = entry.get("cgroup")
    found: dict[str, object] = {}
    if not entry.get("accounted"):
        if isinstance(cgroup, str) and cgroup:
            found.update(usage(cgroup))
        started = entry.get("started")
        if isinstance(started, int | float):
            found["wall_s"] = round(time.time() - started, 3)
    if isinstance(cgroup, str) and cgroup:
        remove_cgroup(cgroup)
    forget(directory, caller_uid, key)
    return found
