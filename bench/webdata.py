"""The pool a day of busy life leaves in its database, for bench/web.py: jobs of many
users in clusters of 100 (submitted over ``hours`` hours; about 15% idle, 15% running, 5%
held, 5% removed, the rest completed), active pilots at many sites and their entries, and
the claims and job events that such a history implies. Written straight into the tables,
in bulk.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import sqlalchemy as sa

from pilotage.queue.jobad import build_job_ad
from pilotage.queue.spec import JobSpec
from pilotage.store.engine import Store
from pilotage.store.tables import (
    claims,
    clusters,
    entry_ads,
    job_events,
    jobs,
    pilot_requests,
    pilots,
    validation_reports,
)

CLUSTER = 100
CHUNK = 5000


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        conn.execute(sa.insert(table), rows[start : start + CHUNK])


def _state(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return "IDLE"
    if roll < 0.30:
        return "RUNNING"
    if roll < 0.35:
        return "HELD"
    if roll < 0.40:
        return "REMOVED"
    return "COMPLETED"


def populate(store: Store, args: argparse.Namespace, now: float) -> dict[str, int]:
    """A day of a big pool's life, written straight into the tables."""
    rng = random.Random(args.seed)
    span = args.hours * 3600.0
    sites = [f"site-{i:02d}" for i in range(args.sites)]
    users = [f"user{i:03d}" for i in range(args.users)]
    pilot_rows, by_site = [], {s: [] for s in sites}
    for i in range(args.slots):
        site = sites[i % len(sites)]
        cpus = rng.choice((1, 2, 4, 8, 8, 16))
        pid = f"p-{i:08x}"
        started = now - rng.uniform(600, span)
        pilot_rows.append(
            {
                "id": pid,
                "subject": f"entry:ce-{site}/frontend",
                "name": f"pilot-{i}",
                "site": site,
                "host": f"wn{i:05d}.{site}.example.org",
                "cpus": cpus,
                "memory_mb": cpus * 2000,
                "disk_mb": cpus * 10000,
                "gpus": 0,
                "ad": json.dumps(
                    {"attrs": {"EntryName": json.dumps(f"ce-{site}")}, "start": "true"}
                ),
                "started_at": started,
                "last_seen_at": now,
                "expires_at": now + 86400,
                "state": "active",
                "retire": False,
            }
        )
        by_site[site].append([pid, cpus, started])
    free = {p["id"]: p["cpus"] for p in pilot_rows}
    job_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    claim_rows: list[dict[str, Any]] = []
    cluster_rows = []
    spec_cache: dict[tuple[str, int], tuple[str, JobSpec]] = {}
    job_id = 0
    for cluster_id in range(1, args.jobs // CLUSTER + 1):
        owner = rng.choice(users)
        qdate = now - rng.uniform(0, span)
        cpus = rng.choice((1, 1, 1, 2, 4, 8))
        cluster_rows.append(
            {
                "id": cluster_id,
                "owner": owner,
                "status": "committed",
                "created_at": qdate,
                "num_jobs": CLUSTER,
            }
        )
        key = (owner, cpus)
        if key not in spec_cache:
            spec = JobSpec(
                executable="/cvmfs/vo.example.org/sw/analysis/run.sh",
                transfer_executable=False,
                arguments=["--events", "10000", "--seed", "$(Process)"],
                iwd=f"/home/{owner}/runs",
                request_cpus=cpus,
                request_memory_mb=2000 * cpus,
                request_disk_mb=4000,
                batch_name=f"analysis-{owner}",
            )
            spec_cache[key] = (spec.model_dump_json(), spec)
        spec_json, spec = spec_cache[key]
        for proc in range(CLUSTER):
            job_id += 1
            ad = build_job_ad(spec, cluster_id=cluster_id, proc_id=proc, owner=owner, qdate=qdate)
            job, events, claim = _job(rng, job_id, cluster_id, proc, owner, qdate, now)
            job.update(spec=spec_json, ad=ad, request_cpus=cpus, request_memory_mb=2000 * cpus)
            if claim is not None:
                site = rng.choice(sites)
                pool_of = by_site[site]
                if job["state"] == "RUNNING":
                    pool_of = [p for p in pool_of if free[p[0]] >= cpus]
                if not pool_of:  # no room left at that site: it waits
                    job.update(state="IDLE", entered_state_at=qdate, claim_id=None, attempts=0)
                    events = events[:1]
                else:
                    pilot = rng.choice(pool_of)[0]
                    free[pilot] -= cpus if job["state"] == "RUNNING" else 0
                    job.update(site=site, pilot_id=pilot)
                    for event in events[1:]:
                        event["pilot_id"] = pilot
                    claim.update(pilot_id=pilot, request_cpus=cpus, request_memory_mb=2000 * cpus)
                    claim_rows.append(claim)
            job_rows.append(job)
            event_rows.extend(events)
    with store.write() as conn:
        _insert(conn, clusters, cluster_rows)
        _insert(conn, pilots, pilot_rows)
        _insert(conn, jobs, job_rows)
        _insert(conn, job_events, event_rows)
        _insert(conn, claims, claim_rows)
        _insert(
            conn,
            entry_ads,
            [
                {
                    "name": f"ce-{s}",
                    "factory": "factory",
                    "updated_at": now,
                    "ad": json.dumps(
                        {"Site": s, "Cpus": 16, "Memory": 32000, "EntryName": f"ce-{s}"}
                    ),
                    "pilots": json.dumps(
                        {
                            "total": {"idle": 3, "running": len(by_site[s]), "held": 1},
                            "by_frontend": {
                                "frontend": {"idle": 3, "running": len(by_site[s]), "held": 1}
                            },
                        }
                    ),
                }
                for s in sites
            ],
        )
        _insert(
            conn,
            pilot_requests,
            [
                {
                    "frontend": "frontend",
                    "entry": f"ce-{s}",
                    "idle_wanted": 5,
                    "max_running": 1000,
                    "removal": "none",
                    "remove_idle": 0,
                    "switch_mode": "required",
                    "pilot_token": None,
                    "updated_at": now,
                }
                for s in sites
            ],
        )
        _insert(
            conn,
            validation_reports,
            [
                {
                    "at": now - rng.uniform(0, 86400),
                    "reporter": "factory",
                    "entry": f"ce-{rng.choice(sites)}",
                    "pilot": f"v-{i}",
                    "ok": i % 5 != 0,
                    "reason": "ok" if i % 5 else "switch_missing",
                    "message": "",
                    "details": "{}",
                }
                for i in range(500)
            ],
        )
    counts: dict[str, int] = {}
    for row in job_rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {**counts, "events": len(event_rows), "claims": len(claim_rows)}


def _job(
    rng: random.Random,
    job_id: int,
    cluster_id: int,
    proc: int,
    owner: str,
    qdate: float,
    now: float,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """One job's row, its events, and its claim if it ran (site and pilot filled later)."""
    state = _state(rng)
    start = qdate + rng.uniform(5, 900)
    wall = rng.uniform(60, 7200)
    end = start + wall
    if state == "COMPLETED" and end >= now:
        state = "RUNNING"
    if state == "RUNNING" and start >= now:
        state = "IDLE"
    ran = state in ("RUNNING", "COMPLETED") or (
        state == "REMOVED" and end < now and rng.random() < 0.5
    )
    finished = state in ("COMPLETED", "REMOVED")
    completed_at = None
    if finished:
        completed_at = end if ran else min(now - 1, qdate + rng.uniform(10, 600))
    claim_id = f"c-{job_id:09x}" if ran else None
    entered = {"IDLE": qdate, "RUNNING": start, "HELD": qdate + 60}.get(state, completed_at)
    code = None
    if state == "COMPLETED":
        code = 0 if rng.random() < 0.9 else rng.choice((1, 2, 137))
    job = {
        "id": job_id,
        "cluster_id": cluster_id,
        "proc_id": proc,
        "owner": owner,
        "state": state,
        "request_disk_mb": 4000,
        "request_gpus": 0,
        "priority": 0,
        "qdate": qdate,
        "entered_state_at": entered,
        "claim_id": claim_id if state == "RUNNING" else None,
        "pilot_id": None,
        "site": None,
        "attempts": 1 if ran else 0,
        "exit_code": code,
        "exit_signal": None,
        "hold_reason": "input file missing: data.root" if state == "HELD" else None,
        "hold_code": 13 if state == "HELD" else None,
        "wall_s": (completed_at - start) if ran and completed_at else None,
        "cpu_s": wall * 0.9 if state == "COMPLETED" else None,
        "max_rss_kb": 1_500_000 if state == "COMPLETED" else None,
        "output_sandbox": None,
        "completed_at": completed_at,
    }
    events = [_event(job_id, qdate, None, "IDLE", "submit", owner)]
    if ran:
        events.append(_event(job_id, start, "IDLE", "RUNNING", "claim", "server", claim_id))
    if state == "COMPLETED":
        events.append(_event(job_id, end, "RUNNING", "COMPLETED", "exit", "pilot", claim_id))
    elif state == "REMOVED":
        events.append(
            _event(
                job_id,
                completed_at,
                "RUNNING" if ran else "IDLE",
                "REMOVED",
                "remove",
                owner,
                claim_id,
            )
        )
    elif state == "HELD":
        events.append(_event(job_id, qdate + 60, "IDLE", "HELD", "hold", owner))
    claim = None
    if ran:
        claim = {
            "id": claim_id,
            "job_id": job_id,
            "created_at": start,
            "lease_expires_at": now + 300,
            "state": "active" if state == "RUNNING" else "ended",
            "ended_at": None if state == "RUNNING" else completed_at,
            "end_reason": None
            if state == "RUNNING"
            else ("exit" if state == "COMPLETED" else "remove"),
            "request_disk_mb": 4000,
            "request_gpus": 0,
        }
    return job, events, claim


def _event(
    job_id: int,
    at: float | None,
    left: str | None,
    to: str,
    trigger: str,
    actor: str,
    claim: str | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "at": at,
        "from_state": left,
        "to_state": to,
        "trigger": trigger,
        "actor": actor,
        "reason": None,
        "claim_id": claim,
        "pilot_id": None,
    }
