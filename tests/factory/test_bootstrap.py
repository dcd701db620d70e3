"""The bootstrap for real: pilot files over HTTP, checked, validated, the agent started.

Pilots run through the ``local`` backend against the factory's file server on
127.0.0.1; the last test joins a real pool (server subprocess) and runs a job there.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pilotage.factory.backends.local import LocalBatch
from pilotage.factory.bootstrap import bootstrap_launch
from pilotage.factory.entries import Entry, parse_config
from pilotage.factory.fileserver import FileServer
from pilotage.factory.manifest import Published, publish
from pilotage.factory.pilotfiles import PilotConfig, entry_files, publish_entries
from pilotage.factory.pilots import Observed, PilotState
from pilotage.testing import Pool

#: A token-shaped string whose ``exp`` is far away (validation reads, never trusts, it).
FAKE_TOKEN = "e30." + base64.urlsafe_b64encode(b'{"exp": 4102444800}').decode().rstrip("=") + ".x"
AGENT = b"#!/usr/bin/env python3\nPK not a real agent\n"


def entry(name: str = "laptop", **attrs: Any) -> Entry:
    table = {"site": "HOME", "cpus": 1, "memory_mb": 256, "disk_mb": 64, **attrs}
    return parse_config({"entry": [{"name": name, "attrs": table}]}).entry[0]


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path / "files").start()
    yield server
    server.stop()


def run_pilot(
    batch: LocalBatch, url: str, published: Published, token: str = FAKE_TOKEN
) -> tuple[Observed, str]:
    launch = bootstrap_launch(
        f"{url}/{published.manifest_sha256}",
        published.manifest_sha256,
        token,
        walltime_s=600,
    )
    (pilot,) = batch.submit(1, launch)
    deadline = time.monotonic() + 60
    while (seen := batch.status([pilot])[pilot]).state not in (
        PilotState.FINISHED,
        PilotState.FAILED,
    ):
        assert time.monotonic() < deadline, batch.logs(pilot)
        time.sleep(0.1)
    return seen, batch.logs(pilot)


def report(log: str) -> dict[str, Any]:
    (line,) = [x for x in log.splitlines() if x.startswith("pilotage-validation: {")]
    result: dict[str, Any] = json.loads(line.split(": ", 1)[1])
    return result


def publish_one(server: FileServer, e: Entry, config: PilotConfig | None = None) -> Published:
    config = config or PilotConfig(server_url="https://127.0.0.1:9", ca_pem=b"ca\n")
    return publish(server.root, entry_files(e, config, AGENT), Ed25519PrivateKey.generate())


def test_a_tampered_file_stops_the_pilot_naming_it(files: FileServer, tmp_path: Path) -> None:
    published = publish_one(files, entry())
    (published.directory / "agent.pyz").write_bytes(AGENT + b"import evil\n")
    seen, log = run_pilot(LocalBatch(tmp_path / "pilots"), files.url, published)
    assert seen == Observed(PilotState.FAILED, "exit code 20")
    assert "file agent.pyz does not match the manifest" in log
    assert report(log) == {
        "ok": False,
        "reason": "file_mismatch",
        "file": "agent.pyz",
        "message": report(log)["message"],
    }
    assert "starting the agent" not in log


def test_a_wrong_manifest_hash_stops_the_pilot(files: FileServer, tmp_path: Path) -> None:
    published = publish_one(files, entry())
    other = publish_one(files, entry(cpus=2))
    shutil.copy(other.directory / "manifest", published.directory / "manifest")
    seen, log = run_pilot(LocalBatch(tmp_path / "pilots"), files.url, published)
    assert seen.reason == "exit code 20"
    assert report(log)["file"] == "manifest"
    assert "file manifest does not match its hash" in log


def test_validation_refuses_a_node_too_small(files: FileServer, tmp_path: Path) -> None:
    published = publish_one(files, entry(memory_mb=2**40))
    seen, log = run_pilot(LocalBatch(tmp_path / "pilots"), files.url, published)
    assert seen.reason == "exit code 21"
    found = report(log)
    assert (found["ok"], found["reason"]) == (False, "memory_mb")
    assert "every file matches the manifest" in log


def test_a_failing_site_check_is_reported_by_name(files: FileServer, tmp_path: Path) -> None:
    checks = tmp_path / "site-checks"
    checks.mkdir()
    (checks / "10-cvmfs").write_text("#!/bin/sh\necho 'no cvmfs here' >&2\nexit 1\n")
    (checks / "10-cvmfs").chmod(0o755)
    config = PilotConfig(server_url="https://127.0.0.1:9", ca_pem=b"", site_checks=str(checks))
    published = publish_one(files, entry(), config)
    seen, log = run_pilot(LocalBatch(tmp_path / "pilots"), files.url, published)
    assert seen.reason == "exit code 21"
    assert report(log)["reason"] == "site_check"
    assert report(log)["script"] == "10-cvmfs"
    assert "no cvmfs here" in report(log)["message"]


def test_a_pilot_joins_the_pool_and_runs_a_job(files: FileServer, tmp_path: Path) -> None:
    """Bootstrap, validation, site and entry attributes, agent: a job requiring them
    completes, on a pilot whose token was minted for its entry."""
    root = tmp_path / "pool"
    root.mkdir()
    pool = Pool(root, f"sqlite:///{root / 'pool.db'}", {"heartbeat_s": "1"}).start()
    try:
        checks = tmp_path / "site-checks"
        checks.mkdir()
        (checks / "cvmfs").write_text("#!/bin/sh\necho 'HasCvmfs=true'\n")
        (checks / "cvmfs").chmod(0o755)
        config = PilotConfig(
            server_url=pool.url, ca_pem=pool.state.ca_cert.read_bytes(), site_checks=str(checks)
        )
        e = entry(memory_mb=512, disk_mb=128, extra={"Tier": 2, "Repo": 'atlas "main"'})
        published = publish_entries(files.root, [e], config, Ed25519PrivateKey.generate())
        with pool.remote(pool.token("factory-1", "factory")) as factory:
            advert = {"ad": e.ad(), "pilots": {"idle": 0, "running": 0, "held": 0}}
            factory.call("PUT", "/api/v1/entries/laptop", json=advert)
        with pool.remote(pool.token("vo-frontend", "frontend")) as frontend:
            minted = frontend.call(
                "POST", "/api/v1/pilot-tokens", json={"entry": "laptop", "lifetime_s": 900}
            )
        work = tmp_path / "submit"
        work.mkdir()
        (work / "job.submit").write_text(
            "executable = /bin/echo\narguments = hello\noutput = out.txt\n"
            "request_memory = 64MB\nrequest_disk = 1MB\n"
            'requirements = HasCvmfs =?= true && EntryName == "laptop" && Site == "HOME"'
            ' && Tier == 2 && Repo == "atlas \\"main\\""\n'
            "queue 1\n"
        )
        submitted = pool.cli("submit", "job.submit", "--json", cwd=work)
        assert submitted.returncode == 0, submitted.stderr
        cluster = json.loads(submitted.stdout)["cluster"]
        batch = LocalBatch(tmp_path / "pilots")
        launch = bootstrap_launch(
            f"{files.url}/{published['laptop'].manifest_sha256}",
            published["laptop"].manifest_sha256,
            minted["token"],
            walltime_s=600,
        )
        (pilot,) = batch.submit(1, launch)
        try:
            (job,) = pool.wait_jobs([str(cluster)], ("COMPLETED", "HELD"), timeout=90)
        finally:
            log = batch.logs(pilot)
            batch.remove([pilot])
        assert job["state"] == "COMPLETED", log
        assert job["site"] == "HOME"
        assert report(log)["ok"] is True
        attrs = report(log)["attrs"]
        assert attrs["HasCvmfs"] == "true"
        assert (attrs["PilotageSwitchMode"], attrs["PilotageSwitch"]) == ('"never"', '"none"')
    finally:
        pool.stop()
