"""The job wrapper: what runs as the job's owner, through the switch, for every action.

The agent writes this file into its work directory and runs it through the switch as
``python3 -I -S <this file>``: nothing else is on the command line, so nothing of a job
(its environment, its stdio, its file names) shows in ``ps``, in the switch's audit
``command`` or in syslog (seed 000 §3.1; issue 9). It is a script of the standard library
alone and imports nothing of pilotage: the target account runs it with an isolated
interpreter.

Its standard input is one end of a Unix socket pair. The agent sends one JSON request and
closes its end; with the request's first bytes come descriptors (``SCM_RIGHTS``): first
the write end of an *exec-status* pipe that only this process holds, then any stream the
request names as ``{"fd": N}``. The wrapper answers ``R`` on the socket once it has the
request (so the agent can tell "never started" from "started"), marks the status pipe
close-on-exec, and then:

- ``run``: opens the job's stdin, stdout and stderr as the owner in ``dir`` (names
  relative to it, ``"&1"`` for stderr into stdout, ``null`` for ``/dev/null``, or a passed
  descriptor), sets the environment (the switch's, updated by the request's), restores the
  signals Python ignores, and ``exec``s ``argv``. With ``"tty": true`` (an exec-in-job
  session with a terminal) its standard input, a terminal, becomes its controlling one.
  End-of-file on the status pipe means the ``exec`` happened; otherwise one line says
  what failed, and the wrapper exits 127. The switch and sudo keep copies of the socket,
  never of the status pipe, so this works with and without linger (seed 000 §4.1).
- ``collect``: writes a tar stream of the job's outputs to a passed descriptor: the listed
  names (recursively), or every regular file at the top of ``dir`` plus the named streams.
  Symbolic links are stored as links, never followed; unreadable or missing files are
  skipped (the agent reports a missing listed output itself).
- ``clean``: empties ``dir`` whatever modes the job left (it restores ``u+rwx`` on each
  directory before listing it, descends through descriptors, never follows a link, and
  moves too-deep subtrees up instead of holding a descriptor per level), and truncates the
  owner's credential copies named in ``credentials``, so no link the job made to them
  keeps the credential. The agent, which owns the parent directories, then removes the
  emptied names.

Any failure of ``collect`` or ``clean`` is one line on the status pipe and exit code 1.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import sys
import tarfile
from typing import Any, NoReturn

VERSION = 1
#: Exit code when the job could not be started (as a shell's "command not found").
CANNOT_START = 127
ACK = b"R"
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: Directories deeper than this below ``dir`` are moved up to ``dir`` before removal.
MAX_DEPTH = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Failed(Exception):
    """A step failed; the sentence goes to the status pipe."""


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Read the request until the agent closes its end; the request and the descriptors."""
    data = b""
    fds: list[int] = []
    while True:
        chunk, got, _flags, _addr = socket.recv_fds(sock, 65536, 8)
        for fd in got:
            os.set_inheritable(fd, False)
        fds.extend(got)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise Failed("the wrapper's request is too large")
    try:
        request = json.loads(data)
    except ValueError as exc:
        raise Failed(f"the wrapper's request is not JSON ({exc})") from None
    if not isinstance(request, dict) or request.get("v") != VERSION:
        raise Failed(f"the wrapper's request is not of version {VERSION}")
    return request, fds


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _stream(spec: Any, fds: list[int], write: bool) -> int:
    """Open one stdio stream as the owner, in the current directory."""
    if spec is None:
        return os.open(os.devnull, os.O_WRONLY if write else os.O_RDONLY)
    if isinstance(spec, dict):
        return os.dup(fds[int(spec["fd"])])
    name = str(spec)
    try:
        if not write:
            return os.open(name, os.O_RDONLY)
        parent = os.path.dirname(name)
        if parent:
            os.makedirs(parent, 0o700, exist_ok=True)
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except OSError as exc:
        what = "output" if write else "input"
        reason = _strerror(exc)
        raise Failed(f"the job's {what} file {name!r} cannot be opened ({reason})") from None


def run(request: dict[str, Any], fds: list[int], status: int) -> NoReturn:
    """Set up the stdio and environment, then become the job."""
    argv = [str(a) for a in request["argv"]]
    try:
        os.chdir(request["dir"])
    except OSError as exc:
        raise Failed(f"the job's directory cannot be entered ({_strerror(exc)})") from None
    if request.get("umask") is not None:
        os.umask(int(request["umask"]))
    stdin = _stream(request.get("stdin"), fds, write=False)
    stdout = _stream(request.get("stdout"), fds, write=True)
    err = request.get("stderr")
    stderr = os.dup(stdout) if err == "&1" else _stream(err, fds, write=True)
    # Invariant: from here on, 0, 1 and 2 are the job's; the socket is gone from 0.
    for target, fd in enumerate((stdin, stdout, stderr)):
        os.dup2(fd, target)
        os.close(fd)
    for fd in fds[1:]:
        os.close(fd)
    if request.get("tty"):
        _controlling_tty()
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in request.get("env", {}).items()})
    # Python ignores these; an ignored signal stays ignored across exec.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 - the job's own argv, no shell
    except OSError as exc:
        raise Failed(f"the job {argv[0]!r} could not be started ({_strerror(exc)})") from None


def _controlling_tty() -> None:
    """Make the terminal on standard input this session's controlling terminal (the
    process leads a new session: the switch's child, or the agent's with ``setsid``)."""
    import fcntl
    import termios

    try:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    except OSError as exc:
        raise Failed(f"the session's terminal cannot be attached ({_strerror(exc)})") from None


# -- collect ------------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str) -> None:
    """Add ``name`` (recursively, links as links); skip what cannot be read."""
    try:
        st = os.lstat(name)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        tar.add(name, recursive=False)
        try:
            children = sorted(os.listdir(name))
        except OSError:
            return
        for child in children:
            _add(tar, os.path.join(name, child))
    elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        try:
            tar.add(name, recursive=False)
        except OSError:
            return


def collect(request: dict[str, Any], fds: list[int]) -> None:
    """Write the outputs as a tar stream to the passed descriptor."""
    try:
        os.chdir(request["dir"])
    except OSError as exc:
        raise Failed(f"the job's directory cannot be entered ({_strerror(exc)})") from None
    names: list[str] = [str(n) for n in request.get("names", [])]
    if request.get("top"):
        with os.scandir(".") as entries:
            names += [e.name for e in entries if e.is_file(follow_symlinks=False)]
    out = os.fdopen(os.dup(fds[int(request["stdout"]["fd"])]), "wb")
    with out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(set(names)):
            _add(tar, name)


# -- clean --------------------------------------------------------------------------------


def _open_dir(parent: int | None, name: str) -> int:
    """Open a directory of ours without following links, giving ourselves u+rwx first."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        # Safe to follow here: ``name`` was just seen as a directory in a directory that
        # only this account (the job's owner) can change, and chmod acts as that account.
        os.chmod(name, 0o700, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    with contextlib.suppress(PermissionError):  # not ours: its entries may still go
        os.fchmod(fd, 0o700)
    return fd


class _Purge:
    """Empty one directory tree; too-deep subtrees are moved to the top and taken later."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.moved = 0
        self.errors: list[str] = []

    def entry(self, parent: int, name: str, depth: int) -> None:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)
                return
            if depth > MAX_DEPTH:
                self.moved += 1
                fresh = f".pilotage-deep-{os.getpid()}-{self.moved}"
                os.rename(name, fresh, src_dir_fd=parent, dst_dir_fd=self.top)
                return
            fd = _open_dir(parent, name)
            try:
                for child in os.listdir(fd):
                    self.entry(fd, child, depth + 1)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            self.errors.append(f"{name}: {_strerror(exc)}")

    def run(self) -> None:
        """Repeat passes over the top until it is empty or a pass makes no progress."""
        while True:
            names = os.listdir(self.top)
            if not names:
                return
            self.errors = []
            for name in names:
                self.entry(self.top, name, 1)
            if self.errors and sorted(os.listdir(self.top)) == sorted(names):
                raise Failed(f"the job's directory cannot be emptied ({self.errors[0]})")


def _truncate(path: str) -> None:
    """Empty a credential copy of ours, whatever mode the job gave it (all its links too)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        return  # not our copy: never touch it
    if not st.st_mode & stat.S_IWUSR:
        os.chmod(path, 0o600)  # the parent is the pilot's: the name cannot be swapped
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def clean(request: dict[str, Any]) -> None:
    """Truncate the credential copies, then empty the job's directory."""
    for path in request.get("credentials", []):
        try:
            _truncate(str(path))
        except OSError as exc:
            reason = _strerror(exc)
            raise Failed(f"the credential copy {path} cannot be emptied ({reason})") from None
    try:
        top = _open_dir(None, str(request["dir"]))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise Failed(f"the job's directory cannot be opened ({_strerror(exc)})") from None
    try:
        _Purge(top).run()
    finally:
        os.close(top)


# -- the entry point ----------------------------------------------------------------------


def _say(status: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(status, message.replace("\n", " ").encode(errors="replace")[:4000] + b"\n")


def main() -> int:
    """Serve one request from the socket on standard input."""
    sock = socket.socket(fileno=os.dup(0))
    try:
        request, fds = receive(sock)
    except (Failed, OSError) as exc:
        sys.stderr.write(f"pilotage wrapper: {exc}\n")
        return CANNOT_START
    if not fds:
        sys.stderr.write("pilotage wrapper: no status pipe came with the request\n")
        return CANNOT_START
    status = fds[0]
    with contextlib.suppress(OSError):
        sock.sendall(ACK)
    sock.close()
    action = request.get("action")
    try:
        if action == "run":
            run(request, fds, status)
        elif action == "collect":
            collect(request, fds)
        elif action == "clean":
            clean(request)
        else:
            raise Failed(f"the wrapper has no action {action!r}")
    except Failed as exc:
        _say(status, str(exc))
        return CANNOT_START if action == "run" else 1
    except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            _say(status, "the agent stopped reading")
        else:
            _say(status, f"the wrapper's {action} failed ({exc})")
        return CANNOT_START if action == "run" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
