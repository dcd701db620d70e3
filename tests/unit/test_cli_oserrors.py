"""The ``pilotage`` command on a full or read-only disk: one sentence naming the path,
the cause and what to do; exit 75 (full: try again) or 77 (not permitted), never 70 and
never a traceback. Real tmpfs mounts (root only; required under CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pilotage.cli.oserrors import describe


@contextmanager
def _tmpfs(where: Path, *options: str) -> Iterator[Path]:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(where)],
        check=True,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _init(state: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PILOTAGE_STATE_DIR=str(state))
    return subprocess.run(
        [sys.executable, "-m", "pilotage.cli", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_on_a_full_disk_says_so_and_exits_75(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk") as disk:
        filler = disk / "filler"
        with filler.open("wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        done = _init(disk / "state")
        assert done.returncode == 75, done.stderr
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        assert f"cannot write {disk / 'state'}" in done.stderr
        assert "No space left on device" in done.stderr
        assert "free some space" in done.stderr and "try again" in done.stderr
        # Space freed: trying again works.
        filler.unlink()
        again = _init(disk / "state")
        assert again.returncode == 0, again.stderr


def test_init_on_a_read_only_disk_says_so_and_exits_77(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "ro") as disk:
        done = _init(disk / "state")
    assert done.returncode == 77, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert f"{disk / 'state'}" in done.stderr and "Read-only file system" in done.stderr
    assert "writable file system" in done.stderr


def test_other_system_errors_exit_74_and_name_the_path(tmp_path: Path) -> None:
    try:
        (tmp_path / "not-a-dir").write_text("x")
        (tmp_path / "not-a-dir" / "child").write_text("x")
    except OSError as exc:
        message, status = describe(exc)
    assert status == 74
    assert str(tmp_path / "not-a-dir" / "child") in message and "Not a directory" in message
    # A write that names no file: the file being written is found where it failed.
    with (tmp_path / "out").open("w") as out:
        try:
            raise OSError(5, "Input/output error")
        except OSError as exc:
            message, status = describe(exc)
    assert status == 74 and message.startswith(f"{out.name}: Input/output error")
