"""Sites and entries, the factory's view: per entry, its pilots (submitted, idle, running,
held; joined and busy), its validation failures by reason, its switch mode and site
policy, and what each frontend asks for against what there is.

The entries, requests and validation reports are the provisioning API's, which only
frontends, factories and admins may read: a user sees the slots of each site instead.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from pilotage.factory.sitepolicy import AD_NAMES
from pilotage.store.tables import entry_ads, pilot_requests, validation_reports
from pilotage.web.overview import PilotGroups, pilots_by_entry

#: How far back the validation failures are counted.
FAILURES_WINDOW_S = 24 * 3600
#: Entry ad attributes shown as the entry's site policy, with their labels.
POLICY = tuple((name, question.replace("_", " ")) for question, name in AD_NAMES.items())


def failures(conn: sa.Connection, now: float) -> dict[str, list[tuple[str, int]]]:
    """Failed validations of the last day, per entry and reason, most frequent first."""
    rows = conn.execute(
        sa.select(validation_reports.c.entry, validation_reports.c.reason, sa.func.count())
        .where(
            validation_reports.c.at >= now - FAILURES_WINDOW_S,
            validation_reports.c.ok.is_(False),
        )
        .group_by(validation_reports.c.entry, validation_reports.c.reason)
        .order_by(sa.func.count().desc())
    ).all()
    out: dict[str, list[tuple[str, int]]] = {}
    for entry, reason, count in rows:
        out.setdefault(entry, []).append((reason, int(count)))
    return out


def requests(conn: sa.Connection) -> dict[str, list[dict[str, Any]]]:
    """Each entry's requests, one per frontend (without their pilot tokens)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(
        sa.select(
            pilot_requests.c.entry,
            pilot_requests.c.frontend,
            pilot_requests.c.idle_wanted,
            pilot_requests.c.max_running,
            pilot_requests.c.switch_mode,
            pilot_requests.c.removal,
            pilot_requests.c.updated_at,
        ).order_by(pilot_requests.c.entry, pilot_requests.c.frontend)
    ).all():
        out.setdefault(r.entry, []).append(r._asdict())
    return out


def entries(conn: sa.Connection, groups: PilotGroups, now: float) -> list[dict[str, Any]]:
    """Every advertised entry with its counts, policy, requests and failures."""
    counts = {e["entry"]: e for e in pilots_by_entry(conn, groups)}
    failed = failures(conn, now)
    wanted = requests(conn)
    out = []
    for row in conn.execute(sa.select(entry_ads).order_by(entry_ads.c.name)).all():
        ad = json.loads(row.ad)
        pilots = json.loads(row.pilots)
        total = pilots.get("total", {})
        by_frontend = pilots.get("by_frontend", {})
        asked = wanted.get(row.name, [])
        for request in asked:
            mine = by_frontend.get(request["frontend"], {})
            request["idle"] = int(mine.get("idle", 0))
            request["running"] = int(mine.get("running", 0))
        here = counts.get(row.name, {})
        out.append(
            {
                "name": row.name,
                "factory": row.factory,
                "site": ad.get("Site", ""),
                "gatekeeper": ad.get("Gatekeeper") or ad.get("GridType") or "",
                "switch": ad.get("SwitchMode") or "none",
                "policy": [(label, ad.get(name, "")) for name, label in POLICY],
                "submitted": sum(int(total.get(k, 0)) for k in ("idle", "running", "held")),
                "idle": int(total.get("idle", 0)),
                "running": int(total.get("running", 0)),
                "held": int(total.get("held", 0)),
                "joined": int(here.get("joined", 0)),
                "busy": int(here.get("busy", 0)),
                "requests": asked,
                "failures": failed.get(row.name, []),
                "updated_at": row.updated_at,
            }
        )
    return out


def pressure_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per entry: idle pilots the frontends want against the idle pilots there are."""
    return {
        "kind": "bar",
        "labels": [e["name"] for e in rows],
        "y": "pilots",
        "series": [
            {
                "label": "idle wanted",
                "data": [sum(r["idle_wanted"] for r in e["requests"]) for e in rows],
            },
            {"label": "idle", "data": [e["idle"] for e in rows]},
            {"label": "running", "data": [e["running"] for e in rows]},
        ],
    }
