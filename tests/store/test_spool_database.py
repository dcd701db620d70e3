"""Sandboxes kept in the database: what one server keeps, another server reads.

Two spools with separate state directories on one database stand for two servers
sharing PostgreSQL and nothing else (docs/operations.md, "Several servers").
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pilotage.errors import NotFound, OperatorError
from pilotage.queue.sandbox import SandboxError
from pilotage.queue.spool import CHUNK_BYTES, DatabaseSpool, Spool, make_spool
from pilotage.store.engine import Store


def _tar(size: int) -> bytes:
    data = os.urandom(size)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _spool(root: Path, store: Store) -> DatabaseSpool:
    return DatabaseSpool(root, store, max_bytes=64 * CHUNK_BYTES, max_members=10)


def test_a_sandbox_kept_by_one_server_is_read_by_another(store: Store, tmp_path: Path) -> None:
    first, second = _spool(tmp_path / "a", store), _spool(tmp_path / "b", store)
    for body in (_tar(3 * CHUNK_BYTES + 17), _tar(0)):
        digest, size = first.store(io.BytesIO(body))
        assert size == len(body)
        with second.open(digest) as handle:
            assert handle.read() == body
        # Kept again (the same bytes from another server): still one copy, still whole.
        assert second.store(io.BytesIO(body)) == (digest, size)
        with first.open(digest) as handle:
            assert handle.read() == body
    # Nothing of it lives on either server's disk, and no temporary file is left.
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []


def test_a_refused_upload_keeps_nothing(store: Store, tmp_path: Path) -> None:
    spool = _spool(tmp_path / "a", store)
    with pytest.raises(SandboxError, match="not a tar archive"):
        spool.store(io.BytesIO(b"not a tar at all" * 100))
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []
    with pytest.raises(NotFound, match="not in the spool"):
        spool.open("0" * 64)


def test_the_setting_picks_the_spool(store: Store, tmp_path: Path) -> None:
    made = make_spool(tmp_path / "s", store, "auto", max_bytes=1, max_members=1)
    assert isinstance(made, DatabaseSpool) != store.is_sqlite
    files = make_spool(tmp_path / "t", store, "files", max_bytes=1, max_members=1)
    assert type(files) is Spool
    with pytest.raises(OperatorError, match="spool = 'disk': use files, database or auto"):
        make_spool(tmp_path / "u", store, "disk", max_bytes=1, max_members=1)
