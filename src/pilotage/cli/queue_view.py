"""``pilotage q`` over a queue of any size: batches counted by the server, jobs paged.

By default ``q`` prints one row per batch from the server's per-batch counts
(``GET /api/v1/batches``), grouped in SQL: no job is fetched. ``-nobatch`` (or naming
jobs) pages through the jobs (``GET /api/v1/jobs`` with ``limit`` and the ``Link``
header's cursor) and prints each page as it comes, one fixed-width line per job.
``--json`` streams the jobs (NDJSON from the server) and writes them as one JSON
array, a job per line, without holding them: memory stays flat whatever the queue.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from pilotage.cli.client import Client

#: Jobs per page of ``q -nobatch``.
PAGE = 1000

_BATCH_COLUMNS = (
    "OWNER",
    "BATCH_NAME",
    "SUBMITTED",
    "DONE",
    "RUN",
    "IDLE",
    "HOLD",
    "TOTAL",
    "JOB_IDS",
)
_JOB_COLUMNS = (("ID", 10), ("OWNER", 12), ("SUBMITTED", 11), ("STATE", 9), ("EXIT", 6))
_MORE_COLUMNS = (("SITE", 14), ("WALL", 8))


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%m/%d %H:%M", time.localtime(ts))


def job_ids(batch: dict[str, Any]) -> str:
    """The JOB_IDS column: ``12.0``, ``12.0-99`` in one cluster, ``12.0 ... 15.3`` across
    several."""
    first, last = batch["first"], batch["last"]
    if first == last:
        return str(first)
    if batch["clusters"] == 1:
        return f"{first}-{last.split('.')[-1]}"
    return f"{first} ... {last}"


def batch_table(batches: Iterable[dict[str, Any]], title: str) -> Table:
    """One row per owner and batch, with counts per state, as ``condor_q`` shows by default."""
    from rich.table import Table

    # No borders (as 'pilotage status'): the columns fit 80 characters.
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in _BATCH_COLUMNS:
        table.add_column(column, no_wrap=True)
    for b in batches:
        table.add_row(
            b["owner"],
            b["name"] if b["name"] is not None else f"ID: {b['first'].split('.')[0]}",
            _when(b["submitted"]),
            str(b["done"]) if b["done"] else "_",
            str(b["running"]) if b["running"] else "_",
            str(b["idle"]) if b["idle"] else "_",
            str(b["held"]) if b["held"] else "_",
            str(b["total"]),
            job_ids(b),
        )
    return table


def summary_line(counts: dict[str, int]) -> str:
    """``N jobs: 3 idle, 1 running``: the states present, by name."""
    total = sum(counts.values())
    parts = [f"{n} {state.lower()}" for state, n in sorted(counts.items()) if n]
    return f"{total} jobs: " + (", ".join(parts) if parts else "none")


def print_batches(client: Client, owners: list[str]) -> None:
    """``q``: the server's per-batch counts as a table, and the queue's total by state."""
    from rich.console import Console

    batches: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for owner in _each(owners):
        answer = client.call("GET", "/api/v1/batches", params=_owner(owner))
        batches += answer["batches"]
        for state, n in answer["counts"].items():
            counts[state] = counts.get(state, 0) + n
    console = Console()
    console.print(batch_table(batches, "Queue"))
    console.print(summary_line(counts))


def job_line(job: dict[str, Any]) -> str:
    """One job of ``q -nobatch``: fixed-width columns, the command (or hold reason) last."""
    exit_text = "" if job["exit_code"] is None else str(job["exit_code"])
    if job.get("exit_signal"):
        exit_text = f"sig {job['exit_signal']}"
    wall = "" if job["wall_s"] is None else f"{job['wall_s']:.1f}s"
    command = " ".join([Path(job["executable"]).name, *job["arguments"]])
    what = job["hold_reason"] if job["state"] == "HELD" else command
    values = (job["id"], job["owner"], _when(job["qdate"]), job["state"], exit_text)
    cells = [v.ljust(w) for v, (_, w) in zip(values, _JOB_COLUMNS, strict=True)]
    more = (job["site"] or "", wall)
    cells += [v.rjust(w) for v, (_, w) in zip(more, _MORE_COLUMNS, strict=True)]
    return " ".join([*cells, what or ""]).rstrip()


def header_line() -> str:
    cells = [name.ljust(w) for name, w in _JOB_COLUMNS]
    cells += [name.rjust(w) for name, w in _MORE_COLUMNS]
    return " ".join([*cells, "COMMAND / REASON"])


def print_jobs(client: Client, ids: list[str], owners: list[str]) -> None:
    """``q -nobatch``: the queue's jobs, a page at a time, printed as each page comes."""
    out = sys.stdout
    out.write(header_line() + "\n")
    counts: dict[str, int] = {}
    for jobs in pages(client, ids, owners):
        out.write("".join(job_line(job) + "\n" for job in jobs))
        out.flush()
        for job in jobs:
            counts[job["state"]] = counts.get(job["state"], 0) + 1
    out.write(summary_line(counts) + "\n")


def pages(client: Client, ids: list[str], owners: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The queue's jobs (of ``owners``, or all visible), a page at a time."""
    for owner in _each(owners):
        params: dict[str, Any] | None = {"id": ids, "finished": False, "limit": PAGE}
        path: str | None = "/api/v1/jobs"
        while path is not None:
            jobs, path = client.page(path, params=params and {**params, **_owner(owner)})
            params = None  # the next page's address carries them
            yield jobs


def write_json(client: Client, ids: list[str], owners: list[str]) -> None:
    """``q --json``: the jobs as a JSON array, one job per line, written as they arrive."""
    out = sys.stdout
    separator = "[\n"
    for owner in _each(owners):
        params = {"id": ids, "finished": False, **_owner(owner)}
        for line in client.lines("/api/v1/jobs", params=params):
            out.write(separator)
            out.write(line)
            separator = ",\n"
    out.write("[]\n" if separator == "[\n" else "\n]\n")


def _each(owners: list[str]) -> list[str | None]:
    """The owners named, or ``None``: every job the caller may see."""
    return list(owners) if owners else [None]


def _owner(owner: str | None) -> dict[str, str]:
    return {} if owner is None else {"owner": owner}
