"""``pilotage admin backup`` and a restore, for real (SQLite, and PostgreSQL with
``pg_restore``): a pool runs jobs, its state is copied
while the server runs, the state directory is wiped, the copy put back as
docs/operations.md says; the completed jobs' outputs are still fetched and idle jobs still
run. A destination that is not empty and a state directory that does not exist are
refused, writing nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from pilotage.store.backup import libpq_env
from pilotage.testing import Pool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", id="postgres", marks=pytest.mark.postgres)]
)
def pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-backup-"))
    db_url = f"sqlite:///{root / 'state' / 'pilotage.db'}"
    if request.param == "postgresql":
        db_url = request.getfixturevalue("pg_database")
    pool = Pool(root, db_url)
    try:
        yield pool.start()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


def _recreate(db_url: str) -> None:
    """Drop the pool's PostgreSQL database and create it again, empty."""
    url = sqlalchemy.make_url(db_url)
    admin = sqlalchemy.create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{url.database}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    finally:
        admin.dispose()


def _submit(pool: Pool, work: Path, jobs: int) -> None:
    text = (EXAMPLE / "hello.submit").read_text().replace("queue 20", f"queue {jobs}")
    (work / "hello.submit").write_text(text.replace("HELLO_SLEEP=1", "HELLO_SLEEP=0"))
    done = pool.cli("submit", "hello.submit", cwd=work)
    assert done.returncode == 0, done.stderr


def test_a_backup_taken_while_the_server_runs_restores_the_pool(pool: Pool) -> None:
    work = pool.root / "work"
    shutil.copytree(EXAMPLE, work)
    (work / "out").mkdir()
    _submit(pool, work, 3)  # cluster 1: runs before the backup
    pool.pilots(1)
    pool.wait_jobs(["1"], ("COMPLETED",))
    assert pool.backend is not None
    pool.backend.remove_all(grace_s=30)
    _submit(pool, work, 2)  # cluster 2: idle when the backup is taken

    dest = pool.root / "backup"
    # Bad input first: nothing written, nothing changed.
    dest.mkdir()
    (dest / "keep.txt").write_text("mine\n")
    refused = pool.cli("admin", "backup", str(dest))
    assert refused.returncode == 2, refused.stderr
    assert f"{dest} exists and is not empty" in refused.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    missing, elsewhere = pool.root / "no-such-state", pool.root / "elsewhere"
    refused = pool.cli("--state-dir", str(missing), "admin", "backup", str(elsewhere))
    assert refused.returncode == 78, refused.stderr
    assert f"the state directory {missing} does not exist" in refused.stderr
    assert not elsewhere.exists() and not missing.exists()
    for bad, says in (
        (dest / "keep.txt", "exists and is not a directory"),
        (pool.root / "nowhere" / "backup", f"the directory {pool.root / 'nowhere'} to hold"),
    ):
        refused = pool.cli("admin", "backup", str(bad))
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    assert not (pool.root / "nowhere").exists()
    (dest / "keep.txt").unlink()
    if not pool.db_url.startswith("sqlite"):  # no pg_dump: refused, the copy removed
        refused = pool.cli("admin", "backup", str(elsewhere), env={"PATH": str(missing)})
        assert refused.returncode == 78, refused.stderr
        assert "pg_dump is not on PATH" in refused.stderr and "Traceback" not in refused.stderr
        assert not elsewhere.exists()

    # The backup, while the server runs.
    taken = pool.cli("admin", "backup", str(dest))
    assert taken.returncode == 0, taken.stderr
    assert f"backed up {pool.state.root} to {dest}" in taken.stdout
    manifest = json.loads((dest / "pilotage-backup.json").read_text())
    sqlite = pool.db_url.startswith("sqlite")
    database = dest / ("pilotage.db" if sqlite else "pilotage.pgdump")
    assert manifest["database"] == database.name and manifest["schema_revision"]
    if sqlite:  # the input sandbox and three outputs (on PostgreSQL: in the dump)
        assert manifest["spool"]["files"] == 4
    assert set(manifest["files"]) >= {"pilotage.toml", "ca", "server", "tokens", "credentials"}
    for key in (dest / "ca" / "ca.key", dest / "tokens" / "signing.pem", database):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert not (dest / "server.sock").exists()

    # Restore: stop the server, put the files back, check, start.
    pool.stop()
    shutil.rmtree(pool.state.root)
    pool.state.root.mkdir(mode=0o755)
    if not sqlite:  # a new empty database, and pg_restore, as docs/operations.md says
        _recreate(pool.db_url)
        env = libpq_env(pool.db_url)
        restored = subprocess.run(
            ["pg_restore", "--no-owner", f"--dbname={env['PGDATABASE']}", str(database)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        database.unlink()
    # As docs/operations.md says: cp -a BACKUP/* STATE/ (the state directory keeps its mode).
    restored = subprocess.run(f"cp -a {dest}/* {pool.state.root}/", shell=True, check=False)
    assert restored.returncode == 0
    checked = pool.cli("admin", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all 4 recorded sandboxes are in the spool" in checked.stdout, checked.stdout
    pool.server = pool.start_server()

    if os.geteuid() == 0:  # outputs fetched into a read-only submit directory: exit 77
        subprocess.run(["mount", "--bind", str(work), str(work)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(work)], check=True)
            refused = pool.cli("fetch", "1", cwd=work)
        finally:
            subprocess.run(["umount", "-l", str(work)], check=True)
        assert refused.returncode == 77, refused.stdout + refused.stderr
        assert f"{work}" in refused.stderr and "Read-only file system" in refused.stderr
        assert "Traceback" not in refused.stderr
    fetched = pool.cli("fetch", "1", cwd=work)
    assert fetched.returncode == 0, fetched.stderr
    for i in range(3):
        assert (work / "out" / f"hello.1.{i}.out").read_text().startswith(f"hello from job 1.{i} ")
        assert (work / f"result-{i}.txt").read_text().startswith(f"item={i} ")
    pool.pilots(1)  # a new pilot, with the token signed before the backup
    pool.wait_jobs(["2"], ("COMPLETED",))
