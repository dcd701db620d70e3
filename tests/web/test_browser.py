"""The pages in a real Chromium (Debian's, driven by Playwright) against a live pool: real
server, real agents at two entries, running jobs and one held job.

One pool and one browser for the whole module. It signs in with links from ``pilotage
web`` (the admin's over the Unix socket, alice's with her token), loads every page,
checks the numbers shown against the API, clicks from the overview to a job, sees plots
drawn, watches a page update itself without a reload, and finds no console error. A
screenshot of each page goes to ``$PILOTAGE_TEST_ARTIFACTS/web`` (default: pytest's
temporary directory); with ``PILOTAGE_WEB_SCREENSHOTS=DIR`` they are also copied there
(how docs/img is made).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from web.web_pool import WebPool

CHROMIUM = "/usr/bin/chromium"
PAGES = {
    "overview": "/web/",
    "jobs": "/web/jobs",
    "jobs-per-job": "/web/jobs?view=jobs",
    "history": "/web/history",
    "sites": "/web/sites",
    "users": "/web/users",
    "accounting": "/web/accounting",
    "accounting-by-day": "/web/accounting?by=day",
}


def _spki_sha256(cert_pem: bytes) -> str:
    """The base64 SHA-256 of a certificate's public key (Chromium's SPKI pin)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def browser(web_pool: WebPool, require_service: Callable[[str, str], NoReturn]) -> Iterator[Any]:
    """One headless Chromium for the module (skipped locally without one, never on CI).

    It trusts the pool's server certificate by its key, and nothing else more than a
    browser does: the pool CA is not in its store."""
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("Chromium", "the playwright package is missing (pip install -e .[dev])")
    with sync_playwright() as driver:
        # --no-sandbox: Chromium's sandbox refuses to run as root, as the tests do.
        pin = _spki_sha256(web_pool.pool.state.server_cert.read_bytes())
        chromium = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={pin}"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = os.environ.get("PILOTAGE_TEST_ARTIFACTS")
    where = Path(base) / "web" if base else tmp_path_factory.mktemp("web-screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


class Tab:
    """One browser page that records console errors and saves screenshots."""

    def __init__(self, page: Any, base: str, artifacts: Path) -> None:
        self.page = page
        self.base = base
        self.artifacts = artifacts
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path, wait_until="networkidle")
        assert response is not None and response.ok, (path, response and response.status)
        return response

    def shot(self, name: str) -> None:
        target = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(target), full_page=True)
        copy_to = os.environ.get("PILOTAGE_WEB_SCREENSHOTS")
        if copy_to:
            shutil.copy(target, Path(copy_to) / target.name)

    def text(self) -> str:
        return str(self.page.inner_text("body"))


#: Every table has column headers with a scope; every form field has a label; every
#: scrolling region can take the keyboard's focus.
ACCESSIBLE = """() => {
  const problems = [];
  for (const t of document.querySelectorAll("table")) {
    if (!t.querySelector("th[scope=col]")) problems.push("a table without th[scope=col]");
  }
  for (const f of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const label = f.id && document.querySelector(`label[for="${f.id}"]`);
    if (!label) problems.push("unlabelled " + f.name);
  }
  for (const r of document.querySelectorAll(".scroll")) {
    if (r.getAttribute("tabindex") !== "0") problems.push("a scroll region out of reach");
  }
  if (document.documentElement.lang !== "en") problems.push("no lang");
  return problems;
}"""

#: Whether a Chart.js plot is drawn: data points in its datasets, ink on its canvas.
DRAWN = """(id) => {
  const canvas = document.getElementById(id);
  const chart = canvas && window.Chart && window.Chart.getChart(canvas);
  if (!chart) return {points: 0, ink: 0};
  const points = chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v > 0).length, 0);
  const {width, height} = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let ink = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) ink++;
  return {points, ink};
}"""


def _sign_in(tab: Tab, link: str, name: str) -> None:
    tab.page.goto(link, wait_until="networkidle")
    assert f"Sign in as {name}" in tab.text()
    with tab.page.expect_navigation():
        tab.page.click("#use-link")
    assert f"Signed in as {name}" in tab.text()


def _counts(web: WebPool, who: str) -> dict[str, int]:
    jobs = web.api(who, "GET", "/api/v1/jobs")
    states = ("IDLE", "RUNNING", "HELD", "COMPLETED", "REMOVED")
    return {state: sum(j["state"] == state for j in jobs) for state in states}


def test_every_page_in_chromium(web_pool: WebPool, browser: Any, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context.new_page(), web_pool.url, artifacts)

    # A visitor sees the sign-in page and nothing else.
    tab.page.goto(web_pool.url + "/web/jobs", wait_until="networkidle")
    assert tab.page.url.startswith(web_pool.url + "/web/signin?next=")
    assert "alice" not in tab.text() and "With a token" in tab.text()
    tab.shot("signin")

    # The admin signs in with a link from 'pilotage web' run over the Unix socket (as root).
    made = web_pool.pool.cli("web")
    assert made.returncode == 0, made.stderr
    _sign_in(tab, made.stdout.strip(), "root")
    assert tab.page.url == web_pool.url + "/web/"

    # The overview's numbers are the API's; its plots are drawn.
    tab.open("/web/")
    want = _counts(web_pool, "admin")
    for state, count in want.items():
        assert tab.page.inner_text(f'[data-count="{state}"]') == str(count), state
    for entry in ("ce-alpha", "ce-beta"):
        assert tab.page.inner_text(f'#entries-table [data-joined="{entry}"]') == "1"
    for chart in ("chart-states", "chart-cores", "chart-pilots"):
        drawn = tab.page.evaluate(DRAWN, chart)
        assert drawn["points"] > 0 and drawn["ink"] > 1000, (chart, drawn)
    assert tab.page.evaluate(ACCESSIBLE) == []
    tab.shot("overview")

    # Keyboard: the first Tab reaches the skip link, which leads to the content.
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("document.activeElement.textContent") == "Skip to the content"

    # Live: hold a running job; the page shows it without a reload.
    tab.page.evaluate("window.notReloaded = true")
    victim = web_pool.jobs["bob"][1]
    web_pool.api("admin", "POST", "/api/v1/jobs/actions", json={"action": "hold", "ids": [victim]})
    tab.page.wait_for_function(
        "n => document.querySelector('[data-count=HELD]').textContent === String(n)",
        arg=want["HELD"] + 1,
        timeout=60_000,
    )
    assert tab.page.evaluate("window.notReloaded") is True

    # From the overview to a job: the newest jobs table links each job to its page.
    newest = web_pool.jobs["bob"][1]
    with tab.page.expect_navigation():
        tab.page.click(f'#recent-jobs a[href="/web/jobs/{newest}"]')
    assert tab.page.url == f"{web_pool.url}/web/jobs/{newest}"
    assert tab.page.inner_text("#job-state") == "HELD"
    assert "Why it is held, and what to do" in tab.text()
    tab.shot("job-held")
    tab.open(f"/web/jobs/{web_pool.jobs['bob'][0]}")
    assert tab.page.inner_text("#job-exit") == "exit code 3"
    tab.shot("job-completed")

    for name, path in PAGES.items():
        tab.open(path)
        assert tab.page.evaluate(ACCESSIBLE) == [], name
        for canvas in tab.page.query_selector_all("canvas[data-chart]"):
            drawn = tab.page.evaluate(DRAWN, canvas.get_attribute("id"))
            assert drawn["points"] > 0 and drawn["ink"] > 0, (name, drawn)
        tab.shot(name)
        if name == "sites":
            joined = tab.page.query_selector_all("table.entry-pilots td[data-joined]")
            assert [cell.inner_text() for cell in joined] == ["1", "1"]
            assert "switch_missing" in tab.text()
    tab.open("/web/history")
    history = web_pool.api("admin", "GET", "/api/v1/jobs", params={"finished": "true"})
    assert f"Rows 1\N{EN DASH}{len(history)} of {len(history)}." in tab.text()

    # A phone: the page fits its width (wide tables scroll inside their own region).
    tab.page.set_viewport_size({"width": 375, "height": 740})
    tab.open("/web/")
    assert tab.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    tab.shot("overview-phone")
    tab.page.set_viewport_size({"width": 1280, "height": 900})

    # Signed out, then in as alice (a link from 'pilotage web' with her token): only hers.
    with tab.page.expect_navigation():
        tab.page.click("form.who button")
    assert "/web/signin" in tab.page.url
    token = web_pool.pool.root / "alice.browser-token"
    token.write_text(web_pool.tokens["alice"] + "\n")
    made = web_pool.pool.cli("--server", web_pool.url, "--token", str(token), "web")
    assert made.returncode == 0, made.stderr
    _sign_in(tab, made.stdout.strip(), "alice")
    mine = _counts(web_pool, "alice")
    for state, count in mine.items():
        assert tab.page.inner_text(f'[data-count="{state}"]') == str(count), state
    for name, path in PAGES.items():
        tab.open(path)
        text = tab.text()
        assert "bob" not in text, name
        for job in web_pool.jobs["bob"]:
            assert tab.page.query_selector(f'a[href="/web/jobs/{job}"]') is None, (name, job)
    tab.shot("overview-alice")
    assert tab.errors == [], tab.errors

    # Another's job is not found (its 404 is the one console error Chromium reports).
    answer = tab.page.goto(f"{web_pool.url}/web/jobs/{web_pool.jobs['bob'][0]}")
    assert answer is not None and answer.status == 404
    assert "not yours" in tab.text() and "bob" not in tab.text()
    assert all("404" in error for error in tab.errors), tab.errors
    context.close()
