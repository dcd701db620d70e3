"""The job wrapper's output reader (``stream_output`` through the switch): what it sends
of a growing file, and each file it refuses to read (pilot/wrapper.py)."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilotage.pilot.resources import Resources
from pilotage.pilot.streaming import MAX_PIECE, WrapperStream
from pilotage.pilot.wire import Claim
from pilotage.pilot.wrapper import FRAME, NOTE, PIECE, Failed, Reader, _reader_names


def frames(data: bytes) -> list[tuple[bytes, int, int, bytes]]:
    """The frames in ``data``: kind, index, offset, bytes."""
    out = []
    while data:
        kind, index, offset, size = FRAME.unpack_from(data)
        body = data[FRAME.size : FRAME.size + size]
        out.append((kind, index, offset, body))
        data = data[FRAME.size + size :]
    return out


@pytest.fixture
def top(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_pieces_follow_the_file(tmp_path: Path, top: int) -> None:
    reader = Reader(top, ["logs/out.txt"], max_piece=1024)
    assert reader.frames() == b""  # not there yet: nothing, no note
    (tmp_path / "logs").mkdir()
    out = tmp_path / "logs" / "out.txt"
    out.write_bytes(b"one\n")
    assert frames(reader.frames()) == [(PIECE, 0, 0, b"one\n")]
    assert reader.frames() == b""
    with out.open("ab") as more:
        more.write(b"two\n" + b"x" * 2000)
    assert frames(reader.frames()) == [(PIECE, 0, 2008 - 1024, b"x" * 1024)]  # the end
    out.write_bytes(b"new\n")  # truncated by the job: from the start again
    assert frames(reader.frames()) == [(PIECE, 0, 0, b"new\n")]


def _symlink(job: Path) -> None:
    (job / "out.txt").symlink_to("/etc/passwd")


def _fifo(job: Path) -> None:
    os.mkfifo(job / "out.txt")


def _hard_link(job: Path) -> None:
    (job / "elsewhere").write_text("the account's other file\n")
    os.link(job / "elsewhere", job / "out.txt")


def _linked_part(job: Path) -> None:
    (job / "real").mkdir()
    (job / "real" / "out.txt").write_text("behind a link\n")
    (job / "logs").symlink_to("real")


PLANTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "symlink": (_symlink, "is a symbolic link, which is not followed"),
    "fifo": (_fifo, "is not a regular file"),
    "hard link": (_hard_link, "has another link"),
    "linked directory": (
        _linked_part,
        "has a part that is not a directory (links are not followed)",
    ),
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_what_is_not_the_jobs_own_file_is_refused_once(tmp_path: Path, top: int, kind: str) -> None:
    plant, why = PLANTED[kind]
    name = "logs/out.txt" if kind == "linked directory" else "out.txt"
    plant(tmp_path)
    reader = Reader(top, ["err.txt", name], max_piece=1024)
    (tmp_path / "err.txt").write_text("mine\n")
    got = frames(reader.frames())
    assert got == [
        (PIECE, 0, 0, b"mine\n"),
        (NOTE, 1, 0, f"{name} {why}: it is no longer streamed".encode()),
    ]
    assert reader.frames() == b""  # the other name read no more, the note said once


def test_another_accounts_file_is_refused(
    tmp_path: Path, top: int, require_service: Callable[[str, str], NoReturn]
) -> None:
    if os.geteuid() != 0:
        require_service("root", "giving a file to another account needs root")
    (tmp_path / "out.txt").write_text("not the job's\n")
    os.chown(tmp_path / "out.txt", 65534, 65534)
    (note,) = frames(Reader(top, ["out.txt"], max_piece=1024).frames())
    assert note[3] == b"out.txt belongs to uid 65534, not to the job's: it is no longer streamed"


@pytest.mark.parametrize("name", ["other.txt", "../out.txt", "/tmp/out.txt", "./out.txt"])
def test_only_the_jobs_output_names_are_read(name: str) -> None:
    request = {"stdout": name if name != "other.txt" else "out.txt", "stderr": None,
               "stream": {"names": [name]}}  # fmt: skip
    with pytest.raises(Failed, match=r"streams only the job's own output files, not"):
        _reader_names(request)


# -- the agent's side: the frames it takes from the wrapper's socket ----------------------


class Recorder:
    """Takes the agent's uploads as the server would, recording each."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes]] = []

    def put_file(self, path: str, file: io.BytesIO, size: int, content_type: str) -> None:
        self.puts.append((path, file.read(size)))

    def close(self) -> None:
        pass


CLAIM = Claim(
    claim_id="c-test", job_id="7.3", lease_s=300.0, lease_expires_at=0.0, owner="alice",
    executable="/bin/sh", arguments=(), environment={}, input=None, output="out.txt",
    error=None, transfer_output_files=(), request=Resources(cpus=1, memory_mb=64),
    has_input_sandbox=False, stream_output=True,
)  # fmt: skip

BAD = {
    "kind": (FRAME.pack(b"x", 0, 0, 1) + b"z", "a frame of kind b'x' and 1 bytes"),
    "size": (FRAME.pack(PIECE, 0, 0, MAX_PIECE + 1), f"of kind b'p' and {MAX_PIECE + 1} bytes"),
    "cut": (FRAME.pack(PIECE, 0, 9, 5) + b"ab", "the wrapper's socket ended inside a frame"),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_the_agent_uploads_pieces_logs_notes_and_stops_at_a_bad_frame(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    ours, theirs = socket.socketpair()
    recorder = Recorder()
    stream = WrapperStream(recorder, CLAIM, ours, list).start()
    data, why = BAD[bad]
    with theirs:
        theirs.sendall(
            FRAME.pack(PIECE, 0, 0, 4) + b"one\n"
            + FRAME.pack(NOTE, 0, 0, 11) + b"a sentence\n"
            + data + (b"" if bad == "cut" else FRAME.pack(PIECE, 0, 4, 4) + b"two\n")
        )  # fmt: skip
    stream.close(wait_s=60)  # the thread has ended at the bad frame: nothing after it sent
    assert recorder.puts == [("/pilot/v1/claims/c-test/stdout?offset=0", b"one\n")]
    logged = [r.getMessage() for r in caplog.records]
    assert "claim c-test job 7.3: a sentence " in logged
    assert any("no longer streamed" in m and why in m for m in logged), logged
