"""``pilotage-exec --enter --job KEY -- COMMAND...``: run a command inside a running job.

The node's half of ``pilotage exec-in-job`` and ``ssh-to-job`` (seed 000 §4.9: under
gLExec, ``condor_ssh_to_job`` entered the job as the pilot's uid, not as its owner). The
user credential is authenticated, authorized and mapped again exactly as for a run
(``main._serve``); then, one check per line, each refusal its own sentence (exit 201):

- the status channel is open: it is the session's lifeline (below);
- the switch is not in namespace mode (a job's namespaces are not joined);
- ``KEY`` names a family the *caller* started on this node (its own registry only);
- that family runs as the account the credential maps to now;
- the family still has a live process: an ended job has nothing to enter.

The command then runs as that account, in a session of its own, inside the family's
cgroup where it has one (so it counts in the job's ``pids.max``, is signalled with the
job and dies with it), with the environment built as for a run and the user's existing
credential copy named as for the job. The switch lingers: it reports ``0 started <pid>``
and keeps the status channel open. When the caller closes its read end (the session is
over, the job has ended, or the agent died), or when the command exits, the switch kills
every process left in the command's session, as its account, then exits with the
command's status. Audit: ``enter`` at the start and ``leave`` at the end (exit, usage,
``cut`` when the caller ended it); ``--accounting`` counts neither, since the job's own
records already count its family.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import delivery, environment, family, launch
from .access import check_program, resolve
from .config import Config
from .refusals import OWN_CODES, PAYLOAD_COLLISION, ClientError

Record = Callable[[dict[str, Any]], None]


def enter(
    command: list[str], key: str, config: Config, account: pwd.struct_passwd, credential_kind: str,
    caller_uid: int, caller_env: Mapping[str, str], jobs: str, target_dir: str, status_fd: int,
    audit: dict[str, Any], record: Record,
) -> int:  # fmt: skip
    """Check the request, run ``command`` in the family ``key``; its exit status."""
    if status_fd < 0:
        raise ClientError("--enter needs PILOTAGE_EXEC_STATUS_FD: the session lasts while the "
                          "caller holds its read end open.")  # fmt: skip
    if config.mode == "namespace":
        raise ClientError("--enter is not available in namespace mode: a job's namespaces "
                          "are not joined.")  # fmt: skip
    family.check_key(key)
    entry = family.lookup(jobs, caller_uid, key)  # only the caller's own families
    if entry.get("uid") != account.pw_uid:
        raise ClientError(f"The job {key} does not run as {account.pw_name}.")
    if not family.members(entry):
        raise ClientError(f"The job {key} has no live process left; there is nothing to enter.")
    program = resolve(command[0], config.search_path)
    gids = os.getgrouplist(account.pw_name, account.pw_gid)
    check_program(program, account.pw_name, account.pw_uid, frozenset(gids))
    env = environment.build(
        caller_env, config.env_allow, search_path=config.search_path, account=account.pw_name,
        home=account.pw_dir, shell=account.pw_shell,
        credential=_credential(target_dir, credential_kind, caller_uid, account.pw_uid),
    )  # fmt: skip
    cgroup = entry.get("cgroup")
    cgroup = cgroup if isinstance(cgroup, str) and os.path.isdir(cgroup) else ""
    plan = launch.Launch(
        argv=[program, *command[1:]], env=env, uid=account.pw_uid, gid=account.pw_gid,
        groups=gids, switch_user=os.geteuid() == 0, cgroup=cgroup,
        nproc=0 if _pids_limited(cgroup) else config.pids_max,
    )  # fmt: skip
    started = time.monotonic()
    pid = launch.spawn(lambda fd: launch.child_exec(plan, fd))
    audit.update(event="enter", pid=pid, job=entry.get("name") or key, family=key,
                 cgroup=cgroup or None)  # fmt: skip
    record(dict(audit))
    with contextlib.suppress(OSError):
        os.write(status_fd, f"0 started {pid}\n".encode())
    cut, status, usage = _watch(pid, status_fd, account)
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        code = PAYLOAD_COLLISION if code in OWN_CODES else code
    else:
        code = 128 + os.WTERMSIG(status)
    audit.update(event="leave", exit=code, cut=cut or None, cpu_user_s=round(usage.ru_utime, 3),
                 cpu_sys_s=round(usage.ru_stime, 3), wall_s=round(time.monotonic() - started, 3),
                 max_rss_kb=usage.ru_maxrss)  # fmt: skip
    record(audit)
    return code


def _credential(target_dir: str, kind: str, caller_uid: int, uid: int) -> tuple[str, str] | None:
    """The variable and path of the user's existing copy in ``target_dir``, if any.

    Nothing is written: the session sees the copy the job sees, checked as for a refresh.
    """
    if not target_dir:
        return None
    dir_fd = delivery.open_target_dir(target_dir, caller_uid, (caller_uid, uid))
    try:
        if delivery.existing_copy(dir_fd, kind, uid) is None:
            return None
    finally:
        os.close(dir_fd)
    name, variable = delivery.NAMES[kind]
    return variable, os.path.join(target_dir, name)


def _pids_limited(cgroup: str) -> bool:
    """Whether the family's cgroup has a ``pids.max`` (then no RLIMIT_NPROC is needed)."""
    if not cgroup:
        return False
    try:
        with open(os.path.join(cgroup, "pids.max")) as f:
            return f.read().strip() != "max"
    except OSError:
        return False


def _watch(pid: int, status_fd: int, account: pwd.struct_passwd) -> tuple[bool, int, Any]:
    """Wait until the command exits or the caller closes the status channel's read end;
    kill what is left of the command's session; reap it. (cut, wait status, usage)."""

    def forward(number: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, number)

    for name in launch.FORWARDED:
        signal.signal(getattr(signal, name), forward)
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(status_fd, 0)  # a pipe's write end: POLLERR once no reader is left
    cut = False
    try:
        while True:
            ready = dict(poller.poll())
            if pidfd in ready:
                break
            if ready.get(status_fd, 0) & (select.POLLERR | select.POLLHUP):
                cut = True
                break
    finally:
        os.close(pidfd)
    # Invariant: ``pid`` is not reaped yet, so its session id names this session only.
    _kill_session(pid, account)
    _, status, usage = os.wait4(pid, 0)
    return cut, status, usage


def _kill_session(sid: int, account: pwd.struct_passwd) -> None:
    """SIGKILL every process of the session ``sid``, from a child running as ``account``:
    the kernel itself then refuses any process of another account."""
    child = os.fork()
    if child == 0:
        try:
            if os.geteuid() == 0:
                launch.become(account.pw_uid, account.pw_gid, [account.pw_gid])
            family.signal_family({"sid": sid, "pgid": sid}, signal.SIGKILL.value)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
