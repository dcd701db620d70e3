"""The pages' SQL on PostgreSQL: its own date arithmetic, JSON and grouping, with jobs that
ran on a real agent."""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

import httpx

from pilotage.testing import Pool

PAGES = (
    "/web/?window=24h",
    "/web/jobs",
    "/web/jobs?cluster=1",
    "/web/jobs/1.0",
    "/web/jobs/1.1?analyze=1",
    "/web/history?since=2020-01-01&until=2099-12-31&exit=0",
    "/web/history.csv",
    "/web/sites",
    "/web/users",
    "/web/accounting?by=group",
    "/web/accounting?by=day",
    "/web/accounting?by=final_user",
    "/metrics",
)


def test_every_page_on_postgresql(pg_database: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="pilotage-pool-"))
    pool = Pool(root, pg_database, settings={"heartbeat_s": "1", "reap_interval_s": "0.5"})
    try:
        pool.start()
        with pool.remote(pool.token("carol", "user")) as carol:
            cluster = carol.call("POST", "/api/v1/clusters")["cluster_id"]
            quick = {"executable": "/bin/true", "transfer_executable": False, "iwd": "/tmp"}
            idle = {**quick, "requirements": "false"}
            body = {"v": 1, "jobs": [quick, idle]}
            carol.call("POST", f"/api/v1/clusters/{cluster}/jobs", json=body)
        pool.pilots(1)
        pool.wait_jobs([f"{cluster}.0"], ("COMPLETED",))
        token = pool.token("pg-admin", "admin")
        ca = ssl.create_default_context(cafile=pool.state.ca_cert)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=pool.url, verify=ca, headers=headers, timeout=60) as http:
            for path in PAGES:
                answer = http.get(path)
                assert answer.status_code == 200, (path, answer.text[:400])
            overview = http.get("/web/?window=24h").text
            assert 'data-count="COMPLETED">1<' in overview and 'data-count="IDLE">1<' in overview
            accounting = http.get("/web/accounting.csv?by=day").text.splitlines()
            assert len(accounting) == 2 and accounting[1].count(",") == 3
            assert "(none)" in http.get("/web/accounting?by=group").text
            assert "Why does it not run yet?" in http.get("/web/jobs/1.1").text
            analysis = http.get("/web/jobs/1.1?analyze=1").text
            assert "Why it does not run yet" in analysis and "data-live" not in analysis
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)
