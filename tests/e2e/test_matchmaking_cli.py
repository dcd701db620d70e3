"""q -analyze and userprio, the way users and admins run them against a live pool."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pilotage.errors import Denied
from pilotage.testing import Pool


def _submit(pool: Pool, work: Path, memory: str, count: int = 1) -> None:
    work.mkdir(exist_ok=True)
    (work / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (work / "run.sh").chmod(0o755)
    (work / "big.submit").write_text(
        f"executable = run.sh\nrequest_memory = {memory}\nqueue {count}\n"
    )
    result = pool.cli("submit", "big.submit", cwd=work)
    assert result.returncode == 0, result.stderr


def test_analyze_names_the_memory_no_slot_has(pool: Pool) -> None:
    _submit(pool, pool.root / "work", "64GB")
    pool.pilots(1, cpus=1, memory_mb=512)
    with pool.admin() as admin:  # wait until the pilot has registered
        for _ in range(100):
            if admin.call("GET", "/api/v1/slots")["slots"]:
                break
            time.sleep(0.1)
    text = pool.cli("q", "-analyze", "1.0")
    assert text.returncode == 0, text.stderr
    assert "65536 MB" in text.stdout and "512 MB" in text.stdout and "request_memory" in text.stdout
    data = json.loads(pool.cli("q", "1.0", "--analyze", "--json").stdout)
    assert data["job"] == "1.0" and data["slots_total"] == 1 and data["slots_matching_idle"] == 0
    two = pool.cli("q", "1.0", "1.1", "-analyze")
    assert two.returncode == 2 and "explains one job" in two.stderr


def test_userprio_shows_submitters_and_only_admins_set_factors(pool: Pool) -> None:
    _submit(pool, pool.root / "work", "64MB", count=3)
    rows = []
    for _ in range(50):  # the server's sweep takes the new jobs into its index
        rows = json.loads(pool.cli("userprio", "--json").stdout)["submitters"]
        if rows and rows[0]["idle_jobs"] == 3:
            break
        time.sleep(0.2)
    (row,) = rows
    assert row["idle_jobs"] == 3 and row["factor"] == 1.0
    me = row["submitter"]
    assert pool.cli("userprio", "--set-factor", me, "2").returncode == 0
    (row,) = json.loads(pool.cli("userprio", "--json").stdout)["submitters"]
    assert row["factor"] == 2.0
    with pool.remote(pool.token("alice", "user")) as alice, pytest.raises(Denied, match="admin"):
        alice.call("PUT", f"/api/v1/userprio/{me}", json={"factor": 0.1})
    bad = pool.cli("userprio", "--set-factor", me, "0")
    assert bad.returncode == 2 and "factor" in bad.stderr
