"""Builders shared by the matchmaking tests: job and slot ads with sensible defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pilotage.matchmaking.ads import build_job_ad, build_slot_ad
from pilotage.matchmaking.partitionable import Resources


def job(
    owner: str = "alice",
    *,
    cluster_id: int = 1,
    proc_id: int = 0,
    qdate: int = 1000,
    cpus: int = 1,
    memory_mb: int = 1000,
    disk_mb: int = 100,
    gpus: int = 0,
    requirements: str | None = None,
    prio: int = 0,
    group: str | None = None,
    wall_s: float | None = None,
    attrs: dict[str, str] | None = None,
) -> Any:
    """A job ad as the server builds it."""
    return build_job_ad(
        cluster_id=cluster_id,
        proc_id=proc_id,
        owner=owner,
        qdate=qdate,
        request=Resources(cpus, memory_mb, disk_mb, gpus),
        requirements=requirements,
        job_prio=prio,
        acct_group=group,
        max_wall_time_s=wall_s,
        attrs=attrs,
    )


def slot(
    name: str = "slot1@pilot1",
    *,
    cpus: int = 8,
    memory_mb: int = 16000,
    disk_mb: int = 100_000,
    gpus: int = 0,
    total: Resources | None = None,
    ttl_s: float = 86_400,
    site: str = "SiteA",
    start: str | None = None,
    attrs: dict[str, object] | None = None,
) -> Any:
    """A slot ad as a pilot sends it (free resources; totals default to the free ones)."""
    free = Resources(cpus, memory_mb, disk_mb, gpus)
    return build_slot_ad(
        name=name,
        pilot_id=name.split("@")[-1],
        free=free,
        total=total or free,
        ttl_s=ttl_s,
        site=site,
        start=start,
        switch_mode="setuid",
        attrs=attrs,
    )


@pytest.fixture
def make_job() -> Callable[..., Any]:
    return job


@pytest.fixture
def make_slot() -> Callable[..., Any]:
    return slot
