"""Benchmark of the web pages: how long the overview and history pages take to render for
a big pool, as a browser (or a script) waits for them over HTTPS.

Fills a database with a day of a big pool's life (``--jobs`` jobs of ``--users`` users in
clusters of 100, ``--slots`` active pilots at ``--sites`` sites and their entries, the
claims and job events that history implies: submissions spread over ``--hours`` hours,
about 15% idle, 15% running, 5% held, 5% removed and the rest completed), then starts a
real ``pilotage server`` (:class:`pilotage.testing.Pool`) on it, SQLite or a throwaway
PostgreSQL cluster, and times ``GET /web/`` (overview) and ``GET /web/history`` as the
admin (every job) and as one user, each ``--repeat`` times after one warm-up, from the
request to the last byte. Other pages and a ``/metrics`` scrape are timed the same way.

Ends with one ``BENCH <name> <value> <unit>`` line per figure (medians). Figures recorded
in docs/benchmarks.md (section "Web pages"). ``--screenshots DIR`` also saves a
screenshot of each page there with Chromium (how docs/img is made).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa
from webdata import populate

from pilotage.store.engine import Store
from pilotage.testing import Pool, postgres_cluster

PAGES = {
    "overview": "/web/",
    "history": "/web/history",
    "jobs": "/web/jobs",
    "accounting": "/web/accounting",
    "sites": "/web/sites",
    "users": "/web/users",
    "history_filtered": "/web/history?site=site-03&exit=1",
}


@contextlib.contextmanager
def database(kind: str, root: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{root / 'pilotage.db'}"
        return
    with postgres_cluster() as url:
        admin = sa.create_engine(url + "postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql('CREATE DATABASE "bench"')
        admin.dispose()
        yield url + "bench"


def _time(client: httpx.Client, path: str, repeat: int) -> list[float]:
    answer = client.get(path)  # warm-up: first statements, caches
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return times


def screenshots(pool: Pool, token: str, where: Path) -> None:
    """Each page in Chromium, signed in with a one-time link, saved as PNG in ``where``."""
    from playwright.sync_api import sync_playwright

    where.mkdir(parents=True, exist_ok=True)
    http = httpx.Client(
        base_url=pool.url,
        verify=ssl.create_default_context(cafile=pool.state.ca_cert),
        headers={"Authorization": f"Bearer {token}"},
    )
    link = pool.url + http.post("/api/v1/web/links", json={"v": 1}).json()["path"]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--ignore-certificate-errors"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(link)
        with page.expect_navigation():
            page.click("#use-link")
        first_job = http.get("/api/v1/jobs", params={"state": "HELD"}).json()[0]["id"]
        shots = {name: path for name, path in PAGES.items() if name != "history_filtered"}
        shots.update(
            {"accounting-by-day": "/web/accounting?by=day", "job": f"/web/jobs/{first_job}"}
        )
        for name, path in shots.items():
            page.goto(pool.url + path, wait_until="networkidle")
            page.screenshot(path=str(where / f"web-{name}.png"), full_page=name == "overview")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(pool.url + "/web/", wait_until="networkidle")
        page.screenshot(path=str(where / "web-overview-phone.png"))
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--hours", type=float, default=24.0, help="history spread over")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--screenshots", type=Path, help="save each page's PNG here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pilotage-bench-web-"))
    root.chmod(0o755)
    try:
        with database(args.db, root) as url:
            pool = Pool(root, url, settings={"reap_interval_s": "5"})
            pool.state.init(pool_name="bench")
            store = Store(url)
            store.migrate()
            began = time.perf_counter()
            counts = populate(store, args, time.time())
            if args.db == "postgresql":
                # Where autovacuum leaves a pool's settled rows: statistics, and the
                # visibility map that lets counts read indexes alone (a plain VACUUM just
                # after the load does not yet mark the pages all-visible; FREEZE does).
                with store.engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("VACUUM (FREEZE, ANALYZE)")
            store.dispose()
            print(
                f"filled the {args.db} database in {time.perf_counter() - began:.1f} s: "
                f"{counts}, {args.slots} slots at {args.sites} sites",
                file=sys.stderr,
            )
            pool.server = pool.start_server()
            try:
                ca = ssl.create_default_context(cafile=pool.state.ca_cert)
                admin_token = pool.token("bench-admin", "admin")
                tokens = {"admin": admin_token, "user": pool.token("user007", "user")}
                results: dict[str, list[float]] = {}
                for who, token in tokens.items():
                    headers = {"Authorization": f"Bearer {token}"}
                    with httpx.Client(
                        base_url=pool.url, verify=ca, headers=headers, timeout=120
                    ) as c:
                        for name, path in PAGES.items():
                            if who == "user" and name not in ("overview", "history"):
                                continue
                            key = f"web_{name}_ms" if who == "admin" else f"web_{name}_user_ms"
                            results[key] = _time(c, path, args.repeat)
                        if who == "admin":
                            results["metrics_scrape_ms"] = _time(c, "/metrics", args.repeat)
                for key, values in results.items():
                    runs = ", ".join(f"{v:.0f}" for v in values)
                    print(f"{key}: {runs}", file=sys.stderr)
                for key, values in results.items():
                    print(f"BENCH {key} {statistics.median(values):.1f} ms")
                if args.screenshots is not None:
                    screenshots(pool, admin_token, args.screenshots)
            finally:
                pool.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
