"""The page routes: overview, jobs, one job, history, sites, users, accounting, and the
downloads. Each reads its filters from the query string (:mod:`pilotage.web.filters`),
its data in one read transaction, and renders a template; the page's script refetches
the same URL to update it live."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from pilotage.api.auth import Principal
from pilotage.api.matchmaking import job_analysis
from pilotage.cli.condor_style import held_explanation
from pilotage.web import accounting, filters, history, jobs_view, sites, users
from pilotage.web.identity import context
from pilotage.web.overview import PilotGroups, overview, sites_now
from pilotage.web.render import SECURITY_HEADERS, page, private_headers
from pilotage.web.respond import show

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> Response:
    return RedirectResponse("/web/", status_code=303, headers=SECURITY_HEADERS)


@router.get("/web")
def web_root() -> Response:
    return RedirectResponse("/web/", status_code=303, headers=SECURITY_HEADERS)


@router.get("/web/")
def overview_page(request: Request) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        window = filters.window(request.query_params)
        with ctx.store.read() as conn:
            data = overview(conn, who, window, ctx.clock(), sqlite=ctx.store.is_sqlite)
        return page(request, "overview.html", who, data, title="Pool overview")

    return show(request, build)


@router.get("/web/jobs")
def jobs_page(request: Request) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        query = request.query_params
        cluster = filters.whole(query, "cluster", 1, 10**18)
        wanted = jobs_view.JobFilter(
            owner=filters.name(query, "owner"),
            states=filters.states(query, jobs_view.ALL if cluster else jobs_view.ACTIVE),
            cluster=cluster,
        )
        number = filters.page_number(query)
        per_job = query.get("view") == "jobs" or cluster is not None
        rows: list[dict[str, Any]] = []
        batches: list[dict[str, Any]] = []
        with ctx.store.read() as conn:
            counts = jobs_view.counts(conn, who, wanted)
            if per_job:
                rows = jobs_view.job_rows(conn, who, wanted, number)
                total = sum(counts.values())
            else:
                batches, total = jobs_view.batches(conn, who, wanted, number)
        data = {
            "rows": rows,
            "batches": batches,
            "total": total,
            "counts": counts,
            "per_job": per_job,
            "cluster": cluster,
            "owner": wanted.owner,
            "state": query.get("state", ""),
            "page_number": number,
            "page_size": filters.PAGE_SIZE,
        }
        title = f"Cluster {cluster}" if cluster else "Jobs"
        return page(request, "jobs.html", who, data, title=title)

    return show(request, build)


@router.get("/web/jobs/{job_id}")
def job_page(request: Request, job_id: str) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        with ctx.store.read() as conn:
            row = jobs_view.visible_job(conn, who, job_id)
            data = jobs_view.job_detail(conn, row, ctx.clock())
        job = data["job"]
        if job["state"] == "HELD":
            data["held"] = held_explanation(job)
        elif job["state"] == "IDLE" and request.query_params.get("analyze") == "1":
            # Matched against every slot of the pool: on request only, and not again
            # every few seconds (the page stays still).
            data["analysis"] = job_analysis(job["id"], ctx, who)["text"]
            data["live"] = False
        return page(request, "job.html", who, data, title=f"Job {job['id']}")

    return show(request, build)


@router.get("/web/history")
def history_page(request: Request) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        wanted = filters.HistoryFilter.read(request.query_params)
        number = filters.page_number(request.query_params)
        with ctx.store.read() as conn:
            rows, total = history.search(conn, who, wanted, number)
        data = {
            "rows": rows,
            "total": total,
            "cap": history.COUNT_CAP,
            "filter": wanted,
            "query": request.url.query,
            "page_number": number,
            "page_size": filters.PAGE_SIZE,
            "form": {
                k: request.query_params.get(k, "")
                for k in ("user", "site", "exit", "since", "until")
            },
        }
        return page(request, "history.html", who, data, title="History")

    return show(request, build)


def _download(request: Request, kind: str) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        wanted = filters.HistoryFilter.read(request.query_params)
        history.conditions(who, wanted)  # a refusal now, not in the middle of the stream
        records = history.matches(ctx.store, who, wanted)
        body: Iterator[str] = history.as_csv(records) if kind == "csv" else history.as_json(records)
        media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
        headers = private_headers(
            {"Content-Disposition": f'attachment; filename="pilotage-history.{kind}"'}
        )
        return StreamingResponse(body, media_type=media, headers=headers)

    return show(request, build)


@router.get("/web/history.csv")
def history_csv(request: Request) -> Response:
    return _download(request, "csv")


@router.get("/web/history.json")
def history_json(request: Request) -> Response:
    return _download(request, "json")


@router.get("/web/sites")
def sites_page(request: Request) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        with ctx.store.read() as conn:
            groups = PilotGroups.read(conn)
            slots = sites_now(groups)
            rows = sites.entries(conn, groups, ctx.clock()) if who.admin else []
        data: dict[str, Any] = {"slots": slots, "entries": rows, "charts": {}}
        if rows:
            data["charts"]["pressure"] = sites.pressure_chart(rows)
        if slots:
            data["charts"]["slots"] = {
                "kind": "bar",
                "labels": [s["site"] for s in slots],
                "y": "cores",
                "series": [
                    {"label": "claimed cores", "data": [s["claimed_cpus"] for s in slots]},
                    {"label": "free cores", "data": [s["cpus"] - s["claimed_cpus"] for s in slots]},
                ],
                "stacked": True,
            }
        return page(request, "sites.html", who, data, title="Sites and entries")

    return show(request, build)


@router.get("/web/users")
def users_page(request: Request) -> Response:
    def build(who: Principal) -> Response:
        ctx = context(request)
        now = ctx.clock()
        prio = users.priorities(ctx.matcher, who, now)
        with ctx.store.read() as conn:
            waiting = users.waiting(conn, who, now)
        data = {
            "prio": prio,
            "waiting": waiting,
            "charts": {"usage": users.usage_chart(prio["rows"])} if prio["rows"] else {},
        }
        return page(request, "users.html", who, data, title="Users and fair share")

    return show(request, build)


def _accounting(request: Request, who: Principal) -> dict[str, Any]:
    ctx = context(request)
    query = request.query_params
    by = filters.grouping(query)
    since, until = filters.time_range(query)
    now = ctx.clock()
    until = now if until is None else until
    since = until - accounting.DEFAULT_SPAN_S if since is None else since
    site = filters.site(query)
    with ctx.store.read() as conn:
        rows = accounting.usage(conn, who, by, since, until, site=site, sqlite=ctx.store.is_sqlite)
    return {"by": by, "rows": rows, "since": since, "until": until, "site": site}


@router.get("/web/accounting")
def accounting_page(request: Request) -> Response:
    def build(who: Principal) -> Response:
        data = _accounting(request, who)
        data.update(
            groupings=filters.GROUPINGS,
            headers=accounting.HEADERS[data["by"]],
            query=request.url.query,
            form={k: request.query_params.get(k, "") for k in ("since", "until", "site")},
            charts={"usage": accounting.chart(data["by"], data["rows"])} if data["rows"] else {},
            totals={
                "jobs": sum(u.jobs for u in data["rows"]),
                "cpu_h": sum(u.cpu_h for u in data["rows"]),
                "wall_h": sum(u.wall_h for u in data["rows"]),
            },
        )
        return page(request, "accounting.html", who, data, title="Accounting")

    return show(request, build)


@router.get("/web/accounting.csv")
def accounting_csv(request: Request) -> Response:
    def build(who: Principal) -> Response:
        data = _accounting(request, who)
        headers = private_headers(
            {"Content-Disposition": f'attachment; filename="pilotage-accounting-{data["by"]}.csv"'}
        )
        return StreamingResponse(
            accounting.as_csv(data["by"], data["rows"]),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )

    return show(request, build)
