"""A listed job: its row, read with the driver's own cursor, and its line of JSON.

At a million jobs the listing's cost is per job, and most of it was not the database's:
SQLAlchemy's rows and result processing, the JSON parse of each job's spec (a kilobyte)
and ``json.dumps`` of its view. So the parts of the spec the view shows are cut out by
the database (``json_extract``, ``->>``), the rows are read by the driver's cursor inside
the transaction SQLAlchemy opened (its errors wrapped as SQLAlchemy's, so faults are
answered 503 as everywhere), and the line is written value by value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from functools import cache
from json.encoder import encode_basestring_ascii
from typing import Any

import sqlalchemy as sa

from pilotage.store.tables import jobs

#: Where the job's state is in a row of :func:`read_rows`.
STATE = 3

_SUBCODE = re.compile(r"\bHoldReasonSubCode = (\d+)")


def _columns(dialect: str) -> list[sa.ColumnElement[Any]]:
    """What a listed job's view needs: the row's columns, the parts of its spec the view
    shows (cut out by the database: a whole spec is a kilobyte of JSON to parse), and its
    ad for a held job only (the HoldReasonSubCode its policy set is there)."""
    if dialect == "sqlite":

        def part(key: str) -> sa.ColumnElement[Any]:
            return sa.func.json_extract(jobs.c.spec, f"$.{key}", type_=sa.Text)
    else:

        def part(key: str) -> sa.ColumnElement[Any]:
            return sa.literal_column(f"CAST(jobs.spec AS json) ->> '{key}'", sa.Text)

    c = jobs.c
    return [
        c.cluster_id, c.proc_id, c.owner, c.state, c.exit_code, c.exit_signal,
        c.hold_reason, c.hold_code, c.site, c.pilot_id, c.attempts, c.qdate,
        c.entered_state_at, c.completed_at, c.wall_s, c.cpu_s, c.max_rss_kb,
        c.request_cpus, c.request_memory_mb, c.request_disk_mb,
        part("executable"), part("iwd"), part("log"),
        c.output_sandbox.is_not(None),
        sa.case((c.hold_code.is_not(None), c.ad), else_=sa.null()),
        part("arguments"),  # JSON text
        part("transfer_output_remaps"),  # JSON text
    ]  # fmt: skip


def view_line(row: Sequence[Any]) -> str:
    """A listed job as one line of JSON: :func:`~pilotage.queue.jobs.job_view` of it,
    written value by value (three times as fast as ``json.dumps`` of the view, which
    counts at a million jobs) and with the spec's JSON parts as the database gave them;
    a test holds the two equal."""
    (
        cluster, proc, owner, state, exit_code, exit_signal, hold_reason, hold_code,
        site, pilot, attempts, qdate, entered, completed, wall_s, cpu_s, max_rss_kb,
        cpus, memory_mb, disk_mb, executable, iwd, log, has_output, ad, arguments, remaps,
    ) = row  # fmt: skip
    subcode = None
    if hold_code is not None:
        found = _SUBCODE.search(ad or "")
        subcode = int(found.group(1)) if found else 0
    return (
        f'{{"id": "{cluster}.{proc}", "cluster": {cluster}, "proc": {proc}, '
        f'"owner": {_s(owner)}, "state": {_s(state)}, "exit_code": {_n(exit_code)}, '
        f'"exit_signal": {_n(exit_signal)}, "hold_reason": {_s(hold_reason)}, '
        f'"hold_code": {_n(hold_code)}, "hold_subcode": {_n(subcode)}, "site": {_s(site)}, '
        f'"pilot": {_s(pilot)}, "attempts": {_n(attempts)}, "qdate": {_n(qdate)}, '
        f'"entered_state_at": {_n(entered)}, "completed_at": {_n(completed)}, '
        f'"wall_s": {_n(wall_s)}, "cpu_s": {_n(cpu_s)}, "max_rss_kb": {_n(max_rss_kb)}, '
        f'"request_cpus": {_n(cpus)}, "request_memory_mb": {_n(memory_mb)}, '
        f'"request_disk_mb": {_n(disk_mb)}, "executable": {_s(executable)}, '
        # The spec's JSON parts go in as the database gave them: the spec was JSON.
        f'"arguments": {arguments or "[]"}, "iwd": {_s(iwd)}, "log": {_s(log)}, '
        f'"has_output": {"true" if has_output else "false"}, '
        f'"transfer_output_remaps": {remaps or "{}"}}}'
    )


def _s(value: str | None) -> str:
    """A string in JSON, as ``json.dumps`` writes it."""
    return "null" if value is None else encode_basestring_ascii(value)


def _n(value: float | None) -> str:
    """A number in JSON, as ``json.dumps`` writes it."""
    if value is None:
        return "null"
    if type(value) is int or math.isfinite(value):
        return repr(value)
    return json.dumps(value)


@cache
def _select(dialect: sa.Dialect) -> str:
    """The statement reading the rows, up to its ``WHERE`` (compiled once per dialect)."""
    query = sa.select(*_columns(dialect.name)).select_from(jobs)
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def read_rows(conn: sa.Connection, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """The rows of the jobs ``ids`` (in no order): tuples as :func:`view_line` takes them."""
    if not ids:
        return []
    dialect = conn.dialect
    raw = conn.connection.driver_connection
    assert raw is not None
    if dialect.name == "sqlite":
        sql = f"{_select(dialect)} WHERE jobs.id IN ({','.join('?' * len(ids))})"
        params: Any = list(ids)
    else:
        sql, params = f"{_select(dialect)} WHERE jobs.id = ANY(%s)", (list(ids),)
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()
    except dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(
            sql, params, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc
