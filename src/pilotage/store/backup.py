"""``pilotage admin backup DEST``: a copy of a pool's state, taken while its server runs.

Run on the server's host, with the server's state directory. In order:

1. the database: for SQLite, a consistent copy through SQLite's online backup API
   (``pilotage.db``); for PostgreSQL, ``pg_dump -Fc`` (``pilotage.pgdump``), given the
   password in its environment, never on its command line;
2. the spool's files (``spool/``, without uploads under way). A job's sandbox is written
   to the spool before the row naming it commits, so every sandbox the database copy
   names is already there when the spool is copied after it; a file newer than the
   database copy is a harmless extra;
3. the configuration and the keys (``pilotage.toml``, ``ca/``, ``server/``, ``tokens/``,
   ``credentials/``) and the credential audit log (``audit/``), modes kept;
4. ``pilotage-backup.json``: when, this version, the schema revision, what was copied.

DEST must be new or empty; it is made 0700. The copy mirrors the state directory's
layout, so a restore puts its files back in place (docs/operations.md, "Backups and
restore"). A copy that fails half-way is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from pilotage import __version__
from pilotage.errors import BadInput, OperatorError
from pilotage.statedir import StateDir
from pilotage.store.health import redacted, sqlite_path

#: What is copied besides the database and the spool, in the state directory's layout.
KEYS = ("pilotage.toml", "ca", "server", "tokens", "credentials", "audit")
MANIFEST = "pilotage-backup.json"
#: The spool's directory of uploads being checked: never part of a backup.
INCOMING = "incoming"


@dataclass
class Backup:
    """What one backup copied (the manifest's content)."""

    database: str = ""
    schema: list[str] = field(default_factory=list)
    spool_files: int = 0
    spool_bytes: int = 0
    files: list[str] = field(default_factory=list)

    def manifest(self, started: float) -> dict[str, object]:
        return {
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "pilotage_version": __version__,
            "schema_revision": self.schema,
            "database": self.database,
            "spool": {"files": self.spool_files, "bytes": self.spool_bytes},
            "files": self.files,
        }


def backup(state: StateDir, dest: Path, db_url: str) -> Backup:
    """Copy the pool's state into ``dest`` (see the module's docstring)."""
    if not state.root.is_dir() or not state.config.is_file():
        raise OperatorError(
            f"the state directory {state.root} does not exist or holds no pilotage.toml; "
            "run this on the server's host, naming its state directory with --state-dir "
            "or PILOTAGE_STATE_DIR"
        )
    made = _prepare(dest)
    started = time.time()
    try:
        done = Backup()
        path = sqlite_path(db_url)
        if path is not None:
            _sqlite(path, dest / "pilotage.db", done)
        else:
            _pg_dump(db_url, dest / "pilotage.pgdump", done)
        _spool(state.spool, dest / "spool", done)
        for name in KEYS:
            if _copy(state.root / name, dest / name):
                done.files.append(name)
        text = json.dumps(done.manifest(started), indent=2, sort_keys=True) + "\n"
        (dest / MANIFEST).write_text(text, encoding="utf-8")
    except BaseException:
        _undo(dest, made)
        raise
    return done


def _prepare(dest: Path) -> bool:
    """Make ``dest`` (0700), or take it when it is an empty directory; True if made."""
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise BadInput(f"{dest} exists and is not a directory; name a new directory")
        if any(dest.iterdir()):
            raise BadInput(
                f"{dest} exists and is not empty; name a new or empty directory "
                "(a backup never overwrites another)"
            )
        dest.chmod(0o700)  # it is to hold the pool's keys
        return False
    if not dest.parent.is_dir():
        raise BadInput(f"the directory {dest.parent} to hold {dest.name} does not exist")
    dest.mkdir(mode=0o700)
    return True


def _undo(dest: Path, made: bool) -> None:
    if made:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _sqlite(path: Path, copy: Path, done: Backup) -> None:
    if not path.is_file():
        raise OperatorError(f"the database {path} does not exist: there is nothing to back up")
    # mode=rw: never create an empty database where the pool's should be.
    source = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=60)
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)  # one step: one consistent snapshot
            rows = target.execute("SELECT version_num FROM alembic_version").fetchall()
            done.schema = sorted(str(r[0]) for r in rows)
        finally:
            target.close()
    finally:
        source.close()
    done.database = "pilotage.db"


def _pg_dump(db_url: str, copy: Path, done: Backup) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise OperatorError(
            f"the pool's database is PostgreSQL ({redacted(db_url)}) and pg_dump is not "
            "on PATH: install PostgreSQL's client tools (pg_dump, of the server's version "
            "or newer), or see docs/operations.md, 'Backups and restore'"
        )
    env = libpq_env(db_url)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    answer = subprocess.run(  # no secret on the command line: the password is in env
        [pg_dump, "--format=custom", f"--file={copy}", "--no-password"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if answer.returncode != 0:
        why = answer.stderr.strip().splitlines()[-1:] or ["no message"]
        raise OperatorError(f"pg_dump of {redacted(db_url)} failed: {why[0]}")
    done.database = "pilotage.pgdump"
    with sa.create_engine(db_url, poolclass=sa.NullPool).connect() as conn:
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    done.schema = sorted(str(r[0]) for r in rows)


def libpq_env(db_url: str) -> dict[str, str]:
    """This process's environment plus the database's host, port, user, password, name
    and TLS settings as libpq's ``PG*`` variables: how PostgreSQL's tools are told where
    to connect without a password on their command line."""
    url = sa.make_url(db_url)
    env = dict(os.environ)
    for name, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value is not None:
            env[name] = str(value)
    for key, given in url.query.items():  # sslmode=..., as libpq's environment
        if isinstance(given, str) and key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
            env["PG" + key.upper()] = given
    return env


def _spool(spool: Path, copy: Path, done: Backup) -> None:
    """Copy the spool's sandboxes; one deleted while we copy is skipped."""
    if not spool.is_dir():
        return
    copy.mkdir(mode=0o700)
    shutil.copystat(spool, copy)
    for root, dirs, files in os.walk(spool):
        here = Path(root)
        if here == spool and INCOMING in dirs:
            dirs.remove(INCOMING)
        for name in dirs:
            target = copy / (here / name).relative_to(spool)
            target.mkdir(mode=0o700)
            shutil.copystat(here / name, target)
        for name in files:
            target = copy / (here / name).relative_to(spool)
            try:
                shutil.copy2(here / name, target)
            except FileNotFoundError:
                continue  # removed by the server since we listed it
            done.spool_files += 1
            done.spool_bytes += target.stat().st_size


def _copy(source: Path, target: Path) -> bool:
    """Copy a file or a directory tree, keeping modes; False when there is none."""
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, ignore=_sockets)
        return True
    if source.is_file():
        shutil.copy2(source, target)
        return True
    return False


def _sockets(root: str, names: list[str]) -> set[str]:
    """What :func:`shutil.copytree` leaves out: sockets."""
    return {n for n in names if Path(root, n).is_socket()}
