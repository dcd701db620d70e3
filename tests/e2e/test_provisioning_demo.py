"""End to end: server, factory and frontend as real processes; pilots only where the
queued jobs can run, gone once the queue drains (``pilotage demo --provisioning``)."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from pilotage.demo_provisioning import run_with_server
from pilotage.testing import Pool


def test_pilots_only_where_jobs_can_run(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(idle_timeout_s="4")
    root = pool.root / "provisioning"
    root.mkdir()
    console = Console(record=True, width=120)
    code = run_with_server(pool.state, root, console, jobs=4, timeout_s=50)
    text = console.export_text()
    assert code == 0, (
        text + (root / "factory.log").read_text() + (root / "frontend.log").read_text()
    )
    assert "FAILED" not in text
    assert "no pilot ever at alpha" in text
    factory_log = (root / "factory.log").read_text()
    assert "entry beta: submitted" in factory_log
    assert "entry alpha: submitted" not in factory_log
    assert "factory: stopped" in factory_log
    assert "entry beta: demand" in (root / "frontend.log").read_text()
