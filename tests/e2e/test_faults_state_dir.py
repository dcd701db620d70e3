"""The server's own disk at fault, for real: its state and its spool on small tmpfs mounts,
filled up and made read-only under a running server (every fault a 503 with Retry-After
and the one error body, the CLI's exit 75 and its sentence, /readyz 503, then back to
normal), and start-up refusing an empty, damaged, unwritable or full state with exit 78
and the path (``pilotage admin check`` says the same).

Mounting needs root: skipped otherwise, except under CI.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from e2e_callers import closed_port

from pilotage.statedir import StateDir
from pilotage.testing import Pool, end_processes

SUBMIT = "executable = /bin/true\ntransfer_executable = false\n{extra}queue\n"


def _mount(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


def _remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


@contextlib.contextmanager
def _full(where: Path) -> Iterator[None]:
    """Fill the file system of ``where`` to the last byte, then free it again."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for block in (65536, 512, 1):  # the last bytes fit only in smaller writes
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * block):
                    pass
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


@pytest.fixture
def mounts(require_service: Callable[[str, str], NoReturn]) -> Iterator[Path]:
    """A directory whose ``state`` (16 MiB) and ``state/spool`` (4 MiB) are tmpfs mounts."""
    if os.geteuid() != 0:
        require_service("tmpfs mounts", "mounting a small tmpfs needs root")
    root = Path(tempfile.mkdtemp(prefix="pilotage-disk-"))
    state = root / "state"
    try:
        _mount(state, "16m")
        _mount(state / "spool", "4m")
        yield root
    finally:
        _umount(state / "spool")
        _umount(state)
        shutil.rmtree(root, ignore_errors=True)


def _fault(response: httpx.Response, says: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == "Transient", body
    assert says in body["message"], body


def _cli_fault(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 75, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("pilotage: ") and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("in.txt")
        info.size = 64 * 1024
        tar.addfile(info, io.BytesIO(b"x" * info.size))
    return out.getvalue()


def test_a_full_or_read_only_disk_under_a_running_server_is_a_503(
    mounts: Path, tmp_path: Path
) -> None:
    pool = Pool(mounts, f"sqlite:///{mounts / 'state' / 'pilotage.db'}",
                settings={"max_sandbox_mb": "1"})  # fmt: skip
    job = tmp_path / "job"
    job.mkdir()
    (job / "in.txt").write_text("input\n")
    (job / "plain.sub").write_text(SUBMIT.format(extra=""))
    (job / "upload.sub").write_text(SUBMIT.format(extra="transfer_input_files = in.txt\n"))
    spool = mounts / "state" / "spool"
    try:
        pool.start()
        transport = httpx.HTTPTransport(uds=str(pool.state.socket))
        with httpx.Client(transport=transport, base_url="http://local", timeout=60) as local:
            tar = {"content": _tar(), "headers": {"Content-Type": "application/x-tar"}}
            assert local.get("/readyz").status_code == 200
            assert pool.cli("submit", "plain.sub", cwd=job).returncode == 0

            # The database's disk full: every write is refused, reads still answer.
            with _full(mounts / "state"):
                _fault(local.post("/api/v1/clusters"), "the server's disk is full")
                _cli_fault(pool.cli("submit", "plain.sub", cwd=job), "disk is full")
                assert local.get("/api/v1/jobs").status_code == 200
                _fault(local.get("/readyz"), "the database's disk is full")
                assert local.get("/healthz").json()["status"] == "degraded"
            assert local.get("/readyz").status_code == 200
            assert pool.cli("submit", "plain.sub", cwd=job).returncode == 0

            # The spool full: sandboxes are refused; nothing half-written is kept.
            with _full(spool):
                _fault(local.post("/api/v1/sandboxes", **tar), "the server's disk is full")
                _cli_fault(pool.cli("submit", "upload.sub", cwd=job), "disk is full")
                _fault(local.get("/readyz"), "spool")
                assert local.get("/healthz").json()["spool"]["free_mb"] == 0
                assert list((spool / "incoming").iterdir()) == []

            # The spool read-only.
            _remount(spool, "ro")
            try:
                _fault(local.post("/api/v1/sandboxes", **tar), "cannot be written")
                _cli_fault(pool.cli("submit", "upload.sub", cwd=job), "cannot be written")
                _fault(local.get("/readyz"), "the spool cannot be written")
                assert local.get("/healthz").json()["spool"]["writable"] is False
            finally:
                _remount(spool, "rw")
            assert local.get("/readyz").status_code == 200
            assert pool.cli("submit", "upload.sub", cwd=job).returncode == 0
            checked = pool.cli("admin", "check")
            assert checked.returncode == 0, checked.stdout + checked.stderr
        log = pool.server_log()
        assert "Traceback" not in log and "internal error" not in log
        assert log.count("answering 503 (disk_full)") == 1  # one line, not one per request
    finally:
        pool.stop()


def _start(state: StateDir, *extra: str) -> subprocess.CompletedProcess[str]:
    """``pilotage server`` on ``state``: it must refuse before it listens."""
    env = {**os.environ, "PILOTAGE_STATE_DIR": str(state.root), "PILOTAGE_SERVER_PORT": "0"}
    env.pop("PILOTAGE_SERVER_DB", None)
    command = [sys.executable, "-m", "pilotage.cli", "server", *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _check(state: StateDir) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PILOTAGE_STATE_DIR": str(state.root)}
    env.pop("PILOTAGE_SERVER_DB", None)
    command = [sys.executable, "-m", "pilotage.cli", "admin", "check"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _refused(done: subprocess.CompletedProcess[str], code: int, *says: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    text = done.stdout + done.stderr
    for words in says:
        assert words in text, text
    assert "Traceback" not in text


def test_start_up_refuses_an_empty_damaged_unwritable_or_full_state(mounts: Path) -> None:
    state = StateDir(mounts / "state")
    state.init(pool_name="refusals")
    db = state.root / "pilotage.db"

    db.touch()  # zero length: it would start an empty pool
    _refused(_start(state), 78, f"the database {db} is empty (0 bytes)")
    _refused(_check(state), 78, f"the database {db} is empty (0 bytes)")
    assert db.stat().st_size == 0  # refusing changed nothing

    db.write_bytes(os.urandom(8192))  # not SQLite at all
    _refused(_start(state), 78, f"the database {db} is not an SQLite database")
    db.unlink()

    # A real database, migrated, then damaged in the middle (its header intact).
    migrated = subprocess.Popen(
        [sys.executable, "-m", "pilotage.cli", "server", "--port", "0"],
        env={**os.environ, "PILOTAGE_STATE_DIR": str(state.root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not state.url_file.exists():
            assert migrated.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        end_processes([migrated], grace_s=30)
    _refused(_check(state), 0, "integrity", "SQLite's integrity check passed")
    with open(db, "r+b") as file:
        file.seek(4096 * 3)
        file.write(os.urandom(4096 * 4))
    _refused(_start(state), 78, f"the database {db} is damaged")
    _refused(_check(state), 78, f"the database {db} is damaged")
    db.unlink()

    _remount(state.root, "ro")  # read-only
    try:
        _refused(_start(state), 78, f"the state directory {state.root} cannot be written")
        _refused(_check(state), 78, f"{state.root} cannot be written")
    finally:
        _remount(state.root, "rw")

    with _full(state.root):  # no room left
        _refused(_start(state), 78, f"the state directory {state.root} cannot be written",
                 "No space left on device")  # fmt: skip

    # A database server that does not answer: try again later (75), naming it.
    url = f"postgresql://pilotage:secret@127.0.0.1:{closed_port()}/pool"
    _refused(_start(state, "--db", url), 75, "127.0.0.1", "is unavailable")
    assert "secret" not in _start(state, "--db", url).stderr
