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
  With ``"stream"`` (``stream_output``) it first starts the *output reader*, below.
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

The output reader (``run`` with ``"stream": {"names": [...], "every_s": S, "max_piece":
N}``): the pilot cannot read a switched job's stdout, which is its owner's file, so a
process of the wrapper's, as the owner, reads what the named files gained every ``S``
seconds and sends it to the agent on the socket, after the ``R``, as frames
(:data:`FRAME`: kind, the name's index, offset, length, then the bytes): a piece
(:data:`PIECE`, at most ``N`` bytes: the last ``N`` when more was written) or a note
(:data:`NOTE`, a sentence for the agent's log). It reads only names the request also
gives as ``stdout`` or ``stderr``, inside ``dir``, each part opened with ``O_NOFOLLOW``,
and only a regular file of this account with no other link: a job that puts a link
there (to another account's file, or to its credential copy) gets a note and that
name is read no more. It never holds up the job: it is forked twice so it is never
the job's child, it sends without blocking and drops what the agent is not ready
for (the next piece carries the newer end), and it ends with the job (a pidfd),
sending the last pieces then, or at once when the agent has gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import stat
import struct
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
    if request.get("stream"):
        start_reader(request)
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


# -- the output reader ----------------------------------------------------------------------

#: A frame after the ``R``: kind, index of the name in the request, offset, length.
FRAME = struct.Struct(">cBQI")
PIECE = b"p"
NOTE = b"n"
MAX_NOTE = 1000
#: How long the last pieces may wait for the agent once the job has ended.
FINAL_S = 10.0
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotOurs(Exception):
    """A streamed name is not the job's own regular file; the sentence says why."""


def _note(index: int, text: str) -> bytes:
    data = text.encode(errors="replace")[:MAX_NOTE]
    return FRAME.pack(NOTE, index, 0, len(data)) + data


def _reader_names(request: dict[str, Any]) -> list[str]:
    """The names to read: those given as the job's stdout or stderr, plain and inside."""
    own = {request.get("stdout"), request.get("stderr")}
    names = [str(n) for n in request["stream"].get("names", [])][:4]
    for name in names:
        parts = name.split("/")
        if name not in own or name.startswith("/") or {"", ".", ".."} & set(parts):
            raise Failed(f"the wrapper streams only the job's own output files, not {name!r}")
    return names


def open_output(top: int, name: str) -> int | None:
    """Open ``name`` below the directory ``top`` for reading, following no link; None
    while it does not exist. :class:`NotOurs` unless it is a regular file of this
    account with one link (a hard link could name another file of the account)."""
    parts = name.split("/")
    here = top
    try:
        for part in parts[:-1]:
            below = os.open(part, _DIR_FLAGS, dir_fd=here)
            if here != top:
                os.close(here)
            here = below
        fd = os.open(parts[-1], _READ_FLAGS, dir_fd=here)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotOurs("is a symbolic link, which is not followed") from None
        if exc.errno == errno.ENOTDIR:
            raise NotOurs("has a part that is not a directory (links are not followed)") from None
        raise NotOurs(f"cannot be opened ({_strerror(exc)})") from None
    finally:
        if here != top:
            os.close(here)
    st = os.fstat(fd)
    why = (
        "is not a regular file" if not stat.S_ISREG(st.st_mode)
        else f"belongs to uid {st.st_uid}, not to the job's" if st.st_uid != os.getuid()
        else "has another link" if st.st_nlink != 1
        else ""
    )  # fmt: skip
    if why:
        os.close(fd)
        raise NotOurs(why)
    return fd


class Reader:
    """What the named files gained, as frames for the agent (the caller sends them)."""

    def __init__(self, top: int, names: list[str], max_piece: int) -> None:
        self.top = top
        self.names = names
        self.max_piece = max_piece
        self.sent = [0] * len(names)  # bytes of each file up to which frames were made
        self.dropped: set[int] = set()

    def frames(self) -> bytes:
        """One frame per name that gained something, or a note for one no longer read."""
        out = []
        for index, name in enumerate(self.names):
            if index in self.dropped:
                continue
            try:
                fd = open_output(self.top, name)
            except NotOurs as exc:
                self.dropped.add(index)
                out.append(_note(index, f"{name} {exc}: it is no longer streamed"))
                continue
            if fd is None:
                continue
            try:
                size = os.fstat(fd).st_size
                sent = self.sent[index] if self.sent[index] <= size else 0  # truncated
                start = max(sent, size - self.max_piece)
                data = os.pread(fd, min(self.max_piece, size - start), start)
            finally:
                os.close(fd)
            if data:
                out.append(FRAME.pack(PIECE, index, start, len(data)) + data)
                self.sent[index] = start + len(data)
        return b"".join(out)


def start_reader(request: dict[str, Any]) -> None:
    """Start the output reader, orphaned so it is never the job's child (a job that
    waits for all its children must not wait for it). Before the job's stdio replaces
    the socket on 0."""
    names = _reader_names(request)
    spec = request["stream"]
    every_s = min(max(float(spec.get("every_s", 2.0)), 0.2), 60.0)
    max_piece = min(max(int(spec.get("max_piece", 65536)), 1024), 1 << 20)
    job = os.getpid()  # the wrapper's pid is the job's, once it exec's
    kept: list[int] = []
    try:
        kept.append(os.dup(0))
        kept.append(os.open(".", _DIR_FLAGS))
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: polled by pid
            kept.append(os.pidfd_open(job))
        middle = os.fork()
        if middle == 0:
            try:
                if os.fork() == 0:
                    _serve_reader(kept, job, names, every_s, max_piece)
            finally:
                os._exit(0)
        os.waitpid(middle, 0)
    except OSError as exc:  # no reader, the job runs all the same
        with contextlib.suppress(OSError):
            os.write(0, _note(0, f"the job's output is not streamed ({_strerror(exc)})"))
    finally:
        for fd in kept:
            os.close(fd)


def _serve_reader(
    kept: list[int], job: int, names: list[str], every_s: float, max_piece: int
) -> NoReturn:
    """The reader's life: never returns into the wrapper."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        # Nothing of the wrapper's: above all not the status pipe, whose end-of-file
        # tells the agent the job started.
        for name in os.listdir("/proc/self/fd"):
            if int(name) > 2 and int(name) not in kept:
                with contextlib.suppress(OSError):
                    os.close(int(name))
        channel = socket.socket(fileno=kept[0])
        pidfd = kept[2] if len(kept) > 2 else -1
        _read_until_end(channel, Reader(kept[1], names, max_piece), job, pidfd, every_s)
    finally:
        os._exit(0)


def _read_until_end(
    channel: socket.socket, reader: Reader, job: int, pidfd: int, every_s: float
) -> None:
    channel.setblocking(False)
    poller = select.poll()
    poller.register(channel.fileno(), 0)  # hang-up and errors only: the agent is gone
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)  # readable once the job has exited
    pending = b""
    while True:
        events = dict(poller.poll(every_s * 1000))
        if events.get(channel.fileno()):
            return
        ended = pidfd in events if pidfd >= 0 else not _alive(job)
        if ended:
            channel.settimeout(FINAL_S)  # nothing waits on this process but the agent
            with contextlib.suppress(OSError):
                channel.sendall(pending + reader.frames())
            return
        try:
            if not pending:
                pending = reader.frames()
            if pending:
                pending = pending[channel.send(pending) :]
        except BlockingIOError:
            continue  # the agent is busy: what the job writes meanwhile waits or is skipped
        except OSError:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
