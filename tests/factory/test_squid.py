"""Pilot files through a real Squid: the second pilot's files come from its cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotage.factory.backends.local import LocalBatch
from pilotage.factory.bootstrap import bootstrap_launch
from pilotage.factory.fileserver import FileServer
from pilotage.factory.pilots import PilotState

from .conftest import Squid
from .test_bootstrap import FAKE_TOKEN, entry, publish_one


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path / "files").start()
    yield server
    server.stop()


def log_lines(squid: Squid, path: str) -> list[str]:
    """Squid's access-log lines for URLs ending in ``path`` (the log may lag a little)."""
    text = squid.access_log.read_text() if squid.access_log.exists() else ""
    return [line for line in text.splitlines() if line.split()[6].endswith(path)]


def test_second_pilot_gets_its_files_from_the_cache(
    squid_proxy: Squid, files: FileServer, tmp_path: Path
) -> None:
    # Validation refuses this node (too little memory), after every file was fetched.
    published = publish_one(files, entry(memory_mb=2**40))
    launch = bootstrap_launch(
        f"{files.url}/{published.manifest_sha256}",
        published.manifest_sha256,
        FAKE_TOKEN,
        walltime_s=600,
        extra_env={"http_proxy": squid_proxy.url},
    )
    batch = LocalBatch(tmp_path / "pilots")
    for n in (1, 2):
        (pilot,) = batch.submit(1, launch)
        deadline = time.monotonic() + 60
        while batch.status([pilot])[pilot].state is not PilotState.FAILED:
            assert time.monotonic() < deadline, batch.logs(pilot)
            time.sleep(0.1)
        log = batch.logs(pilot)
        assert "every file matches the manifest" in log
        assert f"through {squid_proxy.url}" in log
        assert n == 1 or files.served.count(f"/{published.manifest_sha256}/agent.pyz") == 1
    deadline = time.monotonic() + 10
    while len(lines := log_lines(squid_proxy, "/agent.pyz")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    first, second = lines[-2:]
    assert "MISS" in first.split()[3]
    assert "HIT" in second.split()[3], second
    # Every file of the second pilot came from the cache: the server saw each once.
    assert len(files.served) == len(set(files.served))
