"""The chaos suite, bounded: each scenario of ``bench/chaos.py`` at a small size.

Every scenario (two servers on one PostgreSQL, one killed, included) must end with no
job lost, none completed twice, none held, no pilot lost for good and no 5xx answer
other than 503. The scenarios' own figures (and the
full sizes) are in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    """``bench/chaos.py``, loaded as a module (bench scripts are not a package)."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("pilotage_bench_chaos", BENCH / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pg(require_service: Callable[[str, str], NoReturn]) -> Iterator[str]:
    from pilotage.testing import ServiceUnavailable, postgres_cluster

    try:
        with postgres_cluster() as url:
            yield url
    except ServiceUnavailable as exc:
        require_service("PostgreSQL", str(exc))


def small(chaos: ModuleType) -> object:
    # A fault outlasts a lease (10 s) and three heartbeats (2 s) where that matters.
    return chaos.Size(jobs=24, pilots=2, slots=3, job_s=1.0, faults=2, outage_s=15, pg_stop_s=8)


def check(figures: object) -> None:
    seen = vars(figures)
    bad = {k: seen[k] for k in ("lost", "completed_twice", "held", "pilots_lost", "http_5xx")}
    assert bad == dict.fromkeys(bad, 0), seen


@pytest.mark.parametrize("scenario", ["server_kill", "server_outage", "pilot_kill"])
def test_sqlite_scenarios_lose_nothing(chaos: ModuleType, scenario: str) -> None:
    check(chaos.run_scenario(scenario, "sqlite", None, small(chaos), 1))


def test_a_full_state_disk_loses_nothing(
    chaos: ModuleType, require_service: Callable[[str, str], NoReturn]
) -> None:
    if os.geteuid() != 0:
        require_service("root", "mounting a small tmpfs for the state directory needs root")
    check(chaos.run_scenario("disk_full", "sqlite", None, small(chaos), 1))


@pytest.mark.parametrize("scenario", ["server_kill", "postgres_restart", "replica_kill"])
def test_postgres_scenarios_lose_nothing(chaos: ModuleType, pg: str, scenario: str) -> None:
    check(chaos.run_scenario(scenario, "postgres", pg, small(chaos), 1))
