"""Starting the payload: switch account (one way), new session, cgroup, ``exec``.

Without linger, the switch becomes the payload (``exec`` in place: same pid). With
linger, it forks the payload, waits for it, and reports its cpu time, wall time and peak
memory; signals sent to the switch are passed on to the payload's process group.

The status channel (``PILOTAGE_EXEC_STATUS_FD``): the caller passes the write end of a
pipe and reads one line: ``0 started <pid>`` once the payload's ``exec`` succeeded, or
``<code> <message>`` if it was refused or could not start. It is close-on-exec, so the
payload never holds it. The line is explicit, not mere end-of-file, because whatever sits
between the caller and the switch may keep its own copy of the descriptor open for the
whole job (sudo does; seed 000 §4.1 is that very bug); end-of-file without a line means
the switch died. Without linger, a short-lived watcher process, orphaned so that it is
never the payload's child, writes ``0 started`` when ``exec`` closes its pipe. Every
other descriptor above 2 is closed before ``exec``.
"""

from __future__ import annotations

import os
import time

from .refusals import CLIENT_ERROR, OWN_CODES, PAYLOAD_COLLISION, ClientError, Refusal, SiteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

#: Signals a lingering switch passes on to its payload (names of the ``signal`` module,
#: imported only then: its ``enum`` costs 1-2 ms at every start).
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCONT", "SIGALRM")


class Launch:
    """What to run, as whom, and where the job's family is tracked.

    ``nproc``: ``RLIMIT_NPROC`` where no cgroup limits the job (0: none).
    """

    def __init__(
        self, *, argv: list[str], env: dict[str, str], uid: int, gid: int, groups: list[int],
        switch_user: bool, cgroup: str, nproc: int,
    ) -> None:  # fmt: skip
        self.argv, self.env, self.uid, self.gid, self.groups = argv, env, uid, gid, groups
        self.switch_user, self.cgroup, self.nproc = switch_user, cgroup, nproc


class Outcome:
    """How a lingering payload ended, for the exit code and the audit record."""

    def __init__(self, *, pid: int, exit_code: int, cpu_user_s: float, cpu_sys_s: float,
                 wall_s: float, max_rss_kb: int) -> None:  # fmt: skip
        self.pid, self.exit_code, self.wall_s, self.max_rss_kb = pid, exit_code, wall_s, max_rss_kb
        self.cpu_user_s, self.cpu_sys_s = cpu_user_s, cpu_sys_s


def become(uid: int, gid: int, groups: list[int]) -> None:
    """Switch to ``uid``/``gid`` for good, and prove it cannot be undone."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise SiteError("The switch to the target account did not take effect.")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise SiteError("The switch to the target account could be undone; refusing to run.")


def _close_inherited() -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.close(fd)
            except OSError:
                continue


def _exec(launch: Launch) -> NoReturn:
    if launch.nproc > 0:
        import resource

        # Counts every process of the uid, not only this job's: the cgroup's pids.max is
        # the precise limit, this the fallback where the node offers none.
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]  # unprivileged: cannot raise it
        limit = launch.nproc if hard == resource.RLIM_INFINITY else min(launch.nproc, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    if launch.switch_user:
        become(launch.uid, launch.gid, launch.groups)
    _close_inherited()
    try:
        os.execve(launch.argv[0], launch.argv, launch.env)  # noqa: S606
    except OSError as exc:
        raise ClientError(
            f"The program {launch.argv[0]} cannot be executed ({exc.strerror})."
        ) from None


def _new_session() -> None:
    try:
        os.setsid()
    except PermissionError:  # already a process-group leader: the family is that group
        pass


def exec_in_place(launch: Launch, status_fd: int) -> NoReturn:
    """Non-linger: become the payload in this process (same pid)."""
    _new_session()
    if launch.cgroup:
        from .family import join_cgroup

        join_cgroup(launch.cgroup, os.getpid())
    watch_fd = _watch_exec(status_fd) if status_fd >= 0 else -1
    try:
        _exec(launch)
    except Refusal:
        if watch_fd >= 0:
            os.write(watch_fd, b"failed")  # the watcher stays silent; the caller reports
        raise


def _watch_exec(status_fd: int) -> int:
    """Start the watcher that says ``0 started`` when our ``exec`` closes the pipe it reads."""
    payload_pid = os.getpid()
    read_fd, write_fd = os.pipe()  # both close-on-exec
    watcher = os.fork()
    if watcher == 0:
        os.close(write_fd)
        if os.fork() != 0:
            os._exit(0)  # orphan the watcher: it must never be the payload's child
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # hold none of the caller's pipes
        said = os.read(read_fd, 64)
        if not said:
            os.write(status_fd, f"0 started {payload_pid}\n".encode())
        os._exit(0)
    os.close(read_fd)
    os.waitpid(watcher, 0)
    return write_fd


def child_exec(launch: Launch, report_fd: int, *, session: bool = True) -> NoReturn:
    """In a forked child: exec the payload, or write ``<code> <message>`` to ``report_fd``."""
    code = CLIENT_ERROR
    try:
        if session:
            _new_session()
        if launch.cgroup:
            from .family import join_cgroup

            join_cgroup(launch.cgroup, os.getpid())
        _exec(launch)
    except Refusal as exc:
        code = exc.exit_code
        os.write(report_fd, f"{code} {exc.message}".encode())
    except BaseException as exc:  # noqa: BLE001 - a child must never return into the caller
        code = 202
        os.write(report_fd, f"202 The payload could not be started ({exc}).".encode())
    os._exit(code)


def read_report(fd: int) -> None:
    """Wait for the child's ``exec``: EOF means it happened; a report becomes the refusal."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    if chunks:
        code, _, message = b"".join(chunks).decode(errors="replace").partition(" ")
        refusal = ClientError(message) if code == "201" else SiteError(message)
        raise refusal


def spawn(start: Callable[[int], NoReturn]) -> int:
    """Fork a child running ``start(report_fd)``; return its pid once it has exec'd.

    Linger: the caller then writes ``0 started <pid>`` on the status channel itself.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        start(write_fd)
    os.close(write_fd)
    try:
        read_report(read_fd)
    except Refusal:
        os.waitpid(pid, 0)
        raise
    return pid


def wait(pid: int, forward_to_group: bool, started: float) -> Outcome:
    """Wait for the lingering payload, passing signals on; its outcome."""
    import signal

    def forward(number: int, _frame: object) -> None:
        try:
            if forward_to_group:
                os.killpg(pid, number)
            else:
                os.kill(pid, number)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    _, status, usage = os.wait4(pid, 0)
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        code = PAYLOAD_COLLISION if code in OWN_CODES else code
    else:
        code = 128 + os.WTERMSIG(status)
    return Outcome(
        pid=pid,
        exit_code=code,
        cpu_user_s=round(usage.ru_utime, 3),
        cpu_sys_s=round(usage.ru_stime, 3),
        wall_s=round(time.monotonic() - started, 3),
        max_rss_kb=usage.ru_maxrss,
    )
